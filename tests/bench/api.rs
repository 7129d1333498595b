//! API benchmark: task create and task list against the built Worker in workerd (Miniflare) on
//! loopback, plus the Worker's wasm size. Prints figures; asserts nothing about speed.
//!
//!   cargo bench -p tether-tests --bench api            # defaults: 2000 requests, 16 in flight
//!   BENCH_REQUESTS=5000 BENCH_CONCURRENCY=32 cargo bench -p tether-tests --bench api
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tether_tests::{Api, Worker, root};
use tokio::sync::Semaphore;

use tether_tests::bench::{env_or, percentile};

/// Runs `n` requests, `concurrency` at a time, spreading them over `apis` (the per-key rate
/// limit is 1200 a minute), and prints requests/s, p50 and p99.
async fn run(
    name: &str,
    apis: &[Api],
    n: usize,
    concurrency: usize,
    make: fn(&Api, usize) -> reqwest::RequestBuilder,
    expect: u16,
) {
    let sem = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let api = apis[i % apis.len()].clone();
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let res = make(&api, i).send().await.expect("request");
            let status = res.status().as_u16();
            let _ = res.bytes().await;
            drop(permit);
            (status, t.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for h in handles {
        let (status, d) = h.await.unwrap();
        assert_eq!(status, expect, "{name}: unexpected status");
        latencies.push(d);
    }
    let total = started.elapsed();
    latencies.sort();
    println!(
        "{name:<12} {n} requests, {concurrency} in flight: {:>7.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        n as f64 / total.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_REQUESTS", 2000);
    let concurrency = env_or("BENCH_CONCURRENCY", 16);
    let wasm = root().join("edge/build/index_bg.wasm");
    let raw = std::fs::metadata(&wasm)
        .expect("build the Worker first: bash edge/build.sh")
        .len();
    let gz = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -9 -c {} | wc -c", wasm.display()))
        .output()
        .unwrap();
    println!(
        "Worker wasm  {raw} bytes raw, {} bytes gzip",
        String::from_utf8_lossy(&gz.stdout).trim()
    );

    let worker = Worker::start(None).unwrap();
    let owner = worker.bootstrap().await.unwrap();
    let api = Api::new(&worker.url, &owner);
    // Five runs of n requests; the per-key limit is 1200 a minute.
    let keys = (5 * n / 1000 + 1).clamp(4, 45);
    let mut apis = vec![api.clone()];
    for i in 0..keys {
        let (_, k) = api
            .post("/v1/api-keys", json!({"name": format!("bench {i}")}))
            .await;
        apis.push(api.with(k["secret"].as_str().unwrap()));
    }
    println!(
        "Miniflare on {} (loopback), {} API keys",
        worker.url,
        apis.len()
    );

    // Warm the isolate and the org object.
    for i in 0..50 {
        apis[i % apis.len()]
            .post("/v1/tasks", json!({"title": "warm-up"}))
            .await;
    }
    // Baselines: the runtime alone, then one D1 lookup (the key) with no org object involved.
    run(
        "health",
        &apis,
        n,
        concurrency,
        |api, _| api.request("GET", "/health"),
        200,
    )
    .await;
    run(
        "me (key)",
        &apis,
        n,
        concurrency,
        |api, _| api.request("GET", "/v1/me"),
        200,
    )
    .await;
    run("task create", &apis, n, concurrency, |api, i| {
        api.request("POST", "/v1/tasks").json(&json!({"title": format!("bench task {i}"), "labels": ["bench"], "priority": "medium"}))
    }, 201)
    .await;
    run(
        "task list",
        &apis,
        n,
        concurrency,
        |api, _| api.request("GET", "/v1/tasks?limit=50"),
        200,
    )
    .await;
    run(
        "task get",
        &apis,
        n,
        concurrency,
        |api, i| api.request("GET", &format!("/v1/tasks/TET-{}", 51 + i % 1000)),
        200,
    )
    .await;
}
