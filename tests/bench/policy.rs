//! Guardrail policy benchmark, side by side in one run: the cost per event of a Wasm policy
//! (the example `secret-guard` component under the daemon's policy host: a fresh instance per
//! event, and one reused instance) against the equivalent shell hook, a fork/exec of
//! `/bin/sh -c 'grep -q ...'` reading the same hook JSON on stdin, as agents run command
//! hooks. Prints figures and the ratio; asserts only that both sides reach the same verdicts.
//!
//!   bash wasm-plugins/build.sh && cargo bench -p tether-tests --bench policy
//!   BENCH_EVENTS=20000 BENCH_SHELL=2000 ...   # defaults 5000, 500
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tether::hooks::{Agent, protocol};
use tether::policy::{FailureMode, Limits, PolicyHost};
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
        let t = Instant::now();
        let mut child = Command::new("/bin/sh")
            .args([
                "-c",
                "grep -qE 'AKIA[0-9A-Z]{16}' && { echo 'a cloud key' >&2; exit 2; } || exit 0",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&inputs[n % 2])
            .unwrap();
        let code = child.wait().unwrap().code();
        sh.push(t.elapsed());
        assert_eq!(code, Some(if n % 2 == 1 { 2 } else { 0 }));
    }
    let fresh = report("wasm, fresh instance per event", fresh);
    let reused = report("wasm, one reused instance", reused);
    let shell = report("shell hook (fork/exec sh + grep)", sh);
    println!(
        "ratio shell / wasm: {:.1}x (fresh instance), {:.1}x (reused instance)",
        shell / fresh,
        shell / reused
    );
}
