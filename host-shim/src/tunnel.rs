//! The daemon's side of the host tunnel: get a host token by signing a server nonce, open the
//! WebSocket to the host's object, serve it (heartbeats, RPCs such as `host.info`, queued
//! commands handled once and acked), and reconnect after failures. The wire protocol is
//! `tether_durable::tunnel`, the very code the edge runs.
//!
//! What ends a connection decides what happens next ([`CloseCode::recovery`]): transient
//! failures reconnect with exponential backoff and jitter (reset once a connection has held);
//! an expired token is refreshed first; revoked, replaced or deleted hosts stop the daemon.

use crate::host_auth::{HostAuth, TokenError};
use crate::sessions::Sessions;
use crate::state::{Received, State};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tether_durable::session;
use tether_durable::tunnel::flow::SendWindow;
use tether_durable::tunnel::liveness::Liveness;
use tether_durable::tunnel::{
    self, CloseCode, Frame, Recovery, RpcError, RpcErrorCode, RpcResult, SUBPROTOCOL,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{self as ws, Message};
use tracing::{debug, info, warn};

/// Backoff between reconnects: from 250 ms doubling, with up to half jittered away, to at most
/// [`BACKOFF_UNREACHABLE`] while the edge does not answer at all (trying costs nothing, and the
/// host is back within about 2 s of the edge returning) or [`BACKOFF_MAX`] while it answers
/// with errors (so a struggling edge is not hammered).
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_UNREACHABLE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that held this long resets the backoff.
const HELD: Duration = Duration::from_secs(10);
/// Time allowed to get a token and open the socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the tunnel stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("the host was revoked or is unknown to the server: pair this machine again")]
    Revoked,
    #[error("another connection of this host replaced this one (is a second daemon running?)")]
    Replaced,
    #[error("the server refused this host: {0}")]
    Refused(String),
}

/// What ended one connection.
enum Ended {
    Shutdown,
    Closed(Recovery, String),
}

/// Where the tunnel goes, who this host is, and what it serves.
pub struct Tunnel<'a> {
    pub auth: &'a HostAuth,
    pub state: &'a State,
    pub sessions: &'a Arc<Sessions>,
}

/// A failure to connect: transient (retry) or final.
enum ConnectError {
    /// No answer at all (refused, reset, timed out).
    Unreachable(String),
    /// The edge answered with an error worth retrying later.
    Transient(String),
    Refresh(String),
    Final(Stopped),
}

impl Tunnel<'_> {
    /// Runs until `shutdown` completes (Ok) or the server says to stop (Err).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Stopped> {
        tokio::pin!(shutdown);
        let mut token: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let started = tokio::time::Instant::now();
            let attempt = async {
                let t = match token.take() {
                    Some(t) => t,
                    None => self.token().await?,
                };
                let socket = self.open(&t).await?;
                Ok::<_, ConnectError>((t, socket))
            };
            let outcome = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                r = tokio::time::timeout(CONNECT_TIMEOUT, attempt) => r.unwrap_or_else(|_| Err(ConnectError::Unreachable("connecting timed out".into()))),
            };
            let mut cap = BACKOFF_MAX;
            let why = match outcome {
                Ok((t, socket)) => {
                    info!(host_id = %self.auth.host_id, "tunnel connected");
                    match self.serve(socket, &mut shutdown).await {
                        Ended::Shutdown => return Ok(()),
                        Ended::Closed(Recovery::Stop, reason) => {
                            return Err(if reason.contains("replaced") {
                                Stopped::Replaced
                            } else {
                                Stopped::Refused(reason)
                            });
                        }
                        Ended::Closed(Recovery::RefreshAndReconnect, reason) => reason,
                        Ended::Closed(Recovery::Reconnect, reason) => {
                            token = Some(t);
                            reason
                        }
                    }
                }
                Err(ConnectError::Final(stop)) => return Err(stop),
                Err(ConnectError::Unreachable(reason)) => {
                    cap = BACKOFF_UNREACHABLE;
                    reason
                }
                Err(ConnectError::Refresh(reason)) | Err(ConnectError::Transient(reason)) => reason,
            };
            failures = if started.elapsed() >= HELD {
                0
            } else {
                failures + 1
            };
            let wait = backoff(failures, cap, random());
            warn!(%why, retry_in_ms = wait.as_millis() as u64, "tunnel down");
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Signs a fresh server nonce and trades it for a host token.
    async fn token(&self) -> Result<String, ConnectError> {
        match self.auth.fetch().await {
            Ok((token, _)) => Ok(token),
            Err(TokenError::Unreachable(e)) => Err(ConnectError::Unreachable(e)),
            Err(TokenError::Transient(e)) => Err(ConnectError::Transient(e)),
            Err(TokenError::Revoked) => Err(ConnectError::Final(Stopped::Revoked)),
            Err(TokenError::Refused(e)) => Err(ConnectError::Final(Stopped::Refused(e))),
        }
    }

    async fn open(&self, token: &str) -> Result<Socket, ConnectError> {
        let url = format!(
            "{}/v1/hosts/{}/tunnel",
            self.auth.server.replacen("http", "ws", 1),
            self.auth.host_id
        );
        let mut req = url
            .into_client_request()
            .map_err(|e| ConnectError::Final(Stopped::Refused(e.to_string())))?;
        let headers = req.headers_mut();
        let header = |v: &str| {
            v.parse()
                .map_err(|_| ConnectError::Transient("bad header value".into()))
        };
        headers.insert("authorization", header(&format!("Bearer {token}"))?);
        headers.insert("sec-websocket-protocol", header(SUBPROTOCOL)?);
        match tokio_tungstenite::connect_async(req).await {
            Ok((socket, _)) => Ok(socket),
            Err(ws::Error::Http(res)) => {
                let body = res
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                match res.status().as_u16() {
                    401 if body.contains("host_revoked") => {
                        Err(ConnectError::Final(Stopped::Revoked))
                    }
                    401 => Err(ConnectError::Refresh(format!("tunnel: 401 {body}"))),
                    403 | 404 | 410 => Err(ConnectError::Final(Stopped::Refused(body))),
                    s => Err(ConnectError::Transient(format!("tunnel: HTTP {s} {body}"))),
                }
            }
            Err(e) => Err(ConnectError::Unreachable(e.to_string())),
        }
    }

    /// Serves one connection until it ends.
    async fn serve(
        &self,
        mut socket: Socket,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        let mut liveness = Liveness::new(now_ms());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut sources = Sources::default();
        loop {
            tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    let drain = Frame::Drain { reason: "daemon shutting down".into(), retry_after_ms: 0 };
                    if let Ok(bytes) = tunnel::encode(&drain) {
                        let _ = socket.send(Message::Binary(bytes.into())).await;
                    }
                    let _ = socket.close(Some(CloseFrame {
                        code: WsCloseCode::Normal,
                        reason: "daemon shutting down".into(),
                    })).await;
                    return Ended::Shutdown;
                }
                _ = tick.tick() => {
                    let now = now_ms();
                    if liveness.dead(now) {
                        let _ = socket.close(Some(CloseFrame {
                            code: WsCloseCode::from(CloseCode::Stale.code()),
                            reason: "no heartbeat".into(),
                        })).await;
                        return Ended::Closed(Recovery::Reconnect, "no heartbeat from the edge".into());
                    }
                    if liveness.ping_due(now)
                        && send(&mut socket, &Frame::Ping { nonce: now as u64 }).await.is_err()
                    {
                        return Ended::Closed(Recovery::Reconnect, "the socket failed".into());
                    }
                }
                msg = socket.next() => {
                    liveness.heard(now_ms());
                    let frame = match msg {
                        Some(Ok(Message::Binary(bytes))) => tunnel::decode(&bytes),
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                                .unwrap_or((None, String::new()));
                            let recovery = CloseCode::recovery(code);
                            return Ended::Closed(recovery, format!("closed by the edge ({}): {reason}", code.unwrap_or(1005)));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Ended::Closed(Recovery::Reconnect, e.to_string()),
                        None => return Ended::Closed(Recovery::Reconnect, "the socket ended".into()),
                    };
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) => {
                            warn!(error = %e, "bad frame from the edge");
                            continue;
                        }
                    };
                    if let Frame::Drain { reason, .. } = &frame {
                        // The edge is going away: close cleanly and come back.
                        let reason = format!("drained by the edge: {reason}");
                        let _ = socket.close(Some(CloseFrame {
                            code: WsCloseCode::from(CloseCode::Drained.code()),
                            reason: reason.clone().into(),
                        })).await;
                        return Ended::Closed(Recovery::Reconnect, reason);
                    }
                    let reply = match sources.accept(frame) {
                        Ok(reply) => reply,
                        Err(frame) => self.handle(frame).await,
                    };
                    if let Some(reply) = reply
                        && send(&mut socket, &reply).await.is_err()
                    {
                        return Ended::Closed(Recovery::Reconnect, "the socket failed".into());
                    }
                    for frame in sources.pump() {
                        if send(&mut socket, &frame).await.is_err() {
                            return Ended::Closed(Recovery::Reconnect, "the socket failed".into());
                        }
                    }
                }
            }
        }
    }

    /// One frame from the edge; answers the frame to send back, if any.
    async fn handle(&self, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::Ping { nonce } => Some(Frame::Pong { nonce }),
            Frame::Request {
                id, method, body, ..
            } => {
                let result = match self.request(&method, &body).await {
                    Ok(body) => RpcResult::Ok(body),
                    Err(e) => RpcResult::Err(e),
                };
                Some(Frame::Response { id, result })
            }
            Frame::Command {
                id,
                seq,
                kind,
                body,
                ..
            } => {
                match self.state.receive_command(&id, seq as i64).await {
                    Ok(Received::Done) => debug!(%id, "command already handled"),
                    Ok(Received::New | Received::Unfinished) => {
                        // Handlers are idempotent (a redelivered start is recognised by its
                        // session id), so an unfinished command simply runs again.
                        info!(%id, seq, %kind, "command");
                        if let Err(e) = self.command(&kind, &body).await {
                            warn!(%id, error = %e, "handling a command failed; not acking");
                            return None;
                        }
                        if let Err(e) = self.state.finish_command(&id).await {
                            warn!(%id, error = %e, "recording a command failed; not acking");
                            return None;
                        }
                    }
                    Err(e) => {
                        warn!(%id, error = %e, "recording a command failed; not acking");
                        return None;
                    }
                }
                Some(Frame::Ack { id })
            }
            Frame::Pong { .. }
            | Frame::Response { .. }
            | Frame::Cancel { .. }
            | Frame::Ack { .. }
            | Frame::Drain { .. }
            | Frame::Data { .. }
            | Frame::Credit { .. }
            | Frame::Close { .. } => None,
            Frame::Open { channel, kind, .. } => Some(Frame::Close {
                channel,
                error: Some(format!("this daemon serves no {kind} channels")),
            }),
        }
    }

    /// A request from the edge: its JSON answer, or why not.
    async fn request(&self, method: &str, body: &[u8]) -> Result<Vec<u8>, RpcError> {
        let bad = |e: serde_json::Error| RpcError {
            code: RpcErrorCode::BadRequest,
            message: e.to_string(),
        };
        let refused = |message: String| RpcError {
            code: RpcErrorCode::BadRequest,
            message,
        };
        let internal = |message: String| RpcError {
            code: RpcErrorCode::Internal,
            message,
        };
        let json =
            |v: serde_json::Value| serde_json::to_vec(&v).map_err(|e| internal(e.to_string()));
        match method {
            "host.info" => self.info().await.map_err(internal),
            session::INPUT => {
                let input: session::Input = serde_json::from_slice(body).map_err(bad)?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(input.data_base64.as_bytes())
                    .map_err(|e| refused(e.to_string()))?;
                let n = self
                    .sessions
                    .input(&input.session_id, bytes)
                    .map_err(refused)?;
                json(serde_json::json!({ "written": n }))
            }
            session::RESIZE => {
                let r: session::Resize = serde_json::from_slice(body).map_err(bad)?;
                if !r.size.valid() {
                    return Err(refused("cols and rows: 1 to 1000".into()));
                }
                self.sessions
                    .resize(&r.session_id, r.size.cols, r.size.rows)
                    .map_err(refused)?;
                json(serde_json::json!({ "cols": r.size.cols, "rows": r.size.rows }))
            }
            tether_durable::chat::MESSAGE => {
                let msg: tether_durable::chat::ChatMessage =
                    serde_json::from_slice(body).map_err(bad)?;
                let delivered = self.sessions.deliver(msg).map_err(|e| {
                    use crate::sessions::chat::DeliverError;
                    let code = match &e {
                        DeliverError::Invalid(_) => RpcErrorCode::BadRequest,
                        DeliverError::NotRunning(_) => RpcErrorCode::Conflict,
                        DeliverError::Busy => RpcErrorCode::Overloaded,
                        DeliverError::Io(_) => RpcErrorCode::Internal,
                    };
                    RpcError {
                        code,
                        message: e.to_string(),
                    }
                })?;
                serde_json::to_vec(&delivered).map_err(|e| internal(e.to_string()))
            }
            tether_durable::chat::APPROVE => {
                let answer: tether_durable::chat::ApprovalAnswer =
                    serde_json::from_slice(body).map_err(bad)?;
                serde_json::to_vec(&self.sessions.approve(answer))
                    .map_err(|e| internal(e.to_string()))
            }
            session::WORKTREES => {
                let list = crate::worktree::list_all(self.state)
                    .await
                    .map_err(|e| internal(e.to_string()))?;
                serde_json::to_vec(&list).map_err(|e| internal(e.to_string()))
            }
            _ => Err(RpcError {
                code: RpcErrorCode::NotFound,
                message: format!("this daemon has no method {method}"),
            }),
        }
    }

    /// A command from the edge. Err when it could not be taken (it is then not acked, and
    /// comes again); a command that is taken but fails (a session that cannot start) is Ok:
    /// the failure is the session's to report.
    async fn command(&self, kind: &str, body: &[u8]) -> Result<(), String> {
        match kind {
            session::START => match serde_json::from_slice::<session::StartSession>(body) {
                Ok(start) => self
                    .sessions
                    .start(start)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => {
                    warn!(error = %e, "a malformed session start; dropped");
                    Ok(())
                }
            },
            session::STOP => {
                if let Ok(stop) = serde_json::from_slice::<session::Stop>(body) {
                    self.sessions.stop(&stop.session_id, &stop.reason);
                }
                Ok(())
            }
            // Other kinds (host.ping and the like) are only recorded.
            _ => Ok(()),
        }
    }

    /// `host.info`: who this machine is and how it is doing.
    async fn info(&self) -> Result<Vec<u8>, String> {
        let agents = crate::doctor::detect_agents(Duration::from_secs(5)).await;
        let commands = self
            .state
            .recent_commands(50)
            .await
            .map_err(|e| e.to_string())?;
        let info = serde_json::json!({
            "host_id": self.auth.host_id,
            "hostname": gethostname::gethostname().to_string_lossy(),
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "uptime_secs": read_uptime(),
            "load": read_load(),
            "daemon_version": env!("CARGO_PKG_VERSION"),
            "agents": agents,
            "recent_commands": commands.iter().map(|c| serde_json::json!({"id": c.id, "seq": c.seq, "done": c.done_at.is_some()})).collect::<Vec<_>>(),
        });
        serde_json::to_vec(&info).map_err(|e| e.to_string())
    }
}

/// Byte channels of kind `source` the edge opened (its speed test): each sends the number of
/// bytes asked for, never more than the edge's credit allows, then closes.
#[derive(Default)]
struct Sources(std::collections::BTreeMap<u32, Source>);

struct Source {
    remaining: u64,
    window: SendWindow,
}

/// The most a `source` channel sends.
const MAX_SOURCE_BYTES: u64 = 1 << 30;

#[derive(Deserialize)]
struct SourceMeta {
    bytes: u64,
}

impl Sources {
    /// Takes the frames that concern source channels (answering any reply); hands back the
    /// others.
    fn accept(&mut self, frame: Frame) -> Result<Option<Frame>, Frame> {
        match frame {
            Frame::Open {
                channel,
                kind,
                meta,
                window,
            } if kind == "source" => match serde_json::from_slice::<SourceMeta>(&meta) {
                Ok(m) if m.bytes <= MAX_SOURCE_BYTES => {
                    self.0.insert(
                        channel,
                        Source {
                            remaining: m.bytes,
                            window: SendWindow::new(window),
                        },
                    );
                    Ok(None)
                }
                _ => Ok(Some(Frame::Close {
                    channel,
                    error: Some(format!("a source sends 0 to {MAX_SOURCE_BYTES} bytes")),
                })),
            },
            Frame::Credit { channel, bytes } if self.0.contains_key(&channel) => {
                let violated = self
                    .0
                    .get_mut(&channel)
                    .is_some_and(|s| s.window.grant(bytes).is_err());
                if violated {
                    self.0.remove(&channel);
                    return Ok(Some(Frame::Close {
                        channel,
                        error: Some("credit beyond the window limit".into()),
                    }));
                }
                Ok(None)
            }
            Frame::Close { channel, .. } if self.0.contains_key(&channel) => {
                self.0.remove(&channel);
                Ok(None)
            }
            other => Err(other),
        }
    }

    /// The data (and closes) the channels may send now.
    fn pump(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        self.0.retain(|&channel, s| {
            while s.remaining > 0 {
                let n = s
                    .window
                    .take(usize::try_from(s.remaining).unwrap_or(usize::MAX));
                if n == 0 {
                    return true;
                }
                s.remaining -= n as u64;
                out.push(Frame::Data {
                    channel,
                    bytes: vec![0x5a; n],
                });
            }
            out.push(Frame::Close {
                channel,
                error: None,
            });
            false
        });
        out
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(socket: &mut Socket, frame: &Frame) -> Result<(), String> {
    let bytes = tunnel::encode(frame).map_err(|e| e.to_string())?;
    socket
        .send(Message::Binary(bytes.into()))
        .await
        .map_err(|e| e.to_string())
}

fn now_ms() -> i64 {
    crate::state::now_ms()
}

pub(crate) fn random() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// The wait before reconnect attempt `failures` (0 = first): exponential, capped at `cap`,
/// half jittered. (The mirror's requests back off the same way.)
pub(crate) fn backoff(failures: u32, cap: Duration, random: u64) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << failures.min(16))
        .min(cap);
    let half = base / 2;
    let jitter_ms = random % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter_ms)
}

fn read_uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_load() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let max = BACKOFF_MAX;
        assert!(backoff(0, max, 0) >= BACKOFF_MIN / 2 && backoff(0, max, u64::MAX) <= BACKOFF_MIN);
        assert!(backoff(3, max, 0) >= Duration::from_millis(1000));
        for f in [10, 20, u32::MAX] {
            assert!(backoff(f, max, u64::MAX) <= max, "{f}");
            assert!(backoff(f, max, 0) >= max / 2, "{f}");
            assert!(
                backoff(f, BACKOFF_UNREACHABLE, u64::MAX) <= BACKOFF_UNREACHABLE,
                "{f}"
            );
        }
        let spread: std::collections::HashSet<Duration> =
            (0..50u64).map(|r| backoff(4, max, r * 7919)).collect();
        assert!(spread.len() > 10, "jitter spreads reconnects");
    }

    #[test]
    fn a_source_channel_sends_exactly_what_was_asked_within_its_credit() {
        let mut sources = Sources::default();
        let open = Frame::Open {
            channel: 2,
            kind: "source".into(),
            meta: br#"{"bytes": 1000000}"#.to_vec(),
            window: 300_000,
        };
        assert!(matches!(sources.accept(open), Ok(None)));
        let mut sent = 0;
        let mut closed = false;
        for _ in 0..100 {
            for f in sources.pump() {
                match f {
                    Frame::Data { bytes, .. } => sent += bytes.len(),
                    Frame::Close { error: None, .. } => closed = true,
                    other => panic!("{other:?}"),
                }
            }
            if closed {
                break;
            }
            assert!(sent % 300_000 == 0, "stops at the credit: {sent}");
            assert!(matches!(
                sources.accept(Frame::Credit {
                    channel: 2,
                    bytes: 300_000
                }),
                Ok(None)
            ));
        }
        assert_eq!((sent, closed), (1_000_000, true));
        let other = Frame::Open {
            channel: 4,
            kind: "pty".into(),
            meta: vec![],
            window: 1,
        };
        assert!(
            sources.accept(other).is_err(),
            "other kinds are not sources"
        );
        let huge = Frame::Open {
            channel: 6,
            kind: "source".into(),
            meta: br#"{"bytes": 99999999999}"#.to_vec(),
            window: 1,
        };
        assert!(matches!(
            sources.accept(huge),
            Ok(Some(Frame::Close { .. }))
        ));
    }

    #[test]
    fn proc_readings_parse() {
        if cfg!(target_os = "linux") {
            assert!(read_uptime().is_some_and(|u| u > 0.0));
            assert!(read_load().is_some());
        }
    }
}
