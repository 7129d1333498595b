//! Agent sessions end to end: the Worker in workerd, a real `tether up` (through a proxy the
//! tests can cut), real git, and `tests/fixtures/fake-agent.py` as the agent: an interactive
//! CLI that draws a coloured banner, reads keystrokes, writes files in its worktree and exits
//! with the code it is told. It logs every byte it writes; the tests compare that log, byte for
//! byte, with what a remote reader of the session's stream received.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether::streams::{Offset, StreamClient};
use tether_tests::{
    Api, HostHome, RestartableEdge, StallProxy, TetherDaemon, agent_transcript, poll_until,
    session_machine,
};

/// One machine with a linked checkout, its daemon, and the Worker it talks to (through a
/// proxy).
struct Rig {
    edge: RestartableEdge,
    api: Api,
    key: String,
    proxy: StallProxy,
    home: HostHome,
    host_id: String,
    daemon: Option<TetherDaemon>,
}

impl Rig {
    async fn start(label: &str, presets: &str) -> Self {
        let edge = RestartableEdge::start(label).unwrap();
        let key = edge.worker().bootstrap().await.unwrap();
        let api = Api::new(&edge.url(), &key);
        let proxy = StallProxy::start(&edge.url()).await;
        let home = HostHome::new(label);
        let host_id = session_machine(&api, &proxy.url, &home, label, presets)
            .await
            .unwrap();
        let mut rig = Self {
            edge,
            api,
            key,
            proxy,
            home,
            host_id,
            daemon: None,
        };
        rig.start_daemon().await;
        rig
    }

    async fn start_daemon(&mut self) {
        self.daemon = Some(TetherDaemon::start(&self.home).unwrap());
        self.wait_online().await;
    }

    fn daemon(&mut self) -> &mut TetherDaemon {
        self.daemon.as_mut().unwrap()
    }

    fn url(&self) -> String {
        self.edge.url()
    }

    async fn wait_online(&self) {
        let id = self.host_id.clone();
        poll_until(
            "the host online",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let (s, h) = self.api.get(&format!("/v1/hosts/{id}")).await;
                if s == 200 && h["online"] == true {
                    Ok(())
                } else {
                    Err(h.to_string())
                }
            },
        )
        .await;
    }

    /// Stops the Worker and starts it again on the same port with the same state.
    async fn restart_edge(&mut self) {
        self.edge.up().unwrap();
        // A fresh client: the old one's pooled connections died with the old edge.
        self.api = Api::new(&self.url(), &self.key);
    }

    async fn start_session(&self, body: Value) -> Value {
        let (s, v) = self.api.post("/v1/sessions", body).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    /// Starts a session, follows its stream, and waits until it runs and the agent is up (its
    /// prompt line drawn: its terminal is raw and its SIGTERM handler set, as a real CLI's after
    /// start-up; keys typed earlier would be echoed by the not yet raw terminal). Answers the
    /// running session, the bytes seen so far (growing) and the reader.
    async fn start_running(&mut self, body: Value) -> (Value, Seen, Reader) {
        let s = self.start_session(body).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let (seen, reader) = read_stream(
            self.url(),
            self.key.clone(),
            s["stream_path"].as_str().unwrap().to_owned(),
        );
        let running = self
            .wait_status(&id, "running", Duration::from_secs(30))
            .await;
        wait_seen(&seen, "prompt:", Duration::from_secs(10)).await;
        (running, seen, reader)
    }

    async fn session(&self, id: &str) -> Value {
        let (s, v) = self.api.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn wait_status(&mut self, id: &str, status: &str, within: Duration) -> Value {
        let log = self
            .daemon
            .as_ref()
            .map(TetherDaemon::log)
            .unwrap_or_default();
        poll_until(
            &format!("session {status}"),
            within,
            Duration::from_millis(100),
            || async {
                let (s, v) = self.api.get(&format!("/v1/sessions/{id}")).await;
                if s == 200 && v["status"] == status {
                    Ok(v)
                } else {
                    Err(format!("{v}\n{log}"))
                }
            },
        )
        .await
    }

    /// Types `text` into the session, retrying while the tunnel is away (503).
    async fn type_in(&self, id: &str, text: &str) {
        poll_until(
            "input delivered",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let (s, v) = self
                    .api
                    .post(&format!("/v1/sessions/{id}/input"), json!({"data": text}))
                    .await;
                if s == 200 {
                    Ok(())
                } else {
                    Err(format!("{s} {v}"))
                }
            },
        )
        .await;
    }

    /// What the fake agent wrote in session `id`.
    fn transcript(&self, id: &str) -> Vec<u8> {
        agent_transcript(&self.home, id)
    }

    async fn tether(&self, args: &[&str]) -> std::process::Output {
        let cmd = self.home.command(args).unwrap();
        tokio::process::Command::from(cmd).output().await.unwrap()
    }
}

/// A remote reader of a stream: catch-up then long-polls, riding out edge restarts, until the
/// stream is closed. `seen` grows as bytes arrive.
type Seen = Arc<Mutex<Vec<u8>>>;
type Reader = tokio::task::JoinHandle<Vec<u8>>;

fn read_stream(url: String, key: String, path: String) -> (Seen, Reader) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = seen.clone();
    let task = tokio::spawn(async move {
        let client = StreamClient::new(&url, &key).unwrap();
        let mut offset = Offset::start();
        let mut cursor: Option<String> = None;
        loop {
            match client.long_poll(&path, &offset, cursor.as_deref()).await {
                Ok(chunk) => {
                    shared.lock().unwrap().extend_from_slice(&chunk.data);
                    offset = chunk.next_offset;
                    cursor = chunk.cursor;
                    if chunk.closed {
                        return shared.lock().unwrap().clone();
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    (seen, task)
}

async fn wait_seen(seen: &Arc<Mutex<Vec<u8>>>, needle: &str, within: Duration) {
    poll_until(
        &format!("{needle:?} in the stream"),
        within,
        Duration::from_millis(50),
        || async {
            let s = seen.lock().unwrap();
            if s.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                Ok(())
            } else {
                Err(format!("{} bytes so far", s.len()))
            }
        },
    )
    .await;
}

fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} bytes received, {} written; first difference at byte {first}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            String::from_utf8_lossy(&got[first.saturating_sub(40)..(first + 40).min(got.len())]),
            String::from_utf8_lossy(&want[first.saturating_sub(40)..(first + 40).min(want.len())]),
        );
    }
}

#[tokio::test]
async fn a_session_streams_its_terminal_exactly_across_a_tunnel_drop_and_an_edge_restart() {
    let mut rig = Rig::start("ses-e2e", "").await;
    let (running, seen, reader) = rig
        .start_running(json!({"project": "app", "agent": "fake", "prompt": "Build the thing; don't break it.\n$(rm -rf /)"}))
        .await;
    let id = running["id"].as_str().unwrap().to_owned();
    assert_eq!(
        running["host_id"],
        rig.host_id.as_str(),
        "any online host: the only one"
    );
    let worktree = PathBuf::from(running["worktree"].as_str().unwrap());
    assert!(
        running["branch"]
            .as_str()
            .unwrap()
            .starts_with("tether/build-the-thing"),
        "{running}"
    );
    wait_seen(&seen, "Fake Agent", Duration::from_secs(10)).await;
    wait_seen(&seen, "$(rm -rf /)", Duration::from_secs(10)).await;

    rig.type_in(&id, "spam 50\r").await;
    wait_seen(&seen, "line 49 of 50", Duration::from_secs(10)).await;

    // The network drops twice: once idle, once in the middle of output.
    rig.proxy.cut();
    rig.type_in(&id, "spam 3000\r").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    rig.proxy.cut();
    wait_seen(&seen, "line 2999 of 3000", Duration::from_secs(30)).await;

    // The edge restarts while the agent writes 3 MB.
    rig.type_in(&id, "flood 3000000\r").await;
    rig.restart_edge().await;
    rig.wait_online().await;
    rig.type_in(&id, "write notes.txt\r").await;
    wait_seen(&seen, "wrote notes.txt", Duration::from_secs(30)).await;
    rig.type_in(&id, "exit 7\r").await;

    let ended = rig
        .wait_status(&id, "exited", Duration::from_secs(30))
        .await;
    assert_eq!(ended["exit_code"], 7, "{ended}");
    assert!(
        ended["ended_at"].is_string() && ended["started_at"].is_string(),
        "{ended}"
    );
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    let want = rig.transcript(&id);
    assert!(want.len() > 3_000_000, "{} bytes written", want.len());
    assert_same_bytes(&got, &want, "the remote reader");
    assert!(worktree.join("notes.txt").exists() && worktree.join("agent-notes.md").exists());

    // `tether attach` replays it, from the start or from a byte offset.
    let url = rig.url();
    let attach = |from: &'static str| {
        let args = [
            "attach",
            &id,
            "--no-input",
            "--from",
            from,
            "--server",
            &url,
            "--key",
            &rig.key,
        ];
        let cmd = rig.home.command(&args).unwrap();
        async move { tokio::process::Command::from(cmd).output().await.unwrap() }
    };
    let out = attach("start").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_bytes(&out.stdout, &want, "tether attach");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited, exit code 7"));
    assert_same_bytes(
        &attach("1000").await.stdout,
        &want[1000..],
        "tether attach --from 1000",
    );

    // The worktree: listed, dirty (the agent wrote files), removed only when forced.
    let list = rig.tether(&["worktrees", "list", "--json"]).await;
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["path"] == worktree.to_str().unwrap())
        .cloned();
    let entry = entry.unwrap_or_else(|| panic!("{list}"));
    assert_eq!(
        (entry["dirty"].as_bool(), entry["session_id"].as_str()),
        (Some(true), Some(id.as_str())),
        "{entry}"
    );
    let refused = rig
        .tether(&["worktrees", "remove", worktree.to_str().unwrap()])
        .await;
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--force")
    );
    assert!(
        rig.tether(&["worktrees", "remove", "--force", worktree.to_str().unwrap()])
            .await
            .status
            .success()
    );
    assert!(!worktree.exists());
    assert_eq!(rig.daemon().stop().await.code(), Some(0));
}

#[tokio::test]
async fn a_daemon_restart_keeps_the_output_and_leaves_a_truthful_status() {
    let mut rig = Rig::start("ses-restart", "").await;

    // A clean shutdown stops the agent, ships its last words and says why it stopped.
    let host = rig.host_id.clone();
    let (s, seen, reader) = rig
        .start_running(json!({"project": "app", "agent": "fake", "host": host}))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    rig.type_in(&id, "spam 200\r").await;
    wait_seen(&seen, "line 199 of 200", Duration::from_secs(10)).await;
    assert_eq!(rig.daemon().stop().await.code(), Some(0));
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert_same_bytes(&got, &rig.transcript(&id), "after a clean shutdown");
    assert!(String::from_utf8_lossy(&got).contains("stopping (SIGTERM)"));
    let v = rig.session(&id).await;
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_str()),
        (Some("stopped"), Some("the daemon shut down")),
        "{v}"
    );

    // A crash (SIGKILL): the agent loses its terminal; after the restart the session says
    // so, and everything the daemon had read is in the stream.
    rig.start_daemon().await;
    let (s, seen, reader) = rig
        .start_running(json!({"project": "app", "agent": "fake"}))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    rig.type_in(&id, "spam 300\r").await;
    wait_seen(&seen, "line 299 of 300", Duration::from_secs(10)).await;
    rig.daemon().kill().await;
    rig.start_daemon().await;
    let v = rig
        .wait_status(&id, "failed", Duration::from_secs(30))
        .await;
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("daemon stopped while the agent ran"),
        "{v}"
    );
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    let want = rig.transcript(&id);
    assert!(
        want.starts_with(&got),
        "the stream holds only what the agent wrote, in order"
    );
    assert!(String::from_utf8_lossy(&got).contains("line 299 of 300"));
    assert_eq!(rig.daemon().stop().await.code(), Some(0));
}

#[tokio::test]
async fn sessions_fail_or_stop_with_a_reason() {
    // A guardrail policy on the machine: dispatched prompts pass it before any agent starts.
    let extra = format!(
        "\n[presets.ghost]\ncommand = \"definitely-not-an-agent-cli\"\n\n[[policies]]\npath = {:?}\n",
        tether_tests::root().join("wasm-plugins/dist/secret-guard.wasm")
    );
    let mut rig = Rig::start("ses-fail", &extra).await;

    // A prompt with a cloud key is denied on the machine; the session fails with the reason,
    // which never repeats the key.
    let key = "AKIAIOSFODNN7EXAMPLE";
    let s = rig
        .start_session(
            json!({"project": "app", "agent": "fake", "prompt": format!("deploy with {key}")}),
        )
        .await;
    let v = rig
        .wait_status(s["id"].as_str().unwrap(), "failed", Duration::from_secs(30))
        .await;
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("denied by a guardrail policy") && !reason.contains(key),
        "{v}"
    );
    assert!(v["worktree"].is_null(), "no worktree, no agent: {v}");

    // The agent's CLI is not installed here.
    let s = rig
        .start_session(json!({"project": "app", "agent": "ghost"}))
        .await;
    let v = rig
        .wait_status(s["id"].as_str().unwrap(), "failed", Duration::from_secs(30))
        .await;
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("agent CLI not found"),
        "{v}"
    );
    // An unknown preset.
    let s = rig
        .start_session(json!({"project": "app", "agent": "nope"}))
        .await;
    let v = rig
        .wait_status(s["id"].as_str().unwrap(), "failed", Duration::from_secs(30))
        .await;
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("unknown agent preset"),
        "{v}"
    );
    // A worktree conflict: the branch exists.
    let s = rig
        .start_session(json!({"project": "app", "agent": "fake", "branch": "main"}))
        .await;
    let v = rig
        .wait_status(s["id"].as_str().unwrap(), "failed", Duration::from_secs(30))
        .await;
    assert!(v["reason"].as_str().unwrap().contains("worktree"), "{v}");

    // A stop through the API: SIGTERM, the agent's goodbye in the stream, status stopped.
    let (s, seen, reader) = rig
        .start_running(json!({"project": "app", "agent": "fake"}))
        .await;
    let id = s["id"].as_str().unwrap().to_owned();
    // `tether attach` with piped input: forwarded to the agent, the output followed to the end.
    let url = rig.url();
    let mut attach = tokio::process::Command::from(
        rig.home
            .command(&["attach", &id, "--server", &url, "--key", &rig.key])
            .unwrap(),
    );
    let mut attach = attach
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = attach.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"spam 5\r")
        .await
        .unwrap();
    wait_seen(&seen, "line 4 of 5", Duration::from_secs(10)).await;
    let (st, v) = rig
        .api
        .post(
            &format!("/v1/sessions/{id}/resize"),
            json!({"cols": 100, "rows": 30}),
        )
        .await;
    assert_eq!((st, v["cols"].as_u64()), (200, Some(100)), "{v}");
    let (st, v) = rig
        .api
        .post(
            &format!("/v1/sessions/{id}/stop"),
            json!({"reason": "enough"}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let v = rig
        .wait_status(&id, "stopped", Duration::from_secs(30))
        .await;
    assert_eq!(
        (v["reason"].as_str(), v["exit_code"].as_i64()),
        (Some("enough"), Some(143)),
        "{v}"
    );
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert_same_bytes(&got, &rig.transcript(&id), "a stopped session");
    drop(stdin);
    let attached = tokio::time::timeout(Duration::from_secs(30), attach.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let notes = String::from_utf8_lossy(&attached.stderr);
    assert!(
        attached.status.success() && notes.contains("stopped, exit code 143"),
        "{notes}"
    );
    assert_same_bytes(&attached.stdout, &got, "tether attach, following live");
    let (st, e) = rig
        .api
        .post(&format!("/v1/sessions/{id}/input"), json!({"data": "x"}))
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("session_not_running")),
        "{e}"
    );
    assert_eq!(rig.daemon().stop().await.code(), Some(0));
}
