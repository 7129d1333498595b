//! Durable Streams benchmark: our Worker's `/v1/stream/` (workerd via Miniflare) side by side
//! with the reference server (`@durable-streams/server`, in memory, on Node), the same load
//! against each on loopback, through the daemon's client (`tether::streams`). Prints a table
//! with the ratio ours/reference; asserts nothing about speed.
//!
//!   cargo bench -p tether-tests --bench streams
//!
//! Loads (run against one server at a time, ours first):
//! - append: 4 producers, each on its own stream with one POST in flight (4 in flight in all),
//!   one message per POST, for 1 KB and 64 KB messages; and 1 KB messages batched by the
//!   producer (up to 256 KB a POST), the daemon's path for terminal output. Each load stops at
//!   a message count or a time limit, whichever comes first.
//! - catch-up read: a reader reads an 8 MB stream from offset -1, following Stream-Next-Offset
//!   to the tail; 3 times.
//! - long-poll wake: a reader long-polls at the tail; a writer appends 16 bytes; the latency is
//!   from just before the append is sent to the reader holding the data. 300 samples.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tether::streams::{
    Append, CreateOptions, IdempotentProducer, Offset, ProducerConfig, ProducerState, StreamClient,
    StreamError,
};
use tether_tests::bench::percentile;
use tether_tests::{ReferenceStreams, Worker};

const PRODUCERS: usize = 4;
const READ_STREAM_BYTES: usize = 8 * 1024 * 1024;
const READ_ROUNDS: usize = 3;
const WAKE_SAMPLES: usize = 300;

/// Retries outside the producers (reads, long-polls, the wake test's appends): 429/5xx/transport.
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// One server's figures.
#[derive(Default)]
struct Figures {
    rows: Vec<(String, f64)>,
    retries: u64,
}

impl Figures {
    fn add(&mut self, name: impl Into<String>, value: f64) {
        self.rows.push((name.into(), value));
    }
}

/// Calls `f` until it succeeds or fails for good, sleeping as the error asks.
async fn retrying<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StreamError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() && attempt < 50 => {
                attempt += 1;
                RETRIES.fetch_add(1, Ordering::Relaxed);
                let wait = e.retry_after().unwrap_or(Duration::from_millis(50));
                tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn message(size: usize, i: usize) -> Bytes {
    Bytes::from(vec![b'a' + (i % 26) as u8; size])
}

/// `PRODUCERS` producers append `size`-byte messages until each sent `max_msgs` or `limit`
/// passed; answers (messages/s, MB/s) measured until every producer's flush.
async fn append_load(
    client: &StreamClient,
    tag: &str,
    size: usize,
    batched: bool,
    max_msgs: usize,
    limit: Duration,
    figures: &mut Figures,
) -> (f64, f64) {
    let config = if batched {
        ProducerConfig {
            max_buffered_bytes: 1024 * 1024,
            ..ProducerConfig::default()
        }
    } else {
        // One message per POST; `append` waits once one more is queued behind the one in flight.
        ProducerConfig {
            max_batch_bytes: size,
            max_buffered_bytes: 2 * size,
            ..ProducerConfig::default()
        }
    };
    let opts = CreateOptions::default();
    let mut producers = Vec::new();
    for i in 0..PRODUCERS {
        let path = format!("bench/{tag}/{i}");
        retrying(|| client.create(&path, &opts)).await;
        let state = ProducerState::new(format!("bench-{tag}-{i}"), 0);
        producers
            .push(IdempotentProducer::new(client.clone(), path, state, config.clone()).unwrap());
    }
    let started = Instant::now();
    let deadline = started + limit;
    let tasks: Vec<_> = producers
        .iter()
        .cloned()
        .map(|p| {
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < max_msgs && Instant::now() < deadline {
                    p.append(message(size, sent)).await.unwrap();
                    sent += 1;
                }
                p.flush().await.unwrap();
                sent
            })
        })
        .collect();
    let mut msgs = 0;
    for t in tasks {
        msgs += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    figures.retries += producers.iter().map(|p| p.status().retries).sum::<u64>();
    let rate = msgs as f64 / secs;
    (rate, rate * size as f64 / 1e6)
}

/// Fills a stream with `READ_STREAM_BYTES`, then reads it from the start `READ_ROUNDS` times.
async fn catch_up_read(client: &StreamClient, run: &str) -> f64 {
    let (path, opts) = (&format!("bench/{run}/read"), CreateOptions::default());
    retrying(|| client.create(path, &opts)).await;
    let producer = IdempotentProducer::new(
        client.clone(),
        path,
        ProducerState::new(format!("bench-{run}-read"), 0),
        ProducerConfig::default(),
    )
    .unwrap();
    for i in 0..READ_STREAM_BYTES / 65536 {
        producer.append(message(65536, i)).await.unwrap();
    }
    producer.flush().await.unwrap();
    let started = Instant::now();
    for _ in 0..READ_ROUNDS {
        let mut offset = Offset::start();
        let mut read = 0;
        loop {
            let c = retrying(|| client.read(path, &offset)).await;
            read += c.data.len();
            if c.up_to_date || c.next_offset == offset {
                break;
            }
            offset = c.next_offset;
        }
        assert_eq!(
            read, READ_STREAM_BYTES,
            "the read did not get the whole stream"
        );
    }
    (READ_ROUNDS * READ_STREAM_BYTES) as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// The mean time of one request with nothing else in flight: the per-request floor that every
/// append above pays, auth and the runtime included.
async fn head_round_trip(client: &StreamClient, run: &str) -> f64 {
    let (path, opts) = (&format!("bench/{run}/head"), CreateOptions::default());
    retrying(|| client.create(path, &opts)).await;
    const N: u32 = 300;
    let started = Instant::now();
    for _ in 0..N {
        retrying(|| client.head(path)).await;
    }
    started.elapsed().as_secs_f64() * 1000.0 / f64::from(N)
}

/// (p50, p99) in ms of append-to-reader latency with the reader long-polling at the tail.
async fn long_poll_wake(client: &StreamClient, run: &str) -> (f64, f64) {
    let path: &'static str = format!("bench/{run}/wake").leak();
    let opts = CreateOptions::default();
    retrying(|| client.create(path, &opts)).await;
    let tail = retrying(|| client.head(path)).await.next_offset;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = {
        let client = client.clone();
        tokio::spawn(async move {
            let (mut offset, mut cursor) = (tail, None::<String>);
            loop {
                let c = retrying(|| client.long_poll(path, &offset, cursor.as_deref())).await;
                if !c.data.is_empty() && tx.send((Instant::now(), c.data.len())).is_err() {
                    return;
                }
                offset = c.next_offset;
                cursor = c.cursor;
            }
        })
    };
    let mut samples = Vec::with_capacity(WAKE_SAMPLES);
    for _ in 0..WAKE_SAMPLES {
        // Give the reader time to be parked at the tail again.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let sent = Instant::now();
        retrying(|| {
            client.append(
                path,
                Append {
                    content_type: "application/octet-stream",
                    body: Bytes::from_static(b"0123456789abcdef"),
                    producer: None,
                    close: false,
                },
            )
        })
        .await;
        let (got, len) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the reader never got the append")
            .expect("the reader stopped");
        assert_eq!(len, 16, "the reader got more than one append at once");
        samples.push(got.saturating_duration_since(sent));
    }
    reader.abort();
    samples.sort();
    (percentile(&samples, 0.50), percentile(&samples, 0.99))
}

/// Every figure against one server; `run` keeps each run's streams (and producers) apart.
async fn run(name: &str, run: &str, client: &StreamClient) -> Figures {
    println!("{name}: running...");
    let mut f = Figures::default();
    // Warm up the runtime and the connection pool.
    append_load(
        client,
        &format!("{run}-warm"),
        1024,
        false,
        50,
        Duration::from_secs(5),
        &mut f,
    )
    .await;
    f.retries = 0;
    RETRIES.store(0, Ordering::Relaxed);

    let limit = Duration::from_secs(10);
    let (rate, mbs) = append_load(
        client,
        &format!("{run}-1k"),
        1024,
        false,
        5000,
        limit,
        &mut f,
    )
    .await;
    f.add("append 1 KB, 1 msg/POST (msgs/s)", rate);
    f.add("append 1 KB, 1 msg/POST (MB/s)", mbs);
    let (rate, mbs) = append_load(
        client,
        &format!("{run}-64k"),
        65536,
        false,
        300,
        limit,
        &mut f,
    )
    .await;
    f.add("append 64 KB, 1 msg/POST (msgs/s)", rate);
    f.add("append 64 KB, 1 msg/POST (MB/s)", mbs);
    let (rate, mbs) = append_load(
        client,
        &format!("{run}-1k-batched"),
        1024,
        true,
        25_000,
        limit,
        &mut f,
    )
    .await;
    f.add("append 1 KB, batched (msgs/s)", rate);
    f.add("append 1 KB, batched (MB/s)", mbs);
    f.add(
        "catch-up read 8 MB (MB/s)",
        catch_up_read(client, run).await,
    );
    f.add(
        "HEAD, sequential (ms per request)",
        head_round_trip(client, run).await,
    );
    let (p50, p99) = long_poll_wake(client, run).await;
    f.add("long-poll wake p50 (ms)", p50);
    f.add("long-poll wake p99 (ms)", p99);
    f.retries += RETRIES.load(Ordering::Relaxed);
    f
}

#[tokio::main]
async fn main() {
    let worker = Worker::start(None).expect("starting the Worker (build it: bash edge/build.sh)");
    let key = worker.bootstrap().await.unwrap();
    let reference = ReferenceStreams::start().unwrap();
    println!(
        "ours: Miniflare on {} | reference: @durable-streams/server (in memory) on {} | loopback",
        worker.url, reference.url
    );
    println!(
        "{PRODUCERS} producers on {PRODUCERS} streams, one POST in flight each; catch-up {READ_ROUNDS} x {} MB; {WAKE_SAMPLES} wake samples\n",
        READ_STREAM_BYTES / (1024 * 1024)
    );
    // The daemon will authenticate with a short-lived JWT (no directory lookup per request);
    // a raw API key costs a D1 lookup on every request. Both are measured.
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/auth/token", worker.url))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().expect("a token").to_owned();
    // The runtime's own floor: a route with no auth and no object.
    let http = reqwest::Client::new();
    let started = Instant::now();
    for _ in 0..300 {
        http.get(format!("{}/health", worker.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let floor = started.elapsed().as_secs_f64() * 1000.0 / 300.0;
    println!("Miniflare floor: GET /health, sequential, {floor:.2} ms per request\n");
    let with_key = run(
        "ours, API key",
        "key",
        &StreamClient::new(&worker.url, &key).unwrap(),
    )
    .await;
    let with_token = run(
        "ours, JWT",
        "jwt",
        &StreamClient::new(&worker.url, &token).unwrap(),
    )
    .await;
    let theirs = run(
        "reference",
        "ref",
        &StreamClient::new(&reference.url, "tk_unused").unwrap(),
    )
    .await;

    println!(
        "\n{:<36} {:>11} {:>11} {:>11} {:>9} {:>9}",
        "figure", "ours (key)", "ours (JWT)", "reference", "key/ref", "JWT/ref"
    );
    for (((name, a), (_, b)), (_, c)) in
        with_key.rows.iter().zip(&with_token.rows).zip(&theirs.rows)
    {
        println!(
            "{name:<36} {a:>11.2} {b:>11.2} {c:>11.2} {:>9.2} {:>9.2}",
            a / c,
            b / c
        );
    }
    println!(
        "{:<36} {:>11} {:>11} {:>11}",
        "retries (429/5xx/no answer)", with_key.retries, with_token.retries, theirs.retries
    );
}
