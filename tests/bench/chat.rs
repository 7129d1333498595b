//! Chat benchmark: the built Worker in workerd, a real `tether up`, and
//! `tests/fixtures/fake-claude-chat.py` speaking Claude Code's stream-json. Prints figures;
//! asserts only correctness (every event arrives once, in order).
//!
//! - Event latency: the agent writes BENCH_PACED assistant messages 20 ms apart, each holding
//!   the time it was written (`t=<ns>`); a remote long-polling reader of the session's JSON
//!   stream notes when each arrives. p50 / p99 of arrival - written (same machine, same
//!   clock): normalization, the spool, shipping, the stream's append and wake-up, the reader.
//! - Sustained: the agent writes BENCH_EVENTS messages as fast as it can; events/s from the
//!   reader's first to its last, and the agent's own write rate for comparison (ratio).
//!
//!   cargo build -p tether && cargo bench -p tether-tests --bench chat
//!   BENCH_PACED=500 BENCH_EVENTS=20000 ...   # defaults 200, 5000
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tether::streams::{Offset, StreamClient};
use tether_tests::bench::{env_or, percentile};
use tether_tests::{Api, HostHome, TetherDaemon, Worker, session_machine};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The `t=` stamps of assistant messages, as (written ns, received ns), until `want` of them
/// came (reading from `offset`); answers them and where the reader stopped.
async fn collect(
    client: &StreamClient,
    path: &str,
    mut offset: Offset,
    want: usize,
) -> (Vec<(u128, u128)>, Offset) {
    let mut cursor: Option<String> = None;
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        let chunk = client
            .long_poll(path, &offset, cursor.as_deref())
            .await
            .expect("reading the stream");
        let received = now_ns();
        if !chunk.data.is_empty() {
            let events: Vec<Value> = serde_json::from_slice(&chunk.data).unwrap();
            for e in events {
                if e["type"] != "message" || e["role"] != "assistant" {
                    continue;
                }
                let text = e["text"].as_str().unwrap_or_default();
                if let Some(t) = text
                    .strip_prefix("t=")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|t| t.parse::<u128>().ok())
                {
                    got.push((t, received));
                }
            }
        }
        offset = chunk.next_offset;
        cursor = chunk.cursor;
        assert!(!chunk.closed, "the stream closed early");
    }
    (got, offset)
}

/// Sends a follow-up with `text` to the session.
async fn say(api: &Api, id: &str, text: &str) {
    let (s, v) = api
        .post(
            &format!("/v1/sessions/{id}/messages"),
            json!({"text": text}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
}

#[tokio::main]
async fn main() {
    let paced = env_or("BENCH_PACED", 200);
    let sustained = env_or("BENCH_EVENTS", 5000);
    let worker = Worker::start(None).unwrap();
    let key = worker.bootstrap().await.unwrap();
    let api = Api::new(&worker.url, &key);
    let home = HostHome::new("bench-chat");
    let extra = format!(
        "\n[presets.chat]\ncommand = {agent:?}\nchat = {{ protocol = \"claude-stream-json\" }}\n",
        agent = tether_tests::root().join("tests/fixtures/fake-claude-chat.py"),
    );
    let host = session_machine(&api, &worker.url, &home, "bench", &extra)
        .await
        .unwrap();
    let mut daemon = TetherDaemon::start(&home).unwrap();
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host, "agent": "chat", "kind": "chat",
                   "prompt": "warm up"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let path = v["stream_path"].as_str().unwrap().to_owned();
    let reader = StreamClient::new(&worker.url, &key).unwrap();
    tether_tests::poll_until(
        "the session runs",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let (_, v) = api.get(&format!("/v1/sessions/{id}")).await;
            if v["status"] == "running" {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    )
    .await;
    // Catch up past the warm-up turn.
    let mut offset = Offset::start();
    loop {
        let chunk = reader.long_poll(&path, &offset, None).await.unwrap();
        offset = chunk.next_offset;
        let text = String::from_utf8_lossy(&chunk.data);
        if text.contains("\"turn_ended\"") {
            break;
        }
    }
    println!("chat benchmark: {paced} paced events, {sustained} sustained");

    // Latency: paced events, one every 20 ms.
    say(&api, &id, &format!("bench {paced} 20")).await;
    let (got, offset) = collect(&reader, &path, offset, paced).await;
    let mut lat: Vec<Duration> = got
        .iter()
        .map(|(t, r)| Duration::from_nanos(r.saturating_sub(*t) as u64))
        .collect();
    lat.sort();
    println!(
        "agent writes -> long-poll reader   {paced:>6} events   p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );

    // Sustained: as fast as the agent writes.
    say(&api, &id, &format!("bench {sustained} 0")).await;
    let (got, _) = collect(&reader, &path, offset, sustained).await;
    let stamps: Vec<u128> = got.iter().map(|(t, _)| *t).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "in order");
    let first_rx = got.first().unwrap().1;
    let last_rx = got.last().unwrap().1;
    let (first_tx, last_tx) = (stamps[0], *stamps.last().unwrap());
    let e2e = sustained as f64 / ((last_rx - first_rx) as f64 / 1e9);
    let agent = sustained as f64 / ((last_tx - first_tx).max(1) as f64 / 1e9);
    println!(
        "sustained agent -> remote reader  {sustained:>6} events in {:>6.2} s: {e2e:>8.0} events/s end to end; the agent wrote {agent:>8.0}/s (ratio {:.2})",
        (last_rx - first_rx) as f64 / 1e9,
        e2e / agent,
    );
    let (s, _) = api
        .post(&format!("/v1/sessions/{id}/stop"), json!({}))
        .await;
    assert_eq!(s, 202);
    daemon.stop().await;
}
