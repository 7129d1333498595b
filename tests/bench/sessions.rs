//! Sessions benchmark: the built Worker in workerd, a real `tether up`, real git worktrees and
//! `tests/fixtures/fake-agent.py` as the agent. Prints figures; asserts only correctness.
//!
//! - Dispatch -> first output byte: `POST /v1/sessions`, then a long-polling reader of the
//!   session's stream from the start; the time from the POST to the reader's first byte (start
//!   command through the tunnel, worktree, PTY spawn, the agent's banner, shipping, the
//!   stream's wake-up). The agent prints its banner and exits. p50 / p99 over N sessions.
//! - Sustained PTY -> remote reader: one agent writes BENCH_MB megabytes as fast as it can; a
//!   remote long-polling reader's rate from its first byte to the stream's close, and the
//!   agent's own write rate (its log) for comparison (ratio = end-to-end / agent).
//! - The daemon's resident memory (VmRSS), idle and with 10 running sessions after each has
//!   written 1 MB.
//!
//!   cargo build -p tether && cargo bench -p tether-tests --bench sessions
//!   cargo build --release -p tether && TETHER_BIN=target/release/tether cargo bench -p tether-tests --bench sessions
//!   BENCH_SESSIONS=50 BENCH_MB=256 ...   # defaults 20, 64
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tether::streams::{Offset, StreamClient};
use tether_tests::bench::{env_or, percentile};
use tether_tests::{Api, HostHome, TetherDaemon, Worker, agent_transcript, session_machine};

/// Reads the stream from the start until it is closed: (bytes, time of the first byte, time
/// of the close), the times measured from `t0`.
async fn read_all(client: &StreamClient, path: &str, t0: Instant) -> (u64, Duration, Duration) {
    let mut offset = Offset::start();
    let mut cursor: Option<String> = None;
    let (mut bytes, mut first) = (0u64, None);
    loop {
        let chunk = client
            .long_poll(path, &offset, cursor.as_deref())
            .await
            .expect("reading the stream");
        if !chunk.data.is_empty() && first.is_none() {
            first = Some(t0.elapsed());
        }
        bytes += chunk.data.len() as u64;
        offset = chunk.next_offset;
        cursor = chunk.cursor;
        if chunk.closed {
            return (bytes, first.unwrap_or_default(), t0.elapsed());
        }
    }
}

async fn start(api: &Api, agent: &str) -> Value {
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "agent": agent, "prompt": "bench"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

async fn wait_status(api: &Api, id: &str, status: &str) -> Value {
    tether_tests::poll_until(
        status,
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let (_, v) = api.get(&format!("/v1/sessions/{id}")).await;
            if v["status"] == status {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await
}

#[tokio::main]
async fn main() {
    let sessions = env_or("BENCH_SESSIONS", 20);
    let mb = env_or("BENCH_MB", 64);
    let worker = Worker::start(None).unwrap();
    let key = worker.bootstrap().await.unwrap();
    let api = Api::new(&worker.url, &key);
    let home = HostHome::new("bench-sessions");
    let extra = format!(
        "\n[presets.quick]\ncommand = {agent:?}\nargs = [\"--flood\", \"0\"]\nprompt = \"none\"\n\
         \n[presets.flood]\ncommand = {agent:?}\nargs = [\"--flood\", \"{bytes}\"]\nprompt = \"none\"\n\
         env = {{ FAKE_AGENT_LOG_DIR = {logs:?} }}\n",
        agent = tether_tests::root().join("tests/fixtures/fake-agent.py"),
        bytes = mb * 1_000_000,
        logs = home.path().join("agent-logs"),
    );
    session_machine(&api, &worker.url, &home, "bench", &extra)
        .await
        .unwrap();
    let mut daemon = TetherDaemon::start(&home).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reader = StreamClient::new(&worker.url, &key).unwrap();
    println!("sessions benchmark: {sessions} dispatches, {mb} MB sustained");

    // Dispatch -> first byte.
    let mut lat = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let t0 = Instant::now();
        let s = start(&api, "quick").await;
        let (bytes, first, _) = read_all(&reader, s["stream_path"].as_str().unwrap(), t0).await;
        assert!(bytes > 0, "the banner arrived: {s}");
        lat.push(first);
        wait_status(&api, s["id"].as_str().unwrap(), "exited").await;
    }
    lat.sort();
    println!(
        "dispatch -> first byte     {sessions:>4} sessions   p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );

    // Sustained PTY -> remote reader.
    let t0 = Instant::now();
    let s = start(&api, "flood").await;
    let id = s["id"].as_str().unwrap().to_owned();
    let (bytes, first, closed) = read_all(&reader, s["stream_path"].as_str().unwrap(), t0).await;
    let written = agent_transcript(&home, &id);
    assert_eq!(bytes, written.len() as u64, "every byte arrived once");
    let agent_secs = {
        let log = home.path().join("agent-logs").join(format!("{id}.out"));
        let meta = std::fs::metadata(&log).unwrap();
        let created = meta.created().or_else(|_| meta.modified()).unwrap();
        meta.modified()
            .unwrap()
            .duration_since(created)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let e2e = bytes as f64 / 1e6 / (closed - first).as_secs_f64();
    let agent_rate = if agent_secs > 0.0 {
        bytes as f64 / 1e6 / agent_secs
    } else {
        f64::NAN
    };
    println!(
        "PTY -> remote reader      {:>7.1} MB in {:>6.2} s: {e2e:>7.1} MB/s end to end; the agent wrote at {agent_rate:>7.1} MB/s (ratio {:.2})",
        bytes as f64 / 1e6,
        (closed - first).as_secs_f64(),
        e2e / agent_rate,
    );

    // Memory with 10 sessions.
    let idle = daemon.rss_kib().unwrap_or(0);
    let mut ids = Vec::new();
    for _ in 0..10 {
        let s = start(&api, "fake").await;
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        wait_status(&api, id, "running").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        let (s, v) = api
            .post(
                &format!("/v1/sessions/{id}/input"),
                json!({"data": "flood 1000000\r"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy = daemon.rss_kib().unwrap_or(0);
    println!(
        "daemon RSS                 idle {:>6.1} MB   with 10 running sessions (1 MB written each) {:>6.1} MB",
        idle as f64 / 1024.0,
        busy as f64 / 1024.0
    );
    for id in &ids {
        api.post(&format!("/v1/sessions/{id}/stop"), json!({}))
            .await;
    }
    for id in &ids {
        wait_status(&api, id, "stopped").await;
    }
    daemon.stop().await;
}
