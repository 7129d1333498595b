//! Mirror benchmark: the built Worker in workerd and the daemon's sync component
//! (`tether::mirror::Syncer`, the code `tether up` runs) in this process. Prints figures;
//! asserts only that every write arrived.
//!
//! - Write -> visible in N mirrors: N in-process mirrors, each a host of its own (its own key,
//!   pairing and host tokens) with its own state database, syncing all six tables live. A task
//!   is created or renamed through the REST API; the time from just before the request to the
//!   row being in each mirror's database (applied and committed). p50/p99 over every mirror
//!   and write, and p50/p99 of the slowest mirror per write ("in all N").
//! - Catch-up: ROWS tasks created through the REST API (spread over API keys: 1200 requests
//!   a minute each), then a fresh mirror syncs the tasks table (and the five statuses) from
//!   offset -1 to up-to-date: rows/s. Then the mirror's own tasks_list query at that size.
//!
//!   cargo bench -p tether-tests --bench mirror
//!   BENCH_MIRRORS=50 BENCH_WRITES=30 BENCH_ROWS=100000 cargo bench -p tether-tests --bench mirror
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tether::api::{ApiClient, PairingRequest};
use tether::host_auth::HostAuth;
use tether::identity::Identity;
use tether::mirror::{Condition, Filter, Mirror, Syncer};
use tether_tests::bench::{env_or, percentile};
use tether_tests::{Api, TempDir, Worker};
use tokio::sync::Semaphore;

/// A host of the org: paired through the API with a fresh key, its token cache.
async fn host(api: &Api, url: &str, http: &reqwest::Client, n: usize) -> Arc<HostAuth> {
    let identity = Identity::generate().unwrap();
    let started = ApiClient::new(url, None)
        .unwrap()
        .start_pairing(&PairingRequest {
            public_key: identity.public_key_base64url(),
            name: format!("bench-mirror-{n}"),
            os: "linux".into(),
            arch: "x86_64".into(),
            agents: vec![],
        })
        .await
        .unwrap();
    let (s, h) = api
        .post(&format!("/v1/pairing/{}/approve", started.code), json!({}))
        .await;
    assert_eq!(s, 201, "{h}");
    Arc::new(HostAuth::new(
        url,
        h["id"].as_str().unwrap(),
        identity,
        http.clone(),
    ))
}

/// A mirror in its own state database under `dir`.
async fn mirror(dir: &TempDir, n: usize) -> Arc<Mirror> {
    let path = dir.path().join(format!("m{n}/state.db"));
    Arc::new(Mirror::open(&path).await.unwrap())
}

/// Waits until `mirror` has task `id` titled `title`, looking again after every change.
async fn visible(
    mirror: &Mirror,
    mut changes: tokio::sync::watch::Receiver<u64>,
    id: &str,
    title: &str,
) {
    let filter = Filter::default()
        .with(Condition::Eq("id".into(), id.into()))
        .with(Condition::Eq("title".into(), title.into()));
    loop {
        if !mirror.rows("tasks", &filter).await.unwrap().0.is_empty() {
            return;
        }
        changes.changed().await.unwrap();
    }
}

/// Waits until `mirror`'s `tables` are all up to date.
async fn synced(mirror: &Mirror, tables: &[&str]) {
    let mut changes = mirror.changes();
    loop {
        changes.mark_unchanged();
        if mirror.staleness(tables).await.unwrap().live {
            return;
        }
        tokio::time::timeout(Duration::from_secs(1), changes.changed())
            .await
            .ok();
    }
}

#[tokio::main]
async fn main() {
    let n_mirrors = env_or("BENCH_MIRRORS", 50);
    let writes = env_or("BENCH_WRITES", 30);
    let rows = env_or("BENCH_ROWS", 100_000);
    let worker = Worker::start(None).unwrap();
    let owner = worker.bootstrap().await.unwrap();
    let api = Api::new(&worker.url, &owner);
    let (_, me) = api.get("/v1/me").await;
    let org = me["org"]["id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let sync_http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let dir = TempDir::new("bench-mirror");
    println!(
        "mirror benchmark on {} (loopback): {n_mirrors} mirrors, {writes} writes, {rows} rows",
        worker.url
    );

    // N hosts, each with its own mirror syncing every table.
    let mut auths = Vec::new();
    for i in 0..n_mirrors {
        auths.push(host(&api, &worker.url, &http, i).await);
    }
    let mut mirrors = Vec::new();
    let mut syncers = Vec::new();
    for (i, auth) in auths.iter().enumerate() {
        let m = mirror(&dir, i).await;
        let s = Syncer::connect(m.clone(), sync_http.clone(), auth.clone(), &org).unwrap();
        syncers.push(tokio::spawn(async move { s.run().await }));
        mirrors.push(m);
    }
    let t = Instant::now();
    for m in &mirrors {
        synced(m, tether::mirror::TABLES).await;
    }
    println!(
        "{n_mirrors} mirrors synced and live in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Write -> visible in every mirror.
    let mut each = Vec::new();
    let mut all = Vec::new();
    let mut last_id = String::new();
    for w in 0..writes {
        let title = format!("bench write {w}");
        let receivers: Vec<_> = mirrors
            .iter()
            .map(|m| {
                let mut rx = m.changes();
                rx.mark_unchanged();
                rx
            })
            .collect();
        let t0 = Instant::now();
        let id = if w % 2 == 0 || last_id.is_empty() {
            let (s, t) = api.post("/v1/tasks", json!({"title": title})).await;
            assert_eq!(s, 201, "{t}");
            t["id"].as_str().unwrap().to_owned()
        } else {
            let (s, t) = api
                .patch(&format!("/v1/tasks/{last_id}"), json!({"title": title}))
                .await;
            assert_eq!(s, 200, "{t}");
            last_id.clone()
        };
        let waits = mirrors.iter().zip(receivers).map(|(m, rx)| {
            let (id, title) = (id.clone(), title.clone());
            async move {
                tokio::time::timeout(Duration::from_secs(60), visible(m, rx, &id, &title))
                    .await
                    .expect("a write reached every mirror within 60 s");
                t0.elapsed()
            }
        });
        let mut seen = futures_util::future::join_all(waits).await;
        seen.sort();
        all.push(*seen.last().unwrap());
        each.extend(seen);
        last_id = id;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    each.sort();
    all.sort();
    println!(
        "write -> visible in a mirror   {:>5} samples   p50 {:>7.1} ms   p99 {:>7.1} ms",
        each.len(),
        percentile(&each, 0.50),
        percentile(&each, 0.99),
    );
    println!(
        "write -> visible in all {n_mirrors:<3}   {:>5} writes    p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    for s in syncers {
        s.abort();
    }
    drop(mirrors);

    // Catch-up: ROWS tasks, then a fresh mirror from offset -1.
    let mut apis = vec![api.clone()];
    for i in 0..45 {
        let (s, k) = api
            .post("/v1/api-keys", json!({"name": format!("bench {i}")}))
            .await;
        assert_eq!(s, 201, "{k}");
        apis.push(api.with(k["secret"].as_str().unwrap()));
    }
    let (_, existing) = api.get("/v1/tasks?limit=1").await;
    let have = existing["data"][0]["number"].as_u64().unwrap_or(0) as usize;
    let to_create = rows.saturating_sub(have);
    let t = Instant::now();
    let sem = Arc::new(Semaphore::new(env_or("BENCH_CONCURRENCY", 32)));
    let limited = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(to_create);
    for i in 0..to_create {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let api = apis[i % apis.len()].clone();
        let (limited, dropped) = (limited.clone(), dropped.clone());
        handles.push(tokio::spawn(async move {
            let body = json!({"title": format!("catch-up task {i}"), "labels": ["bench"],
                              "description": "A task for the catch-up benchmark."});
            // Retried on 429 (the per-key limit) and on a dropped connection (a loaded
            // workerd now and then closes a kept-alive one as a request goes out).
            loop {
                match api.request("POST", "/v1/tasks").json(&body).send().await {
                    Ok(res) if res.status() == 201 => break,
                    Ok(res) if res.status() == 429 => {
                        limited.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok(res) => {
                        let status = res.status();
                        panic!(
                            "creating a task: {status} {}",
                            res.text().await.unwrap_or_default()
                        )
                    }
                    // (A create whose answer was lost may have happened: one task more, which
                    // the count below allows for.)
                    Err(_) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            drop(permit);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    println!(
        "created {to_create} tasks in {:.1} s ({:.0}/s; retried: {} rate-limited, {} dropped connections)",
        t.elapsed().as_secs_f64(),
        to_create as f64 / t.elapsed().as_secs_f64(),
        limited.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
    );

    let fresh = mirror(&dir, 1_000).await;
    let syncer = Syncer::connect(fresh.clone(), sync_http.clone(), auths[0].clone(), &org)
        .unwrap()
        .with_tables(&["task_statuses", "tasks"]);
    let t = Instant::now();
    let task = tokio::spawn(async move { syncer.run().await });
    synced(&fresh, &["task_statuses", "tasks"]).await;
    let took = t.elapsed();
    task.abort();
    let count: i64 = fresh
        .counts()
        .await
        .unwrap()
        .iter()
        .filter(|(t, _)| t == "tasks")
        .map(|(_, n)| *n)
        .sum();
    let (_, latest) = api.get("/v1/tasks?limit=1").await;
    let newest: &Value = &latest["data"][0]["number"];
    assert_eq!(
        Some(count as u64),
        newest.as_u64(),
        "every task is mirrored (none was deleted)"
    );
    println!(
        "catch-up of {count} task rows    {:>6.2} s   {:>8.0} rows/s",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );

    // Reading it back: what `tether tasks list` and the agents' tasks_list cost at this size.
    for (what, query) in [
        ("newest 50", json!({})),
        ("newest 50 labelled", json!({"label": "bench"})),
        (
            "unassigned, 200",
            json!({"assignee_id": "none", "limit": 200}),
        ),
    ] {
        let query = serde_json::from_value(query).unwrap();
        let t = Instant::now();
        let reps = 20;
        for _ in 0..reps {
            let page = tether::mirror::views::tasks(&fresh, &query)
                .await
                .unwrap()
                .unwrap();
            assert!(!page.data.is_empty());
        }
        println!(
            "mirror tasks_list, {what:<18} over {count} rows: {:>7.1} ms",
            t.elapsed().as_secs_f64() * 1e3 / f64::from(reps)
        );
    }
}
