//! Chat sessions end to end: a real `tether up` runs `tests/fixtures/fake-claude-chat.py`, which
//! speaks Claude Code's stream-json (messages with deltas, tool_use, a permission request over
//! the control protocol, results) and calls its hooks like Claude Code. The daemon normalizes
//! its output into the session's JSON stream on the Worker in workerd; follow-ups and approval
//! answers go through the REST API (and `tether approve`) and the tunnel to the agent; an
//! unanswered request times out to the default; a guardrail's "ask" becomes an approval too.
//! The official `@durable-streams/client` reads the same events in JSON mode, live, and a fake
//! model (the Anthropic Messages API's shape, on 127.0.0.1) names the session.

use crate::streams_js::NodeScript;
use base64::Engine;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_tests::{Api, HostHome, TetherDaemon, poll_until, root, session_machine, wait_session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every event of a chat stream so far (a catch-up read).
async fn events(api: &Api, path: &str) -> Vec<Value> {
    let (s, v) = api.get(&format!("/v1/stream/{path}?offset=-1")).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

/// Waits until an event satisfies `want`; answers it.
async fn wait_event(api: &Api, path: &str, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    poll_until(
        what,
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let all = events(api, path).await;
            all.iter()
                .find(|e| want(e))
                .cloned()
                .ok_or_else(|| format!("{all:#?}"))
        },
    )
    .await
}

/// What reached the fake agent: one JSON object per line.
fn agent_log(dir: &std::path::Path, id: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(format!("{id}.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs `tether ARGS --server URL --key KEY` on `home`; answers its stdout, panics with its
/// output when it fails.
fn tether_cli(home: &HostHome, args: &[&str], url: &str, key: &str) -> Vec<u8> {
    let mut all = args.to_vec();
    all.extend(["--server", url, "--key", key]);
    let out = home.command(&all).unwrap().output().unwrap();
    assert!(
        out.status.success(),
        "tether {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A stand-in for the Anthropic Messages API: answers every POST with `title` as the text and
/// keeps the requests (headers and body).
struct FakeModel {
    url: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakeModel {
    async fn start(title: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (kept, title) = (requests.clone(), title.to_owned());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let head = text[..i].to_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            break (head, buf[i + 4..i + 4 + len].to_vec());
                        }
                    }
                };
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                kept.lock().unwrap().push((head, body));
                let answer = json!({"id": "msg_1", "type": "message", "role": "assistant",
                    "content": [{"type": "text", "text": format!("\"{title}.\"")}]})
                .to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        Self { url, requests }
    }
}

#[tokio::test]
async fn a_chat_session_streams_normalized_events_takes_follow_ups_and_remote_approvals() {
    let (url, key) = crate::fresh_org("Chat sessions", "CHT").await;
    let api = Api::new(&url, &key);
    let home = HostHome::new("chat");
    let logs = home.path().join("chat-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let agent = root().join("tests/fixtures/fake-claude-chat.py");
    let guard = root().join("wasm-plugins/dist/command-guard.wasm");
    let extra = format!(
        "\n[presets.claude-chat]\ncommand = {agent:?}\n\
         chat = {{ protocol = \"claude-stream-json\", args = [\"-p\", \"--output-format\", \
         \"stream-json\", \"--input-format\", \"stream-json\", \"--permission-prompt-tool\", \"stdio\"] }}\n\
         env = {{ FAKE_CHAT_LOG = {logs:?} }}\n\n\
         [chat]\napproval_timeout_secs = 6\n\n\
         [[policies]]\npath = {guard:?}\n"
    );
    let host_id = session_machine(&api, &url, &home, "chat", &extra)
        .await
        .unwrap();
    let model = FakeModel::start("Fix the flaky login test").await;
    let daemon = TetherDaemon::start_with_env(
        &home,
        &[
            ("ANTHROPIC_API_KEY", "test-key"),
            ("ANTHROPIC_BASE_URL", &model.url),
        ],
    )
    .unwrap();

    // A chat session whose first prompt asks for a tool call.
    let prompt = "please look at the login test\nrun: npm test";
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "claude-chat", "kind": "chat",
                   "prompt": prompt}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["kind"], "chat");
    assert_eq!(
        v["title"], "please look at the login test",
        "the fallback at once"
    );
    let id = v["id"].as_str().unwrap().to_owned();
    let path = v["stream_path"].as_str().unwrap().to_owned();
    assert!(path.ends_with("/chat"), "{path}");

    // The official client follows the stream live, in JSON mode, until it is closed.
    let reader = {
        let (url, key, path) = (url.clone(), key.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            NodeScript::start_with(
                "tests/conformance/chat-reader.mjs",
                &url,
                &key,
                &["--path", &path],
            )
            .finish()
        })
    };

    // The agent asks for permission: the request is in the stream, with the tool's status.
    let asked = wait_event(&api, &path, "the approval request", |e| {
        e["type"] == "approval_requested"
    })
    .await;
    assert_eq!(asked["v"], 1);
    assert_eq!(asked["tool"], "Bash");
    assert_eq!(asked["input"], json!({"command": "npm test"}));
    assert_eq!(asked["source"], "agent");
    assert_eq!(asked["default"], "deny");
    assert_eq!(asked["role"], "member");
    let request = asked["request_id"].as_str().unwrap().to_owned();
    let so_far = events(&api, &path).await;
    assert_eq!(so_far[0]["type"], "message", "{so_far:#?}");
    assert_eq!(so_far[0]["role"], "user");
    assert_eq!(so_far[0]["text"], prompt);
    let started = so_far
        .iter()
        .find(|e| e["type"] == "session_started")
        .unwrap_or_else(|| panic!("{so_far:#?}"));
    assert_eq!(started["protocol"], "claude-stream-json");
    assert_eq!(started["model"], "fake-model");
    let tool_id = asked["tool_use_id"].as_str().unwrap();
    let statuses: Vec<&str> = so_far
        .iter()
        .filter(|e| e["type"] == "tool" && e["tool_use_id"] == tool_id)
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["created", "awaiting_approval"], "{so_far:#?}");

    // Bad answers are 4xx; a good one reaches the agent through its own protocol.
    let approvals = format!("/v1/sessions/{id}/approvals");
    let (s, v) = api
        .post(
            &format!("{approvals}/apr_nope"),
            json!({"decision": "allow"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let unknown = format!("{approvals}/apr_{}", "0".repeat(32));
    let (s, v) = api.post(&unknown, json!({"decision": "allow"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("approval_not_found")),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("{approvals}/{request}"),
            json!({"decision": "maybe"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = api
        .post(
            &format!("{approvals}/{request}"),
            json!({"decision": "allow", "reason": "tests are safe"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["answered_by"]["kind"], "member");
    let member = v["answered_by"]["id"].as_str().unwrap().to_owned();
    let (s, v) = api
        .post(
            &format!("{approvals}/{request}"),
            json!({"decision": "deny"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("already_answered")),
        "{v}"
    );

    // The turn ends: the tool ran, the answer streamed in deltas and then whole, usage came.
    wait_event(&api, &path, "the first turn's end", |e| {
        e["type"] == "turn_ended"
    })
    .await;
    let all = events(&api, &path).await;
    let answered = all
        .iter()
        .find(|e| e["type"] == "approval_answered")
        .unwrap();
    assert_eq!(answered["decision"], "allow");
    assert_eq!(answered["reason"], "tests are safe");
    assert_eq!(answered["answered_by"]["id"], member.as_str());
    let statuses: Vec<&str> = all
        .iter()
        .filter(|e| e["type"] == "tool" && e["tool_use_id"] == tool_id)
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["created", "awaiting_approval", "running", "succeeded"],
        "{all:#?}"
    );
    let succeeded = all
        .iter()
        .find(|e| e["type"] == "tool" && e["status"] == "succeeded")
        .unwrap();
    assert_eq!(succeeded["output"], "ran: npm test");
    let answer = all
        .iter()
        .find(|e| e["type"] == "message" && e["role"] == "assistant")
        .unwrap();
    assert_eq!(answer["text"], "echo: please look at the login test");
    let deltas: String = all
        .iter()
        .filter(|e| e["type"] == "message_delta" && e["message_id"] == answer["message_id"])
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "echo: please look at the login test");
    let thinking = all.iter().find(|e| e["type"] == "thinking").unwrap();
    assert_eq!(thinking["text"], "let me see what is asked");
    assert!(
        all.iter()
            .any(|e| e["type"] == "thinking_delta" && e["message_id"] == thinking["message_id"]),
        "{all:#?}"
    );
    let usage = all.iter().find(|e| e["type"] == "usage").unwrap();
    assert_eq!(
        (
            &usage["input_tokens"],
            &usage["output_tokens"],
            &usage["cache_read_tokens"]
        ),
        (&json!(100), &json!(20), &json!(7))
    );
    assert_eq!(usage["cost_usd"], 0.0123);
    let got = agent_log(&logs, &id);
    assert!(
        got.iter().any(|l| l["permission"] == "allow"),
        "the agent got the allow: {got:?}"
    );

    // The title: the fake model was asked, with the key, and its answer replaced the fallback.
    let titled = poll_until(
        "the model's title",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let (_, v) = api.get(&format!("/v1/sessions/{id}")).await;
            if v["title"] == "Fix the flaky login test" {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await;
    assert_eq!(titled["kind"], "chat");
    {
        let requests = model.requests.lock().unwrap();
        let (head, body) = requests.first().expect("the model was asked");
        assert!(
            head.to_ascii_lowercase().contains("x-api-key: test-key"),
            "{head}"
        );
        assert!(
            body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("login test")
        );
    }
    wait_event(&api, &path, "the title event", |e| {
        e["type"] == "title" && e["source"] == "llm"
    })
    .await;

    // Follow-ups are checked; a good one lands its file in the worktree and reaches the agent.
    let messages = format!("/v1/sessions/{id}/messages");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let nine: Vec<Value> = (0..9)
        .map(|i| json!({"name": format!("f{i}.txt"), "data_base64": b64(b"x")}))
        .collect();
    for (body, field) in [
        (json!({"text": ""}), "text"),
        (json!({"text": "hi", "attachments": nine}), "attachments"),
        (
            json!({"text": "hi", "attachments": [{"name": "..", "data_base64": b64(b"x")}]}),
            "attachments",
        ),
        (
            json!({"text": "hi", "attachments": [{"name": "a", "data_base64": "%%%"}]}),
            "attachments",
        ),
        (
            json!({"text": "hi", "attachments": [{"name": "big", "data_base64": b64(&vec![0u8; 300 * 1024])}]}),
            "attachments",
        ),
    ] {
        let (s, v) = api.post(&messages, body).await;
        assert_eq!(s, 422, "{v}");
        assert!(
            v["error"]["details"]["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{v}"
        );
    }
    let (s, v) = api
        .post(
            &messages,
            json!({"text": "here are my notes\nrun: rm -rf build",
                   "attachments": [{"name": "../../notes.txt", "data_base64": b64(b"hello notes")}]}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let file = &v["attachments"][0];
    assert_eq!(file["name"], "notes.txt");
    assert_eq!(file["bytes"], 11);
    let relative = file["path"].as_str().unwrap();
    assert!(
        relative.starts_with(".tether/attachments/msg_"),
        "{relative}"
    );
    let (_, session) = api.get(&format!("/v1/sessions/{id}")).await;
    let worktree = std::path::PathBuf::from(session["worktree"].as_str().unwrap());
    assert_eq!(
        std::fs::read(worktree.join(relative)).unwrap(),
        b"hello notes"
    );

    // Its tool call waits for an approval nobody gives: the default (deny) applies.
    let second = wait_event(&api, &path, "the second approval", |e| {
        e["type"] == "approval_requested" && e["input"]["command"] == "rm -rf build"
    })
    .await;
    let timed_out = wait_event(&api, &path, "the timeout's answer", |e| {
        e["type"] == "approval_answered" && e["request_id"] == second["request_id"]
    })
    .await;
    assert_eq!(timed_out["decision"], "deny");
    assert_eq!(timed_out["answered_by"], json!({"kind": "timeout"}));
    let late = format!("{approvals}/{}", second["request_id"].as_str().unwrap());
    let (s, v) = api.post(&late, json!({"decision": "allow"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("already_answered")),
        "{v}"
    );
    wait_event(&api, &path, "the denied tool", |e| {
        e["type"] == "tool" && e["status"] == "denied" && e["tool_use_id"] == second["tool_use_id"]
    })
    .await;
    let got = agent_log(&logs, &id);
    let user: Vec<&str> = got.iter().filter_map(|l| l["user"].as_str()).collect();
    assert_eq!(user.len(), 2, "{got:?}");
    assert!(user[1].starts_with("here are my notes"), "{user:?}");
    assert!(
        user[1].contains(relative),
        "the agent is told where the file is: {user:?}"
    );
    assert!(
        got.iter().any(|l| l["permission"] == "deny"
            && l["message"]
                .as_str()
                .unwrap_or_default()
                .contains("denied by default")),
        "{got:?}"
    );
    // The follow-up sits in the stream after the first turn, with who sent it.
    let all = events(&api, &path).await;
    let first_end = all.iter().position(|e| e["type"] == "turn_ended").unwrap();
    let follow_up = all
        .iter()
        .position(|e| e["type"] == "message" && e["role"] == "user" && e["sent_by"].is_string())
        .unwrap();
    assert!(follow_up > first_end, "{all:#?}");
    assert_eq!(all[follow_up]["attachments"][0]["path"], relative);

    // Through MCP this time: a guardrail policy asks about a force push; that is an approval
    // too, answered here with `tether approve`; the agent then runs it without asking its own
    // permission again.
    let (failed, sent) = crate::mcp_tool(
        &api,
        "sessions_send_message",
        json!({"session_id": id, "text": "ship it\nrun: git push --force"}),
    )
    .await;
    assert!(!failed, "{sent}");
    assert!(sent["message_id"].as_str().unwrap().starts_with("msg_"));
    let third = wait_event(&api, &path, "the guardrail's approval", |e| {
        e["type"] == "approval_requested" && e["source"] == "guardrail"
    })
    .await;
    assert_eq!(third["input"]["command"], "git push --force");
    let pushed = third["tool_use_id"]
        .as_str()
        .expect("the hook named the call");
    assert!(
        third["reason"].as_str().unwrap().contains("branch"),
        "{third}"
    );
    let request_id = third["request_id"].as_str().unwrap();
    tether_cli(&home, &["approve", &id, request_id, "allow"], &url, &key);
    wait_event(&api, &path, "the force push's result", |e| {
        e["type"] == "tool" && e["status"] == "succeeded" && e["output"] == "ran: git push --force"
    })
    .await;
    let statuses: Vec<String> = events(&api, &path)
        .await
        .iter()
        .filter(|e| e["type"] == "tool" && e["tool_use_id"] == pushed)
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        ["created", "awaiting_approval", "running", "succeeded"]
    );
    let permissions = agent_log(&logs, &id)
        .iter()
        .filter(|l| l.get("permission").is_some())
        .count();
    assert_eq!(permissions, 2, "no second ask after a member allowed it");

    // The recorded answers say who answered.
    let (s, v) = api.get(&approvals).await;
    assert_eq!(s, 200, "{v}");
    let recorded = v.as_array().unwrap();
    assert_eq!(recorded.len(), 2, "{v}");
    assert!(
        recorded
            .iter()
            .all(|r| r["answered_by"]["id"] == member.as_str() && r["answered_at"].is_string()),
        "{v}"
    );
    let decisions: Vec<&str> = recorded
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["allow", "allow"], "{v}");

    // Stopping it ends the stream with a session_ended event; the reader saw it all.
    let (s, v) = api
        .post(&format!("/v1/sessions/{id}/stop"), json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
    let ended = wait_session(&api, &id, &["stopped", "exited"], || daemon.log()).await;
    assert_eq!(ended["status"], "stopped", "{ended}");
    let last = poll_until(
        "the stream's end",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let all = events(&api, &path).await;
            match all.last() {
                Some(e) if e["type"] == "session_ended" => Ok(all),
                _ => Err(format!("{:#?}", all.last())),
            }
        },
    )
    .await;
    assert_eq!(last.last().unwrap()["status"], "stopped");
    let (ok, printed) = reader.await.unwrap();
    assert!(ok, "chat-reader.mjs failed:\n{printed}");
    let items: Value = serde_json::from_str(
        printed
            .lines()
            .find_map(|l| l.strip_prefix("CHAT_ITEMS "))
            .expect("the reader printed its items"),
    )
    .unwrap();
    assert_eq!(
        items,
        Value::Array(last.clone()),
        "the JS reader saw the same events"
    );

    // `tether chat --json` replays the same events.
    let out = tether_cli(&home, &["chat", &id, "--json", "--no-follow"], &url, &key);
    let replayed: Vec<Value> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed, last);

    // And rendered for a person: the conversation, the tools, who answered what.
    let shown =
        String::from_utf8(tether_cli(&home, &["chat", &id, "--no-follow"], &url, &key)).unwrap();
    for wanted in [
        "echo: please look at the login test",
        "here are my notes",
        "git push --force",
        &format!("allowed by {member}"),
        "denied by its timeout",
    ] {
        assert!(shown.contains(wanted), "{wanted:?} not in:\n{shown}");
    }
}

#[tokio::test]
async fn a_codex_chat_session_runs_a_process_per_turn_and_resumes_its_thread() {
    let (url, key) = crate::fresh_org("Codex chat", "CDX").await;
    let api = Api::new(&url, &key);
    let home = HostHome::new("codex-chat");
    let logs = home.path().join("chat-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let agent = root().join("tests/fixtures/fake-codex-json.py");
    let extra = format!(
        "\n[presets.codex-chat]\ncommand = {agent:?}\n\
         chat = {{ protocol = \"codex-json\", args = [\"exec\", \"--json\"] }}\n\
         env = {{ FAKE_CHAT_LOG = {logs:?} }}\n"
    );
    let host_id = session_machine(&api, &url, &home, "codex-chat", &extra)
        .await
        .unwrap();
    let mut daemon = TetherDaemon::start(&home).unwrap();

    // A preset without a structured mode cannot chat: the session fails, and says so in its
    // (closed) stream too.
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "fake", "kind": "chat",
                   "prompt": "hello"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let failed = wait_session(&api, v["id"].as_str().unwrap(), &["failed"], || {
        daemon.log()
    })
    .await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("no structured mode"),
        "{failed}"
    );
    let last = wait_event(
        &api,
        v["stream_path"].as_str().unwrap(),
        "why it ended",
        |e| e["type"] == "session_ended",
    )
    .await;
    assert_eq!(last["status"], "failed");

    // Codex: one process per turn; the follow-up resumes the thread.
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "codex-chat", "kind": "chat",
                   "prompt": "list the files\nrun: ls"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let path = v["stream_path"].as_str().unwrap().to_owned();
    wait_event(&api, &path, "the first turn", |e| e["type"] == "turn_ended").await;
    let all = events(&api, &path).await;
    let started = all.iter().find(|e| e["type"] == "session_started").unwrap();
    assert_eq!(started["protocol"], "codex-json");
    let thread = started["agent_session_id"].as_str().unwrap().to_owned();
    let statuses: Vec<&str> = all
        .iter()
        .filter(|e| e["type"] == "tool")
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["created", "running", "succeeded"], "{all:#?}");
    let usage = all.iter().find(|e| e["type"] == "usage").unwrap();
    assert_eq!(
        (&usage["input_tokens"], &usage["cache_read_tokens"]),
        (&json!(50), &json!(5))
    );

    let (s, v) = api
        .post(
            &format!("/v1/sessions/{id}/messages"),
            json!({"text": "and again"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let all = poll_until(
        "the second turn",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let all = events(&api, &path).await;
            if all.iter().filter(|e| e["type"] == "turn_ended").count() == 2 {
                Ok(all)
            } else {
                Err(format!("{all:#?}"))
            }
        },
    )
    .await;
    let answers: Vec<&str> = all
        .iter()
        .filter(|e| e["type"] == "message" && e["role"] == "assistant")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["echo: list the files", "echo: and again"]);
    assert_eq!(
        all.iter()
            .filter(|e| e["type"] == "session_started")
            .count(),
        1,
        "one conversation"
    );
    let argv: Vec<Value> = agent_log(&logs, &id)
        .into_iter()
        .map(|l| l["argv"].clone())
        .collect();
    assert_eq!(argv.len(), 2, "{argv:?}");
    assert_eq!(argv[0][0], "exec");
    assert_eq!(argv[0][1], "--json");
    let second: Vec<&str> = argv[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let resume = second.iter().position(|a| *a == "resume").unwrap();
    assert_eq!(second[resume + 1], thread);
    assert_eq!(&second[second.len() - 2..], ["--", "and again"]);

    // A prompt too long for one argument (120 000 bytes) goes on stdin.
    let long = "é".repeat(60_000);
    let (s, v) = api
        .post(
            &format!("/v1/sessions/{id}/messages"),
            json!({"text": long}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    wait_event(&api, &path, "the long turn's answer", |e| {
        e["type"] == "message" && e["role"] == "assistant" && e["text"] == format!("echo: {long}")
    })
    .await;
    let argv = agent_log(&logs, &id);
    assert_eq!(argv.len(), 3, "{argv:?}");
    let third = argv[2]["argv"].as_array().unwrap();
    assert_eq!(&third[third.len() - 2..], ["--", "-"]);

    let (s, _) = api
        .post(&format!("/v1/sessions/{id}/stop"), json!({}))
        .await;
    assert_eq!(s, 202);
    let ended = wait_session(&api, &id, &["stopped"], || daemon.log()).await;
    assert_eq!(ended["status"], "stopped");
    let last = wait_event(&api, &path, "the end", |e| e["type"] == "session_ended").await;
    assert_eq!(last["status"], "stopped");

    // A conversation the daemon was holding when it was killed ends, at its next start, as
    // failed, with its last event saying so.
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "codex-chat", "kind": "chat",
                   "prompt": "hold on"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (id, path) = (
        v["id"].as_str().unwrap(),
        v["stream_path"].as_str().unwrap(),
    );
    wait_event(&api, path, "its turn", |e| e["type"] == "turn_ended").await;
    daemon.kill().await;
    let daemon = TetherDaemon::start(&home).unwrap();
    let failed = wait_session(&api, id, &["failed"], || daemon.log()).await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("daemon stopped"),
        "{failed}"
    );
    let last = wait_event(&api, path, "its end", |e| e["type"] == "session_ended").await;
    assert_eq!(last["status"], "failed");
}
