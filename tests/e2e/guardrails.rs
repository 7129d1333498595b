//! Guardrails end to end: org policies uploaded through the API reach a real `tether up`
//! (pinned by SHA-256), the daemon installs its hooks in the machine's Claude Code settings
//! beside the user's own, and `tests/fixtures/fake-claude.py` (an agent that runs its hooks the
//! way Claude Code does) has its prompt and tool calls judged by the Wasm policies; every
//! decision reaches the org. With the daemon down, `tether hook` answers by the failure mode.

use base64::Engine;
use serde_json::{Value, json};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;
use tether::streams::{Offset, StreamClient};
use tether_tests::{Api, HostHome, TetherDaemon, poll_until, session_machine, wait_session};

fn component(name: &str) -> String {
    let path = tether_tests::root().join("wasm-plugins/dist").join(name);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run bash wasm-plugins/build.sh", path.display()));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs `tether ARGS` on `home` with `stdin` and extra environment; answers (code, stdout,
/// stderr).
fn tether(
    home: &HostHome,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> (i32, String, String) {
    let mut cmd = home.command(args).unwrap();
    cmd.env_remove("TETHER_SESSION_ID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Everything in a closed stream.
async fn stream_text(url: &str, key: &str, path: &str) -> String {
    let client = StreamClient::new(url, key).unwrap();
    let (mut offset, mut all) = (Offset::start(), Vec::new());
    loop {
        let chunk = client.long_poll(path, &offset, None).await.unwrap();
        all.extend_from_slice(&chunk.data);
        offset = chunk.next_offset;
        if chunk.closed {
            return String::from_utf8_lossy(&all).into_owned();
        }
    }
}

#[tokio::test]
async fn org_policies_judge_a_claude_code_like_agent_through_its_hooks() {
    let (url, key) = crate::fresh_org("Guarded", "GRD").await;
    let api = Api::new(&url, &key);

    // The org's policies, uploaded through the API, in order.
    let (s, v) = api
        .call(
            "PUT",
            "/v1/policies/secret-guard",
            Some(
                json!({"wasm_base64": component("secret-guard.wasm"), "config": {"mode": "deny"}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .call(
            "PUT",
            "/v1/policies/command-guard",
            Some(json!({"wasm_base64": component("command-guard.wasm"), "failure": "deny"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let command_guard_sha = v["sha256"].as_str().unwrap().to_owned();

    // A machine whose user has a Claude Code hook of their own.
    let home = HostHome::new("guard");
    let agent = tether_tests::root().join("tests/fixtures/fake-claude.py");
    let extra = format!(
        "\n[presets.claude-fake]\ncommand = {agent:?}\nprompt = \"argv\"\nprompt_args = [\"--prompt\"]\n"
    );
    let host_id = session_machine(&api, &url, &home, "guard", &extra)
        .await
        .unwrap();
    // Checked every second here (a top-level key: before the tables).
    let config = home.config_dir().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("policy_sync_secs = 1\n{text}")).unwrap();
    let user_log = home.path().join("user-hook.log");
    let settings = home.path().join(".claude/settings.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    let user_hook = format!("echo user-hook >> {}", user_log.display());
    std::fs::write(
        &settings,
        json!({"model": "opus", "hooks": {"PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": user_hook}]}
        ]}})
        .to_string(),
    )
    .unwrap();

    let mut daemon = TetherDaemon::start(&home).unwrap();
    // The org's policies reach the machine, pinned by their SHA-256, and are in force there.
    let listed = poll_until(
        "the org's policies on the machine",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let (code, out, err) = tether(&home, &["policy", "list", "--json"], &[], b"");
            let v: Value = serde_json::from_str(&out).map_err(|_| format!("{code} {out} {err}"))?;
            if v["in_force"] == json!(["secret-guard", "command-guard"]) {
                Ok(v)
            } else {
                Err(format!("{v}\n{}", daemon.log()))
            }
        },
    )
    .await;
    assert_eq!(listed["org"][0]["name"], "secret-guard");
    assert_eq!(listed["org"][1]["sha256"], command_guard_sha.as_str());

    // The daemon's hooks sit beside the user's own; the user's other settings are kept.
    let (code, out, _) = tether(&home, &["hooks", "status"], &[], b"");
    assert_eq!(code, 0, "{out}");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(s["model"], "opus");
    let commands: Vec<String> = s["hooks"]["PreToolUse"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["hooks"].as_array().unwrap().iter())
        .map(|h| h["command"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(commands.len(), 2, "{s}");
    assert!(commands.iter().any(|c| c == &user_hook));
    assert!(
        commands
            .iter()
            .any(|c| c.ends_with("hook --agent claude-code")),
        "{s}"
    );

    // A session: its tool calls are judged by the org's policies through the agent's hooks.
    let prompt = "tidy the repo\nrun: ls -la\nrun: rm -rf ~/\nrun: git push --force origin main";
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "claude-fake", "prompt": prompt}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let ended = wait_session(&api, &id, &["exited", "failed"], String::new).await;
    assert_eq!(ended["status"], "exited", "{ended}\n{}", daemon.log());
    let screen = stream_text(&url, &key, v["stream_path"].as_str().unwrap()).await;
    assert!(screen.contains("PROMPT: tidy the repo"), "{screen}");
    assert!(screen.contains("TOOL RAN: ls -la"), "{screen}");
    let denied: Vec<&str> = screen
        .lines()
        .filter(|l| l.starts_with("TOOL DENIED:"))
        .collect();
    assert_eq!(denied.len(), 2, "{screen}\n{}", daemon.log());
    assert!(!screen.contains("TOOL RAN: rm") && !screen.contains("TOOL RAN: git push"));
    // The user's own hook ran for every Bash call.
    let user_runs = std::fs::read_to_string(&user_log).unwrap_or_default();
    assert_eq!(user_runs.lines().count(), 3, "{user_runs}");

    // Every decision reaches the org, with the session, event and policy.
    let decisions = poll_until(
        "the decisions at the org",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let (s, v) = api
                .get(&format!("/v1/policy-decisions?session_id={id}&limit=200"))
                .await;
            let list = v["decisions"].as_array().cloned().unwrap_or_default();
            let denies = list
                .iter()
                .filter(|d| d["decision"] == "deny" && d["policy"] == "command-guard")
                .count();
            if s == 200 && denies == 2 {
                Ok(list)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await;
    assert!(decisions.iter().all(|d| d["host_id"] == host_id.as_str()));
    assert!(
        decisions
            .iter()
            .any(|d| d["event"] == "pre-tool-use" && d["decision"] == "allow"),
        "{decisions:?}"
    );
    // The dispatched prompt was judged once, before the agent started (its own hook then
    // did not count it again).
    let prompt_checks = decisions
        .iter()
        .filter(|d| d["event"] == "user-prompt-submit" && d["policy"] == "secret-guard")
        .count();
    assert_eq!(prompt_checks, 1, "{decisions:?}");

    // A dispatched prompt with a secret is denied on the machine by the org's secret guard.
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "claude-fake",
                   "prompt": "use ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 to push"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let failed = wait_session(
        &api,
        v["id"].as_str().unwrap(),
        &["failed", "exited"],
        String::new,
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("denied by a guardrail policy"),
        "{failed}"
    );

    // With the daemon down, `tether hook` answers by the failure mode: the org's command
    // guard fails closed, so a Tether session's tool call is denied; anything else passes.
    assert_eq!(daemon.stop().await.code(), Some(0));
    let event = json!({"session_id": "c1", "transcript_path": "/t", "cwd": "/tmp",
        "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": "Bash",
        "tool_input": {"command": "ls"}, "tool_use_id": "t1"})
    .to_string();
    let hook = ["hook", "--agent", "claude-code"];
    let (code, out, _) = tether(
        &home,
        &hook,
        &[("TETHER_SESSION_ID", &id)],
        event.as_bytes(),
    );
    assert_eq!(code, 2, "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "deny");
    let reason = answer["hookSpecificOutput"]["permissionDecisionReason"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains("daemon is not running") && reason.contains("fails closed"),
        "{reason}"
    );
    let (code, out, err) = tether(&home, &hook, &[], event.as_bytes());
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", ""),
        "not a Tether session"
    );

    // Uninstalling takes Tether's hooks out and keeps the user's.
    let (code, out, err) = tether(&home, &["hooks", "uninstall"], &[], b"");
    assert_eq!(code, 0, "{out}{err}");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(
        s,
        json!({"model": "opus", "hooks": {"PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": user_hook}]}
        ]}})
    );
}
