//! A TCP proxy between a daemon and the Worker, to break the network on purpose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy that can stop forwarding without closing anything: [`StallProxy::stall`] freezes
/// every connection it carries (bytes, FINs and all, in both directions; the sockets stay open,
/// like a NAT that forgot the flow) and stops listening, so new connections are refused, until
/// [`StallProxy::resume`] listens again on the same address. Frozen connections stay frozen.
/// [`StallProxy::cut`] instead drops every connection at once.
pub struct StallProxy {
    pub url: String,
    addr: std::net::SocketAddr,
    upstream: String,
    state: Arc<ProxyState>,
    listening: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyState {
    next: AtomicU64,
    /// Connections numbered below this are frozen.
    frozen_below: AtomicU64,
    /// Every forwarding task, for [`StallProxy::cut`].
    pumps: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl StallProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut proxy = Self {
            url: format!("http://{addr}"),
            addr,
            upstream: upstream.strip_prefix("http://").unwrap().to_owned(),
            state: Arc::new(ProxyState::default()),
            listening: None,
        };
        proxy.listen(listener);
        proxy
    }

    fn listen(&mut self, listener: TcpListener) {
        let (upstream, state) = (self.upstream.clone(), self.state.clone());
        self.listening = Some(tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let conn = state.next.fetch_add(1, Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let a = tokio::spawn(pump(cr, sw, conn, state.clone()));
                let b = tokio::spawn(pump(sr, cw, conn, state.clone()));
                if let Ok(mut pumps) = state.pumps.lock() {
                    pumps.retain(|p| !p.is_finished());
                    pumps.extend([a.abort_handle(), b.abort_handle()]);
                }
            }
        }));
    }

    pub async fn stall(&mut self) {
        if let Some(task) = self.listening.take() {
            task.abort();
            let _ = task.await;
        }
        let next = self.state.next.load(Ordering::SeqCst);
        self.state.frozen_below.store(next, Ordering::SeqCst);
    }

    /// Drops every connection it carries at once (both sides see a reset or EOF), like a
    /// network that went away and came back; new connections are forwarded as before.
    pub fn cut(&self) {
        if let Ok(mut pumps) = self.state.pumps.lock() {
            for p in pumps.drain(..) {
                p.abort();
            }
        }
    }

    pub async fn resume(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.listen(listener);
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, conn: u64, state: Arc<ProxyState>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if conn < state.frozen_below.load(Ordering::SeqCst) {
            // Hold both ends open and forward nothing, ever (until the test ends).
            std::future::pending::<()>().await;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
    }
}
