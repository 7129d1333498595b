//! Guardrail policy benchmark, side by side in one run: the cost per event of a Wasm policy
//! (the example `secret-guard` component under the daemon's policy host: a fresh instance per
//! event, and one reused instance) against the equivalent shell hook, a fork/exec of
//! `/bin/sh -c 'grep -q ...'` reading the same hook JSON on stdin, as agents run command
//! hooks. Then the whole `tether hook` process as an agent runs it: exec, stdin, the daemon's
//! control socket (served here by the daemon's own code with the same policy), the answer;
//! and the same with the daemon down (the failure mode answers). Prints figures and the
//! ratios; asserts only that every side reaches the same verdicts.
//!
//!   bash wasm-plugins/build.sh && cargo build --release -p tether &&
//!     TETHER_BIN=target/release/tether cargo bench -p tether-tests --bench policy
//!   BENCH_EVENTS=20000 BENCH_SHELL=2000 BENCH_HOOK=1000 ...   # defaults 5000, 500, 300
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::control::{self, SessionGate};
use tether::guardrails::Guardrails;
use tether::hooks::{Agent, protocol};
use tether::paths::Paths;
use tether::policy::{FailureMode, Limits, PolicyHost};
use tether::state::State;
use tether_tests::bench::{env_or, percentile};

fn report(name: &str, mut lat: Vec<Duration>) -> f64 {
    lat.sort();
    let mean = lat.iter().sum::<Duration>().as_secs_f64() * 1e6 / lat.len() as f64;
    println!(
        "{name:<34} {:>6} events   mean {mean:>9.1} us   p50 {:>9.1} us   p99 {:>9.1} us",
        lat.len(),
        percentile(&lat, 0.50) * 1e3,
        percentile(&lat, 0.99) * 1e3,
    );
    mean
}

fn main() {
    let events = env_or("BENCH_EVENTS", 5000);
    let shell = env_or("BENCH_SHELL", 500);
    let wasm = std::fs::read(tether_tests::root().join("wasm-plugins/dist/secret-guard.wasm"))
        .expect("build the policies first: bash wasm-plugins/build.sh");
    let host = PolicyHost::new(Limits::default(), None).unwrap();
    let policy = host.load(&wasm, "{}", FailureMode::Deny, None).unwrap();
    // Half the prompts carry a key, like a mixed workload.
    let inputs: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            let prompt = if i == 0 {
                "please refactor the login handler and add tests".to_owned()
            } else {
                "deploy with AKIAIOSFODNN7EXAMPLE please".to_owned()
            };
            json!({"session_id": "s", "cwd": "/w", "hook_event_name": "UserPromptSubmit", "prompt": prompt})
                .to_string()
                .into_bytes()
        })
        .collect();
    let parsed: Vec<_> = inputs
        .iter()
        .map(|i| protocol::parse(Agent::ClaudeCode, i).unwrap().unwrap())
        .collect();
    println!(
        "policy benchmark: secret-guard ({} bytes) vs /bin/sh + grep",
        wasm.len()
    );

    let mut fresh = Vec::with_capacity(events);
    for n in 0..events {
        let t = Instant::now();
        let c = host.decide(std::slice::from_ref(&policy), &parsed[n % 2]);
        fresh.push(t.elapsed());
        assert_eq!(matches!(c.verdict, protocol::Verdict::Deny(_)), n % 2 == 1);
    }
    let mut warm = host.warm(&policy).unwrap();
    let mut reused = Vec::with_capacity(events);
    for n in 0..events {
        let t = Instant::now();
        let d = warm.evaluate(&parsed[n % 2]).unwrap();
        reused.push(t.elapsed());
        assert_eq!(d, if n % 2 == 1 { "deny" } else { "allow" });
    }
    let mut sh = Vec::with_capacity(shell);
    for n in 0..shell {
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "grep -qE 'AKIA[0-9A-Z]{16}' && { echo 'a cloud key' >&2; exit 2; } || exit 0",
        ]);
        let (took, code) = run_hook(cmd, &inputs[n % 2]);
        sh.push(took);
        assert_eq!(code, Some(if n % 2 == 1 { 2 } else { 0 }));
    }
    let (up, down) = hook_process(&inputs, env_or("BENCH_HOOK", 300));
    let fresh = report("wasm, fresh instance per event", fresh);
    let reused = report("wasm, one reused instance", reused);
    let shell = report("shell hook (fork/exec sh + grep)", sh);
    let up = report("`tether hook` process, daemon up", up);
    let down = report("`tether hook` process, daemon down", down);
    println!(
        "ratio shell / wasm: {:.1}x (fresh instance), {:.1}x (reused instance)",
        shell / fresh,
        shell / reused
    );
    println!(
        "ratio `tether hook` / shell hook: {:.2}x (daemon up), {:.2}x (daemon down)",
        up / shell,
        down / shell
    );
}

/// Runs a hook command as agents do (the event on stdin, output ignored): its time and exit
/// code.
fn run_hook(mut cmd: Command, input: &[u8]) -> (Duration, Option<i32>) {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let code = child.wait().unwrap().code();
    (t.elapsed(), code)
}

/// Every session is Tether's, and no prompt was judged before.
struct AllLive;

impl SessionGate for AllLive {
    fn is_live(&self, _: &str) -> bool {
        true
    }
    fn already_judged(&self, _: &str, _: &str) -> bool {
        false
    }
}

/// Runs `tether hook` `n` times per side with the daemon's control socket up (the daemon's
/// own server code and policy set, with secret-guard failing closed), then down.
fn hook_process(inputs: &[Vec<u8>], n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let bin = tether_tests::tether_bin().unwrap();
    let dir = tether_tests::TempDir::new("hook-bench");
    let paths = Paths::new(dir.path().join("config"), dir.path().join("state"));
    let config = format!(
        "[[policies]]\npath = {:?}\n",
        tether_tests::root().join("wasm-plugins/dist/secret-guard.wasm")
    );
    std::fs::create_dir_all(&paths.config_dir).unwrap();
    std::fs::create_dir_all(&paths.state_dir).unwrap();
    std::fs::write(paths.config_file(), config).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(async {
            let state = Arc::new(State::open_in_memory().await.unwrap());
            let guardrails = Arc::new(
                Guardrails::load(paths.clone(), state, Limits::default())
                    .await
                    .unwrap(),
            );
            let listener = control::bind(&paths.control_socket()).unwrap();
            // No edge here: the agents' MCP requests are not part of this benchmark.
            let http = reqwest::Client::new();
            let identity = tether::identity::Identity::generate().unwrap();
            let auth = tether::host_auth::HostAuth::new(
                "http://127.0.0.1:9",
                "hst_bench",
                identity,
                http.clone(),
            );
            let relay = Arc::new(tether::mcp::relay::Relay::new(Arc::new(auth), http));
            let serving = control::serve(listener, guardrails, Arc::new(AllLive), relay);
            Ok::<_, ()>(tokio::spawn(serving))
        })
        .unwrap();
    let run = |n: usize, clean_prompt_exit: i32| {
        (0..n)
            .map(|i| {
                let mut cmd = Command::new(&bin);
                cmd.args(["hook", "--agent", "claude-code"])
                    .env("TETHER_CONFIG_DIR", &paths.config_dir)
                    .env("TETHER_STATE_DIR", &paths.state_dir)
                    .env("TETHER_SESSION_ID", "ses_bench");
                let (took, code) = run_hook(cmd, &inputs[i % 2]);
                // Up: the key is denied, the rest allowed. Down: all denied (fail closed).
                let expect = if i % 2 == 1 { 2 } else { clean_prompt_exit };
                assert_eq!(code, Some(expect), "event {i}");
                took
            })
            .collect::<Vec<_>>()
    };
    let up = run(n, 0);
    server.abort();
    rt.block_on(async { tokio::task::yield_now().await });
    drop(rt);
    std::fs::remove_file(paths.control_socket()).unwrap();
    let down = run(n, 2);
    (up, down)
}
