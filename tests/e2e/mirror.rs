//! The daemon's mirror of the org end to end: a real `tether up` syncs the org's tables from
//! the Worker's shape endpoint (`GET /v1/orgs/{org}/shape`) into its state database; `tether
//! tasks list` reads them with or without the daemon, saying how current they are; a restart
//! resumes from the stored offset; after the edge compacted its log while the daemon was away,
//! it resyncs (409) and ends with exactly the API's tasks; the agents' local MCP server reads
//! tasks from the mirror.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tether_tests::{
    Api, HostHome, TetherDaemon, mcp_agent_machine, pair, poll_until, wait_session,
};

/// `tether tasks list --json` on `home`: {"tasks", "mirror"}.
async fn mirror_list(home: &HostHome) -> Value {
    let cmd = home
        .command(&["tasks", "list", "--json", "--limit", "1000"])
        .unwrap();
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert!(
        out.status.success(),
        "tether tasks list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `tether tasks list` as people read it.
async fn mirror_text(home: &HostHome) -> String {
    let cmd = home.command(&["tasks", "list"]).unwrap();
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What must agree between the API and the mirror, per task id.
fn summary(tasks: &[Value]) -> BTreeMap<String, Value> {
    tasks
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                json!({
                    "slug": t["slug"], "number": t["number"], "title": t["title"],
                    "priority": t["priority"], "status": t["status"]["id"],
                    "status_name": t["status"]["name"], "labels": t["labels"],
                    "assignee_id": t["assignee_id"], "project_id": t["project_id"],
                    "description": t["description"],
                }),
            )
        })
        .collect()
}

/// The org's tasks as the API has them.
async fn api_tasks(api: &Api) -> BTreeMap<String, Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?limit=200&cursor={c}"),
            None => "/v1/tasks?limit=200".to_owned(),
        };
        let (s, page) = api.get(&path).await;
        assert_eq!(s, 200, "{page}");
        all.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return summary(&all),
        }
    }
}

/// Waits until the mirror on `home` lists exactly the API's tasks, live; answers its listing.
async fn wait_mirrored(api: &Api, home: &HostHome, what: &str, log: impl Fn() -> String) -> Value {
    poll_until(
        what,
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let want = api_tasks(api).await;
            let got = mirror_list(home).await;
            let have = summary(got["tasks"].as_array().unwrap());
            if have == want && got["mirror"]["live"] == true {
                Ok(got)
            } else {
                Err(format!(
                    "the API has {want:#?}\nthe mirror {got:#}\n{}",
                    log()
                ))
            }
        },
    )
    .await
}

/// The lines of a daemon log that mention `what` for the tasks table.
fn tasks_lines<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(what) && l.contains("\"tasks\""))
        .collect()
}

#[tokio::test]
async fn the_daemon_mirrors_the_orgs_tasks_resumes_after_a_restart_and_resyncs_after_compaction() {
    let (url, key) = crate::fresh_org("Mirror", "MIR").await;
    let api = Api::new(&url, &key);
    let (_, me) = api.get("/v1/me").await;
    let org = me["org"]["id"].as_str().unwrap().to_owned();
    let (_, statuses) = api.get("/v1/task-statuses").await;
    let status_id = |category: &str| {
        statuses
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["category"] == category)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (started, done) = (status_id("started"), status_id("completed"));
    let mut ids = Vec::new();
    for (title, labels) in [
        ("First", json!([])),
        ("Second", json!(["bug"])),
        ("Third", json!([])),
    ] {
        let (s, t) = api
            .post(
                "/v1/tasks",
                json!({"title": title, "labels": labels, "priority": "high"}),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        ids.push(t["id"].as_str().unwrap().to_owned());
    }

    // Pair a machine and start its daemon: the org's tasks arrive in its mirror.
    let home = HostHome::new("mirror");
    pair(&api, &url, &home, "mirror").await.unwrap();
    let mut daemon = TetherDaemon::start(&home).unwrap();
    let listed = wait_mirrored(&api, &home, "the initial sync", || daemon.log()).await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(
        listed["tasks"][0]["title"], "Third",
        "newest first: {listed}"
    );
    assert_eq!(listed["tasks"][1]["labels"], json!(["bug"]));
    let text = mirror_text(&home).await;
    assert!(text.lines().next().unwrap().ends_with("(live)"), "{text}");
    assert!(text.contains("MIR-2") && text.contains("Second"), "{text}");

    // Live: a create, an update and a delete through the API show within moments.
    let (s, t) = api.post("/v1/tasks", json!({"title": "Fourth"})).await;
    assert_eq!(s, 201, "{t}");
    let (s, t) = api
        .patch(
            &format!("/v1/tasks/{}", ids[0]),
            json!({"title": "First, renamed", "status_id": started, "labels": ["x", "y"]}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let (s, t) = api.delete(&format!("/v1/tasks/{}", ids[1])).await;
    assert!(s == 204 || s == 200, "{s} {t}");
    let listed = wait_mirrored(&api, &home, "live changes", || daemon.log()).await;
    let first = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == ids[0].as_str())
        .unwrap()
        .clone();
    assert_eq!(first["status"]["category"], "started", "{first}");

    // The daemon stops: the mirror still answers, and says it is not live.
    daemon.stop().await;
    let stopped = mirror_list(&home).await;
    assert_eq!(stopped["mirror"]["live"], false, "{stopped}");
    assert_eq!(
        summary(stopped["tasks"].as_array().unwrap()),
        api_tasks(&api).await
    );
    let text = mirror_text(&home).await;
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with("(daemon not syncing)"),
        "{text}"
    );

    // Changes while it is away arrive when it is back, from where it stopped.
    let (s, t) = api.post("/v1/tasks", json!({"title": "Fifth"})).await;
    assert_eq!(s, 201, "{t}");
    let (s, t) = api
        .patch(&format!("/v1/tasks/{}", ids[2]), json!({"status_id": done}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert_ne!(
        summary(mirror_list(&home).await["tasks"].as_array().unwrap()),
        api_tasks(&api).await,
        "the mirror cannot know yet"
    );
    let mut daemon = TetherDaemon::start(&home).unwrap();
    wait_mirrored(&api, &home, "catching up after a restart", || daemon.log()).await;
    let log = daemon.log();
    assert!(
        !tasks_lines(&log, "mirror resuming from its stored position").is_empty(),
        "{log}"
    );
    assert!(tasks_lines(&log, "mirror must refetch").is_empty(), "{log}");
    assert!(
        tasks_lines(&log, "mirror starting a full sync").is_empty(),
        "{log}"
    );

    // Away again while the edge compacts its log past the mirror's offset: the next start
    // gets a 409 for the tasks, starts them over and ends with exactly the API's tasks.
    daemon.stop().await;
    let (s, t) = api.post("/v1/tasks", json!({"title": "Sixth"})).await;
    assert_eq!(s, 201, "{t}");
    let (s, t) = api.delete(&format!("/v1/tasks/{}", ids[0])).await;
    assert!(s == 204 || s == 200, "{s} {t}");
    let (s, c) = api
        .post(&format!("/v1/orgs/{org}/sync/compact"), json!({"keep": 0}))
        .await;
    assert_eq!(s, 200, "{c}");
    let mut daemon = TetherDaemon::start(&home).unwrap();
    let listed = wait_mirrored(&api, &home, "resyncing after compaction", || daemon.log()).await;
    let log = daemon.log();
    assert!(
        !tasks_lines(&log, "mirror must refetch").is_empty(),
        "{log}"
    );
    let titles: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Sixth", "Fifth", "Fourth", "Third"]);
    let status = home.command(&["status"]).unwrap();
    let out = tokio::process::Command::from(status)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("mirror")).unwrap();
    assert!(
        line.contains("(live)") && !line.contains(" 0 resyncs"),
        "{text}"
    );
    daemon.stop().await;
    // No table had trouble along the way (every shape answered, nothing refused).
    let log = daemon.log();
    assert!(
        !log.contains("mirror sync failing") && !log.contains("mirror sync stopped"),
        "{log}"
    );
}

/// A tool call's answer, parsed from its text.
fn answer(call: &Value) -> Value {
    let result = &call["response"]["result"];
    assert_ne!(result["isError"], true, "{call}");
    let text: String = result["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn agents_read_the_orgs_tasks_from_the_mirror() {
    let (url, key) = crate::fresh_org("Mirror tools", "MRT").await;
    let api = Api::new(&url, &key);
    let (s, task) = api
        .post(
            "/v1/tasks",
            json!({"title": "Read me locally", "labels": ["local"]}),
        )
        .await;
    assert_eq!(s, 201, "{task}");
    let slug = task["slug"].as_str().unwrap().to_owned();

    let home = HostHome::new("mirror-mcp");
    let (host_id, logs) = mcp_agent_machine(&api, &url, &home, "mirror-mcp")
        .await
        .unwrap();
    let daemon = TetherDaemon::start(&home).unwrap();
    wait_mirrored(&api, &home, "the initial sync", || daemon.log()).await;

    let prompt = format!(
        "read the tasks\n\
         mcp: tasks_list {{\"label\": \"LOCAL\"}}\n\
         mcp: tasks_get {{\"id_or_slug\": \"{slug}\"}}\n\
         mcp: task_statuses_list {{}}"
    );
    let (s, v) = api
        .post(
            "/v1/sessions",
            json!({"project": "app", "host": host_id, "agent": "claude-mcp", "prompt": prompt}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let ended = wait_session(&api, &id, &["exited", "failed", "stopped"], || daemon.log()).await;
    assert_eq!(ended["status"], "exited", "{ended}\n{}", daemon.log());

    let server = logs.recorded(&id);
    let calls = server["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3, "{server}");
    // Answered by the mirror: they say how current it is.
    let list = answer(&calls[0]);
    assert_eq!(list["data"][0]["slug"], slug.as_str(), "{list}");
    assert_eq!(list["mirror"]["live"], true, "{list}");
    let got = answer(&calls[1]);
    assert_eq!(got["title"], "Read me locally", "{got}");
    assert_eq!(got["status"]["id"], task["status"]["id"], "{got}");
    assert!(got["mirror"]["age_secs"].is_u64(), "{got}");
    let statuses = answer(&calls[2]);
    assert_eq!(statuses["data"].as_array().unwrap().len(), 5, "{statuses}");
}
