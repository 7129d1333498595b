//! The daemon's streams client (`tether::streams`) end to end: against the Worker's
//! `/v1/stream/` with an org's key, and against the Durable Streams reference server, which
//! pins down the protocol the client expects. Every scenario runs on both (`<scenario>::worker`
//! and `<scenario>::reference`).

use crate::fresh_org;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tether::streams::{
    Append, CreateOptions, IdempotentProducer, Offset, ProducerConfig, ProducerState, RetryPolicy,
    StreamClient, StreamError,
};
use tether_tests::ReferenceStreams;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;

/// A server to run a scenario against.
struct Target {
    url: String,
    key: String,
}

impl Target {
    fn client(&self) -> StreamClient {
        StreamClient::new(&self.url, &self.key).unwrap()
    }
}

static REFERENCE: OnceCell<ReferenceStreams> = OnceCell::const_new();

async fn reference() -> Target {
    let r = REFERENCE
        .get_or_init(|| async { ReferenceStreams::start().expect("starting the reference") })
        .await;
    // The reference checks no auth; the header is sent anyway and ignored.
    Target {
        url: r.url.clone(),
        key: "tk_unused".into(),
    }
}

async fn worker(name: &str, prefix: &str) -> Target {
    let (url, key) = fresh_org(name, prefix).await;
    Target { url, key }
}

/// Runs `scenario` as two tests: `scenario::worker` (in a fresh org named `name` with task
/// prefix `prefix`) and `scenario::reference`.
macro_rules! on_both {
    ($scenario:ident, $name:literal, $prefix:literal) => {
        mod $scenario {
            #[tokio::test]
            async fn worker() {
                super::$scenario(super::worker($name, $prefix).await, "worker").await
            }
            #[tokio::test]
            async fn reference() {
                super::$scenario(super::reference().await, "reference").await
            }
        }
    };
}

on_both!(create_append_read_delete, "Streams", "SCR");
on_both!(exactly_once_through_faults, "Faults", "SXO");
on_both!(long_poll_wakes_a_reader_at_the_tail, "Tail", "SLP");
on_both!(a_newer_epoch_fences_the_old_producer, "Fence", "SFN");
on_both!(a_producer_resumes_from_saved_state, "Resume", "SRS");
on_both!(close_ends_the_stream, "Close", "SCL");

/// A stream path no other test (or earlier run against the shared reference) uses.
fn path(scenario: &str, server: &str) -> String {
    format!("e2e-{}/{server}/{scenario}", std::process::id())
}

fn text() -> CreateOptions {
    CreateOptions {
        content_type: "text/plain".into(),
        ..CreateOptions::default()
    }
}

fn config() -> ProducerConfig {
    ProducerConfig {
        content_type: "text/plain".into(),
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        ..ProducerConfig::default()
    }
}

async fn content(client: &StreamClient, path: &str) -> Bytes {
    client
        .read_to_end(path, &Offset::start())
        .await
        .unwrap()
        .data
}

async fn create_append_read_delete(t: Target, server: &str) {
    let c = t.client();
    let p = path("crud", server);
    let made = c.create(&p, &text()).await.unwrap();
    assert!(made.created);
    // Creating again with the same configuration is a no-op; with another one, a conflict.
    let again = c.create(&p, &text()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.next_offset, made.next_offset);
    let json = CreateOptions {
        content_type: "application/json".into(),
        ..CreateOptions::default()
    };
    let conflict = c.create(&p, &json).await.unwrap_err();
    assert!(
        matches!(conflict, StreamError::ConfigConflict { .. }),
        "{conflict:?}"
    );

    let info = c.head(&p).await.unwrap();
    assert!(info.content_type.unwrap().starts_with("text/plain"));
    assert_eq!(info.next_offset, made.next_offset);
    assert!(!info.closed);
    let empty = c.read(&p, &Offset::start()).await.unwrap();
    assert!(empty.data.is_empty() && empty.up_to_date && !empty.closed);

    let producer =
        IdempotentProducer::new(c.clone(), &p, ProducerState::new("crud", 0), config()).unwrap();
    producer.append("hello ").await.unwrap();
    producer.append(Bytes::from_static(b"world")).await.unwrap();
    producer.flush().await.unwrap();
    let status = producer.status();
    assert_eq!(status.acked_bytes, 11);
    assert_eq!(status.state.next_seq, status.batches);

    let all = c.read(&p, &Offset::start()).await.unwrap();
    assert_eq!(&all.data[..], b"hello world");
    assert!(all.up_to_date);
    assert_eq!(Some(&all.next_offset), status.next_offset.as_ref());
    assert_eq!(c.head(&p).await.unwrap().next_offset, all.next_offset);
    assert!(
        all.next_offset > made.next_offset,
        "offsets sort in stream order"
    );
    let tail = c.read(&p, &all.next_offset).await.unwrap();
    assert!(tail.data.is_empty() && tail.up_to_date);

    // A plain append (no producer) lands after the producer's data.
    let plain = c
        .append(
            &p,
            Append {
                content_type: "text/plain",
                body: Bytes::from_static(b"!"),
                producer: None,
                close: false,
            },
        )
        .await
        .unwrap();
    assert!(!plain.duplicate);
    let after = c.read(&p, &all.next_offset).await.unwrap();
    assert_eq!(&after.data[..], b"!");
    assert_eq!(Some(after.next_offset), plain.next_offset);

    c.delete(&p).await.unwrap();
    for e in [
        c.head(&p).await.unwrap_err(),
        c.read(&p, &Offset::start()).await.unwrap_err(),
        c.delete(&p).await.unwrap_err(),
    ] {
        assert!(matches!(e, StreamError::NotFound { .. }), "{e:?}");
    }
}

/// Appends through a proxy that loses some requests before the server sees them and some
/// responses after the server has applied them: the stream must still hold exactly the
/// appended bytes, in order, and the lost responses must show up as duplicates on retry.
async fn exactly_once_through_faults(t: Target, server: &str) {
    let direct = t.client();
    let p = path("faults", server);
    direct.create(&p, &text()).await.unwrap();
    let proxy = FaultyProxy::start(&t.url).await;
    let through = StreamClient::new(&proxy.url, &t.key).unwrap();
    let producer = IdempotentProducer::new(
        through,
        &p,
        ProducerState::new("faulty", 0),
        ProducerConfig {
            max_batch_bytes: 8 * 1024,
            ..config()
        },
    )
    .unwrap();

    let mut sent = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..400u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let len = 1 + (rng % 1500) as usize;
        // Printable, and different for every write, so a reordering or a doubled batch shows.
        let write: Vec<u8> = format!("<{i}:")
            .into_bytes()
            .into_iter()
            .chain((0..len).map(|j| b'a' + ((i as usize + j) % 26) as u8))
            .chain(*b">")
            .collect();
        sent.extend_from_slice(&write);
        producer.append(write).await.unwrap();
        if i % 50 == 0 {
            // Let the producer go idle now and then, so batches of every size happen.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    producer.flush().await.unwrap();

    let got = content(&direct, &p).await;
    if got[..] != sent[..] {
        let at = got.iter().zip(&sent).take_while(|(a, b)| a == b).count();
        panic!(
            "the stream differs from what was sent: {} bytes vs {}, first difference at {at}",
            got.len(),
            sent.len()
        );
    }
    let status = producer.status();
    let (before, after) = (proxy.stats.dropped_before(), proxy.stats.dropped_after());
    assert!(before > 0 && after > 0, "the proxy injected no faults");
    assert!(status.batches > 10, "{status:?}");
    assert_eq!(status.acked_bytes, sent.len() as u64);
    assert!(status.retries >= before + after, "{status:?}");
    // Every response lost after the server applied the batch made its retry a duplicate.
    assert_eq!(status.duplicates, after, "{status:?}");
}

async fn long_poll_wakes_a_reader_at_the_tail(t: Target, server: &str) {
    let c = t.client();
    let p = path("tail", server);
    c.create(&p, &text()).await.unwrap();
    let producer =
        IdempotentProducer::new(c.clone(), &p, ProducerState::new("tail", 0), config()).unwrap();
    producer.append("before").await.unwrap();
    producer.flush().await.unwrap();
    let caught_up = c.read_to_end(&p, &Offset::start()).await.unwrap();
    assert_eq!(&caught_up.data[..], b"before");

    // A reader waiting at the tail gets a later append.
    let reader = {
        let (c, p, at) = (c.clone(), p.clone(), caught_up.next_offset.clone());
        tokio::spawn(async move { c.long_poll(&p, &at, None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    producer.append("after").await.unwrap();
    producer.flush().await.unwrap();
    let woke = reader.await.unwrap().unwrap();
    assert_eq!(&woke.data[..], b"after");
    assert!(woke.next_offset > caught_up.next_offset);
    assert!(!woke.closed);
    let cursor = woke.cursor.expect("a long-poll answer carries a cursor");

    // Closing the stream wakes the next waiter with no data and `closed`.
    let reader = {
        let (c, p, at) = (c.clone(), p.clone(), woke.next_offset.clone());
        tokio::spawn(async move { c.long_poll(&p, &at, Some(&cursor)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    producer.close().await.unwrap();
    let end = reader.await.unwrap().unwrap();
    assert!(
        end.data.is_empty() && end.closed && end.up_to_date,
        "{end:?}"
    );
}

async fn a_newer_epoch_fences_the_old_producer(t: Target, server: &str) {
    let c = t.client();
    let p = path("fence", server);
    c.create(&p, &text()).await.unwrap();
    let old =
        IdempotentProducer::new(c.clone(), &p, ProducerState::new("agent", 0), config()).unwrap();
    old.append("old ").await.unwrap();
    old.flush().await.unwrap();

    // The daemon restarts and takes over with the next epoch while the old one still runs.
    let new = IdempotentProducer::new(c.clone(), &p, old.state().next_epoch(), config()).unwrap();
    new.append("new ").await.unwrap();
    new.flush().await.unwrap();

    old.append("zombie").await.unwrap();
    let e = old.flush().await.unwrap_err();
    match &e {
        StreamError::Fenced {
            epoch,
            current_epoch,
            ..
        } => {
            assert_eq!(*epoch, 0);
            assert_eq!(*current_epoch, Some(1));
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    // The zombie stays stopped.
    assert!(matches!(
        old.append("x").await,
        Err(StreamError::Fenced { .. })
    ));
    assert!(matches!(
        old.status().failed,
        Some(StreamError::Fenced { .. })
    ));
    new.append("more").await.unwrap();
    new.flush().await.unwrap();
    assert_eq!(&content(&c, &p).await[..], b"old new more");
}

async fn a_producer_resumes_from_saved_state(t: Target, server: &str) {
    let c = t.client();
    let p = path("resume", server);
    c.create(&p, &text()).await.unwrap();
    let first =
        IdempotentProducer::new(c.clone(), &p, ProducerState::new("agent", 7), config()).unwrap();
    first.append("one ").await.unwrap();
    first.flush().await.unwrap();
    let after_one = first.state();
    first.append("two ").await.unwrap();
    first.flush().await.unwrap();
    let saved = first.state();
    assert_eq!((saved.epoch, saved.next_seq), (7, 2));
    first.abort();
    tokio::task::yield_now().await;
    let e = first.append("after abort").await.unwrap_err();
    assert!(matches!(e, StreamError::ProducerStopped { .. }), "{e:?}");

    // A clean restart continues the same epoch where it left off.
    let second = IdempotentProducer::new(c.clone(), &p, saved.clone(), config()).unwrap();
    second.append("three").await.unwrap();
    second.flush().await.unwrap();
    assert_eq!(second.state().next_seq, 3);
    assert_eq!(&content(&c, &p).await[..], b"one two three");

    // Resuming from a stale state would reuse a seq: refused, nothing written.
    let stale = IdempotentProducer::new(c.clone(), &p, after_one, config()).unwrap();
    stale.append("lost?").await.unwrap();
    let e = stale.flush().await.unwrap_err();
    assert!(
        matches!(
            e,
            StreamError::SequenceReused {
                sent: 1,
                server_seq: 2,
                ..
            }
        ),
        "{e:?}"
    );
    // Resuming from a state ahead of the server leaves a gap: refused too.
    let ahead = ProducerState {
        next_seq: 10,
        ..saved
    };
    let ahead = IdempotentProducer::new(c.clone(), &p, ahead, config()).unwrap();
    ahead.append("gap?").await.unwrap();
    let e = ahead.flush().await.unwrap_err();
    assert!(
        matches!(
            e,
            StreamError::SequenceGap {
                sent: 10,
                expected: Some(3),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(&content(&c, &p).await[..], b"one two three");
}

async fn close_ends_the_stream(t: Target, server: &str) {
    let c = t.client();
    let p = path("close", server);
    c.create(&p, &text()).await.unwrap();
    let producer =
        IdempotentProducer::new(c.clone(), &p, ProducerState::new("closer", 0), config()).unwrap();
    producer.append("last words").await.unwrap();
    let end = producer.close().await.unwrap();
    assert!(producer.status().closed);
    // Closing twice is fine; appending after is not.
    assert_eq!(producer.close().await.unwrap(), end);
    assert!(matches!(
        producer.append("more").await,
        Err(StreamError::Closed { .. })
    ));

    assert!(c.head(&p).await.unwrap().closed);
    let all = c.read_to_end(&p, &Offset::start()).await.unwrap();
    assert_eq!(&all.data[..], b"last words");
    assert!(all.closed);
    if let Some(end) = end {
        assert_eq!(all.next_offset, end);
    }
    let late = c
        .append(
            &p,
            Append {
                content_type: "text/plain",
                body: Bytes::from_static(b"late"),
                producer: None,
                close: false,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(late, StreamError::Closed { .. }), "{late:?}");
}

/// An HTTP/1.1 proxy on 127.0.0.1 that serves one request per connection and, of the POSTs,
/// drops every 5th-plus-2nd before forwarding it (the server never sees it) and every
/// 5th-plus-4th after the server answered (the server applied it, the client never hears).
struct FaultyProxy {
    url: String,
    stats: Arc<ProxyStats>,
}

#[derive(Default)]
struct ProxyStats {
    posts: AtomicU64,
    dropped_before: AtomicU64,
    dropped_after: AtomicU64,
}

impl ProxyStats {
    fn dropped_before(&self) -> u64 {
        self.dropped_before.load(Ordering::Relaxed)
    }
    fn dropped_after(&self) -> u64 {
        self.dropped_after.load(Ordering::Relaxed)
    }
}

impl FaultyProxy {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// upstream")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stats = Arc::new(ProxyStats::default());
        let s = stats.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, upstream.clone(), s.clone()));
            }
        });
        Self { url, stats }
    }
}

async fn serve(mut client: TcpStream, upstream: String, stats: Arc<ProxyStats>) {
    let Some((head, body)) = read_message(&mut client, false).await else {
        return;
    };
    let post = head.starts_with("POST ");
    let n = if post {
        stats.posts.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        0
    };
    if post && n % 5 == 2 {
        stats.dropped_before.fetch_add(1, Ordering::Relaxed);
        return; // Closes the connection without an answer.
    }
    let mut server = TcpStream::connect(&upstream).await.unwrap();
    let head = rewrite_headers(&head, &[("host", &upstream), ("connection", "close")]);
    server.write_all(head.as_bytes()).await.unwrap();
    server.write_all(&body).await.unwrap();
    let Some((res_head, res_body)) = read_message(&mut server, true).await else {
        return;
    };
    if post && n % 5 == 4 {
        stats.dropped_after.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let res_head = rewrite_headers(&res_head, &[("connection", "close")]);
    let _ = client.write_all(res_head.as_bytes()).await;
    let _ = client.write_all(&res_body).await;
    let _ = client.shutdown().await;
}

/// Reads one HTTP/1.1 message: its head (request or status line and headers, as text) and
/// body. Bodies are framed by Content-Length, by chunked encoding (kept encoded), or for a
/// response by the end of the connection.
async fn read_message(
    s: &mut (impl AsyncRead + Unpin),
    response: bool,
) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).ok()?;
    let mut body = buf[end..].to_vec();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if response && (status == 204 || status == 304 || status < 200) {
        body.clear();
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        while !body.ends_with(b"0\r\n\r\n") {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if response {
        s.read_to_end(&mut body).await.ok()?;
    }
    Some((head, body))
}

/// The head with each named header replaced by the given value.
fn rewrite_headers(head: &str, set: &[(&str, &str)]) -> String {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let mut out = format!("{}\r\n", lines.next().unwrap_or_default());
    for l in lines {
        let name = l.split(':').next().unwrap_or_default().trim();
        if !set.iter().any(|(k, _)| name.eq_ignore_ascii_case(k)) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    for (k, v) in set {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out
}
