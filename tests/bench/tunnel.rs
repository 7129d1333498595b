//! Tunnel benchmark: the built Worker in workerd (Miniflare) and a real `tether up` on loopback.
//! Prints figures; asserts nothing about speed.
//!
//! - RPC edge -> daemon -> edge: `GET /v1/hosts/{id}/info` (HTTP to the Worker, the host's
//!   object, the WebSocket to the daemon and back), one at a time and N callers at once.
//! - The raw tunnel without HTTP or the daemon: this program connects as a second host (signed
//!   nonce, host token, WebSocket) and times `edge.ping` requests the host's object answers.
//! - Bytes through one byte channel, daemon -> edge, under credit flow control:
//!   `POST /v1/hosts/{id}/speedtest` (the daemon's `source` channel into a crediting sink in
//!   the host's object), timed by the object and by this program. Channels the other way (edge
//!   -> daemon) are not served by either side yet, so that direction is not measured through a
//!   channel; instead this program, as a host, pushes `Data` frames into its object (decoded and
//!   dropped there), which bounds the host -> edge frame rate. Plus the frame codec in process.
//! - The daemon's resident memory (VmRSS) after 10 s connected and idle, and after the load.
//!
//!   cargo build -p tether && cargo bench -p tether-tests --bench tunnel
//!   cargo build --release -p tether && TETHER_BIN=target/release/tether cargo bench -p tether-tests --bench tunnel
//!   BENCH_REQUESTS=4000 BENCH_CONCURRENCY=32 BENCH_MB=128 ...   # defaults 2000, 16, 64
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::identity::Identity;
use tether_durable::tunnel::{self, Frame, RpcResult, SUBPROTOCOL};
use tether_tests::{Api, HostHome, TetherDaemon, Worker, pair, tether_bin};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

use tether_tests::bench::{env_or, percentile};

fn report(name: &str, n: usize, concurrency: usize, total: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{name:<24} {n:>5} calls, {concurrency:>3} in flight: {:>7.0} calls/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        n as f64 / total.as_secs_f64(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
    );
}

/// `n` info calls, `concurrency` at a time, spread over `apis` (each key may make 1200 calls a
/// minute).
async fn info_calls(apis: &[Api], id: &str, n: usize, concurrency: usize) {
    let sem = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let req = apis[i % apis.len()].request("GET", &format!("/v1/hosts/{id}/info"));
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let res = req.send().await.expect("request");
            let status = res.status().as_u16();
            let body = res.bytes().await.unwrap();
            drop(permit);
            (status, body, t.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for h in handles {
        let (status, body, d) = h.await.unwrap();
        assert_eq!(status, 200, "info: {}", String::from_utf8_lossy(&body));
        lat.push(d);
    }
    report(
        "info (HTTP->daemon)",
        n,
        concurrency,
        started.elapsed(),
        lat,
    );
}

/// Connects to host `id`'s tunnel as that host, like the daemon does.
async fn connect_as_host(url: &str, id: &str, identity: &Identity) -> Ws {
    let anon = Api::anonymous(url);
    let (s, n) = anon
        .call("POST", &format!("/v1/hosts/{id}/nonce"), None)
        .await;
    assert_eq!(s, 201, "{n}");
    let nonce = n["nonce"].as_str().unwrap();
    let (s, t) = anon
        .post(
            &format!("/v1/hosts/{id}/token"),
            json!({"nonce": nonce, "signature": identity.sign_auth(id, nonce)}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let mut req = format!("{}/v1/hosts/{id}/tunnel", url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    let token = t["token"].as_str().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req.headers_mut()
        .insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn feed(ws: &mut Ws, frame: &Frame) {
    ws.feed(Message::Binary(tunnel::encode(frame).unwrap().into()))
        .await
        .unwrap();
}

/// The next frame from the edge that is not one of its pings (which are answered).
async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => match tunnel::decode(&b).unwrap() {
                Frame::Ping { nonce } => {
                    feed(ws, &Frame::Pong { nonce }).await;
                    ws.flush().await.unwrap();
                }
                // Commands are for daemons; this host has none queued.
                Frame::Command { .. } => {}
                f => return f,
            },
            Some(Ok(_)) => {}
            other => panic!("the tunnel ended: {other:?}"),
        }
    }
}

/// `n` `edge.ping` requests over the raw tunnel, `concurrency` in flight (pipelined on the one
/// socket, as the daemon's RPCs are).
async fn raw_pings(ws: &mut Ws, next_id: &mut u64, n: usize, concurrency: usize) {
    let mut in_flight: HashMap<u64, Instant> = HashMap::new();
    let mut lat = Vec::with_capacity(n);
    let mut sent = 0;
    let started = Instant::now();
    while lat.len() < n {
        let mut fed = false;
        while sent < n && in_flight.len() < concurrency {
            *next_id += 1;
            feed(
                ws,
                &Frame::Request {
                    id: *next_id,
                    method: "edge.ping".into(),
                    deadline_ms: 10_000,
                    body: b"{}".to_vec(),
                },
            )
            .await;
            in_flight.insert(*next_id, Instant::now());
            sent += 1;
            fed = true;
        }
        if fed {
            ws.flush().await.unwrap();
        }
        match next_frame(ws).await {
            Frame::Response { id, result } => {
                assert!(matches!(result, RpcResult::Ok(_)), "edge.ping: {result:?}");
                let t = in_flight
                    .remove(&id)
                    .expect("an answer to a request we made");
                lat.push(t.elapsed());
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    report(
        "edge.ping (raw tunnel)",
        n,
        concurrency,
        started.elapsed(),
        lat,
    );
}

/// Sends `total` bytes as `Data` frames of `chunk` bytes on one channel, then a request: the
/// object handles a socket's messages in order, so its answer means every frame was taken in.
async fn data_upstream(ws: &mut Ws, next_id: &mut u64, total: usize, chunk: usize) {
    let payload = vec![0x5a_u8; chunk];
    let frames = total / chunk;
    let started = Instant::now();
    for i in 0..frames {
        feed(
            ws,
            &Frame::Data {
                channel: 1,
                bytes: payload.clone(),
            },
        )
        .await;
        if i % 16 == 15 {
            ws.flush().await.unwrap();
        }
    }
    *next_id += 1;
    feed(
        ws,
        &Frame::Request {
            id: *next_id,
            method: "edge.ping".into(),
            deadline_ms: 60_000,
            body: b"{}".to_vec(),
        },
    )
    .await;
    ws.flush().await.unwrap();
    match next_frame(ws).await {
        Frame::Response { id, .. } if id == *next_id => {}
        other => panic!("unexpected frame {other:?}"),
    }
    let secs = started.elapsed().as_secs_f64();
    let mb = (frames * chunk) as f64 / 1e6;
    println!(
        "Data host->edge, {:>3} KiB frames: {:>7.1} MB/s   ({mb:.0} MB in {secs:.2} s, one channel, decoded and dropped by the object)",
        chunk / 1024,
        mb / secs
    );
}

/// Encode + decode of `Data` frames in this process: the codec's own ceiling.
fn codec(chunk: usize) {
    let frame = Frame::Data {
        channel: 1,
        bytes: vec![0x5a; chunk],
    };
    let rounds = (256 * 1024 * 1024) / chunk;
    let started = Instant::now();
    for _ in 0..rounds {
        let bytes = tunnel::encode(&frame).unwrap();
        let back = tunnel::decode(&bytes).unwrap();
        std::hint::black_box(back);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "codec encode+decode, {:>3} KiB Data frames: {:>7.0} MB/s (in process)",
        chunk / 1024,
        (rounds * chunk) as f64 / 1e6 / secs
    );
}

/// The daemon sends `megabytes` MiB through one byte channel (three runs, after a warm-up).
async fn speedtest(api: &Api, id: &str, megabytes: usize) {
    let bytes = megabytes * 1024 * 1024;
    let (s, v) = api
        .post(
            &format!("/v1/hosts/{id}/speedtest"),
            json!({"bytes": 1024 * 1024}),
        )
        .await;
    assert_eq!(s, 200, "speedtest: {v}");
    for _ in 0..3 {
        let t = Instant::now();
        let (s, v) = api
            .post(
                &format!("/v1/hosts/{id}/speedtest"),
                json!({"bytes": bytes}),
            )
            .await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(s, 200, "speedtest: {v}");
        println!(
            "byte channel daemon->edge: {:>7.1} MB/s in the object ({} MB in {} ms), {:>7.1} MB/s seen by the caller",
            v["mb_per_s"].as_f64().unwrap(),
            bytes / 1_000_000,
            v["elapsed_ms"],
            bytes as f64 / 1e6 / secs,
        );
    }
}

async fn wait_online(api: &Api, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, h) = api.get(&format!("/v1/hosts/{id}")).await;
        assert_eq!(s, 200, "{h}");
        if h["online"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "the daemon did not connect: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_REQUESTS", 2000);
    let concurrency = env_or("BENCH_CONCURRENCY", 16);
    let megabytes = env_or("BENCH_MB", 64);
    let bin = tether_bin().expect("the tether binary");
    println!(
        "daemon: {} ({})",
        bin.display(),
        if bin.components().any(|c| c.as_os_str() == "release") {
            "release build"
        } else {
            "debug build: set TETHER_BIN=target/release/tether for release figures"
        }
    );

    let worker = Worker::start(None).expect("starting the Worker");
    let owner = worker.bootstrap().await.unwrap();
    let owner_api = Api::new(&worker.url, &owner);
    // Several member keys, so the per-key rate limit (1200 a minute) is not what is measured.
    let mut apis = vec![owner_api.clone()];
    for i in 0..(n / 600 + 1) {
        let (s, m): (u16, Value) = owner_api
            .post(
                "/v1/members",
                json!({"email": format!("bench{i}@example.com"), "name": "Bench", "role": "member"}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        apis.push(owner_api.with(m["api_key"]["secret"].as_str().unwrap()));
    }

    let home = HostHome::new("bench-daemon");
    let id = pair(&owner_api, &worker.url, &home, "bench-daemon")
        .await
        .unwrap();
    let mut daemon = TetherDaemon::start(&home).unwrap();
    wait_online(&owner_api, &id).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "daemon RSS, idle 10 s after connecting: {} KiB",
        daemon.rss_kib().expect("the daemon runs")
    );

    // Warm up the isolate, the object and the connections.
    info_calls(&apis, &id, 20, 4).await;
    info_calls(&apis, &id, 200.min(n), 1).await;
    info_calls(&apis, &id, n, concurrency).await;

    let raw_home = HostHome::new("bench-raw");
    let raw_id = pair(&owner_api, &worker.url, &raw_home, "bench-raw")
        .await
        .unwrap();
    let identity = Identity::load(&raw_home.key_file()).unwrap();
    let mut ws = connect_as_host(&worker.url, &raw_id, &identity).await;
    let mut next_id = 0;
    raw_pings(&mut ws, &mut next_id, 100, 1).await;
    raw_pings(&mut ws, &mut next_id, n, 1).await;
    raw_pings(&mut ws, &mut next_id, n, concurrency).await;

    for chunk in [64 * 1024, 256 * 1024] {
        data_upstream(&mut ws, &mut next_id, megabytes * 1024 * 1024, chunk).await;
    }
    for chunk in [64 * 1024, 256 * 1024] {
        codec(chunk);
    }
    let _ = ws.close(None).await;

    speedtest(&owner_api, &id, megabytes).await;
    // The channel from a host's side: the edge accepts none.
    println!(
        "byte channel edge -> daemon: not measured (no channel kind is served in that direction yet)"
    );

    println!(
        "daemon RSS after {} info calls: {} KiB",
        20 + 200.min(n) + n,
        daemon.rss_kib().expect("the daemon runs")
    );
    let status = daemon.stop().await;
    assert!(status.success(), "{}", daemon.log());
}
