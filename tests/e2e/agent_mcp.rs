//! The agents' local MCP server end to end: a real `tether up` launches
//! `tests/fixtures/fake-claude.py`, which (as Claude Code does) reads the `--mcp-config` file
//! the daemon wrote, starts `tether mcp` from it over stdio and speaks MCP to it. The org's tools
//! come from the Worker's `/mcp` with the host's token, the session tools from the host's session
//! routes; what the agent did shows through the REST API.

use serde_json::{Value, json};
use tether_tests::{Api, HostHome, TetherDaemon, mcp_agent_machine, wait_session};

/// A tool call's result: (isError, its text).
fn outcome(call: &Value) -> (bool, String) {
    let result = &call["response"]["result"];
    let text = result["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content: {call}"))
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect();
    (result["isError"] == true, text)
}

#[tokio::test]
async fn agents_get_the_orgs_tools_and_their_sessions_through_a_local_mcp_server() {
    let (url, key) = crate::fresh_org("Agent tools", "AGT").await;
    let api = Api::new(&url, &key);
    let (s, task) = api
        .post(
            "/v1/tasks",
            json!({"title": "Wire the local MCP server", "priority": "high"}),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let slug = task["slug"].as_str().unwrap().to_owned();
    let (_, statuses) = api.get("/v1/task-statuses").await;
    let done = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["category"] == "completed")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(task["status"]["id"], done.as_str());

    // The agent preset as the built-in `claude` one has it: the file, then `--`, then the
    // prompt as a positional.
    let home = HostHome::new("agent-mcp");
    let (host_id, logs) = mcp_agent_machine(&api, &url, &home, "agent-mcp")
        .await
        .unwrap();
    let daemon = TetherDaemon::start(&home).unwrap();

    // A session for the task: the agent lists the tools, reads the org's tasks, reports its
    // progress and moves its task to done.
    let prompt = format!(
        "use Tether's tools\n\
         mcp: tasks_list {{}}\n\
         mcp: session_report_progress {{\"message\": \"half way there\", \"percent\": 50}}\n\
         mcp: session_update_task {{\"status_id\": \"{done}\"}}"
    );
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "claude-mcp",
                   "task": slug, "prompt": prompt}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let ended = wait_session(&api, &id, &["exited", "failed", "stopped"], || daemon.log()).await;
    assert_eq!(ended["status"], "exited", "{ended}\n{}", daemon.log());

    let server = logs.recorded(&id);
    assert_eq!(
        server["initialize"]["result"]["serverInfo"]["name"], "tether-local",
        "{server}"
    );
    let tools: Vec<&str> = server["tools"]["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {server}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "tasks_list",
        "sessions_list",
        "session_report_progress",
        "session_update_task",
    ] {
        assert!(tools.contains(&wanted), "{wanted} not in {tools:?}");
    }
    let calls = server["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3, "{server}");

    // The org's tasks, through the edge's /mcp with the host's token.
    assert_eq!(calls[0]["tool"], "tasks_list");
    let (failed, text) = outcome(&calls[0]);
    assert!(!failed, "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert!(
        listed["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{listed}"))
            .iter()
            .any(|t| t["slug"] == slug.as_str()),
        "{listed}"
    );

    // The progress shows with the session.
    let (failed, text) = outcome(&calls[1]);
    assert!(!failed, "{text}");
    let (_, session) = api.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        session["progress"]["message"], "half way there",
        "{session}"
    );
    assert_eq!(session["progress"]["percent"], 50, "{session}");

    // The task is done.
    let (failed, text) = outcome(&calls[2]);
    assert!(!failed, "{text}");
    let (_, t) = api.get(&format!("/v1/tasks/{slug}")).await;
    assert_eq!(t["status"]["id"], done.as_str(), "{t}");

    // The session's MCP config is gone with it.
    assert!(
        !home
            .state_dir()
            .join("mcp")
            .join(format!("{id}.json"))
            .exists()
    );

    // A session without a task: updating "my task" is a tool error the agent can read.
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "claude-mcp",
                   "prompt": "no task here\nmcp: session_update_task {\"priority\": \"low\"}"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let ended = wait_session(&api, &id, &["exited", "failed", "stopped"], || daemon.log()).await;
    assert_eq!(ended["status"], "exited", "{ended}");
    let server = logs.recorded(&id);
    let calls = server["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{server}");
    let (failed, text) = outcome(&calls[0]);
    assert!(failed, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "no_task", "{text}");
}
