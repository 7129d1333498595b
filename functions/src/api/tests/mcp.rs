//! The MCP server at `/mcp` through the router: the protocol, the tools against the REST
//! API's own rules, isolation, and the audit trail.

use super::{
    App, add_member, app, call, connect, futures_lite_block_on, machine, owner, pair, second_org,
};
use crate::api::handle;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// POSTs raw bytes to `/mcp` with `headers`; answers the status and the body (`Null` when
/// empty).
fn post(app: &App, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value, http::HeaderMap) {
    let mut b = http::Request::builder().method("POST").uri("/mcp");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = futures_lite_block_on(handle(app, b.body(body.to_vec()).unwrap(), "test"));
    let v = if res.body().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(res.body()).unwrap()
    };
    (res.status().as_u16(), v, res.headers().clone())
}

/// A JSON-RPC body as an MCP client sends it with `key`.
fn rpc(app: &App, key: &str, body: Value) -> (u16, Value) {
    let (s, v, _) = post(
        app,
        &[
            ("x-api-key", key),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        body.to_string().as_bytes(),
    );
    (s, v)
}

fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Calls a tool; answers `(isError, the text content parsed as JSON)`.
fn tool(app: &App, key: &str, name: &str, args: Value) -> (bool, Value) {
    let (s, v) = rpc(
        app,
        key,
        request(7, "tools/call", json!({"name": name, "arguments": args})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], 7, "{v}");
    let result = &v["result"];
    assert!(
        result.is_object(),
        "a tool result, not a protocol error: {v}"
    );
    let text = result["content"][0]["text"].as_str().unwrap();
    assert_eq!(result["content"][0]["type"], "text");
    (
        result["isError"].as_bool().unwrap_or(false),
        serde_json::from_str(text).unwrap(),
    )
}

const TOOLS: [&str; 29] = [
    "tasks_create",
    "tasks_list",
    "tasks_get",
    "tasks_update",
    "tasks_delete",
    "task_statuses_list",
    "projects_list",
    "members_list",
    "hosts_list",
    "worktrees_list",
    "sessions_start",
    "sessions_list",
    "sessions_get",
    "sessions_stop",
    "sessions_send_message",
    "sessions_answer_approval",
    "terminals_read",
    "terminals_send_input",
    "automations_create",
    "automations_list",
    "automations_get",
    "automations_update",
    "automations_delete",
    "automations_pause",
    "automations_resume",
    "automations_run",
    "automations_logs",
    "automations_get_prompt",
    "automations_set_prompt",
];

#[test]
fn initialize_negotiates_the_protocol_version() {
    let app = app();
    let key = owner(&app);
    let init = |version: &str| {
        rpc(
            &app,
            &key,
            request(
                1,
                "initialize",
                json!({"protocolVersion": version, "capabilities": {},
                       "clientInfo": {"name": "test", "version": "0"}}),
            ),
        )
    };
    let (s, v) = init("2025-03-26");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["protocolVersion"], "2025-03-26");
    assert!(v["result"]["capabilities"]["tools"].is_object(), "{v}");
    assert_eq!(v["result"]["serverInfo"]["name"], "tether");
    let (_, v) = init("2025-06-18");
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    // A version this server does not know: it answers its newest.
    let (_, v) = init("2031-01-01");
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    // Without one, the params are bad.
    let (_, v) = rpc(&app, &key, request(2, "initialize", json!({})));
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // After initialize the client sends the version as a header; an unknown one is refused.
    let headers = |version: &str| {
        post(
            &app,
            &[
                ("x-api-key", &key),
                ("content-type", "application/json"),
                ("mcp-protocol-version", version),
            ],
            request(3, "ping", json!({})).to_string().as_bytes(),
        )
    };
    let (s, v, _) = headers("2025-06-18");
    assert_eq!((s, &v["result"]), (200, &json!({})), "{v}");
    assert_eq!(headers("1.0").0, 400);
}

#[test]
fn tools_list_names_every_tool_with_an_object_schema() {
    let app = app();
    let key = owner(&app);
    let (s, v) = rpc(&app, &key, request(1, "tools/list", json!({})));
    assert_eq!(s, 200, "{v}");
    let tools = v["result"]["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    let mut expected = TOOLS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for t in tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert!(
            t["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{t}"
        );
    }
    let create = tools.iter().find(|t| t["name"] == "tasks_create").unwrap();
    assert!(
        create["inputSchema"]["properties"]["title"].is_object(),
        "{create}"
    );
    assert_eq!(create["inputSchema"]["required"], json!(["title"]));
    let update = tools.iter().find(|t| t["name"] == "tasks_update").unwrap();
    for field in ["id_or_slug", "title", "assignee_id", "labels"] {
        assert!(
            update["inputSchema"]["properties"][field].is_object(),
            "{field}: {update}"
        );
    }
}

#[test]
fn tasks_round_trip_through_the_tools() {
    let app = app();
    let key = owner(&app);
    let (err, t) = tool(
        &app,
        &key,
        "tasks_create",
        json!({"title": "Fix login", "priority": "high", "labels": ["auth"]}),
    );
    assert!(!err, "{t}");
    assert_eq!(
        (t["slug"].as_str(), t["title"].as_str()),
        (Some("TET-1"), Some("Fix login"))
    );
    // The REST API sees the same task.
    let (s, rest) = call(&app, "GET", "/v1/tasks/TET-1", Some(&key), None);
    assert_eq!((s, &rest["id"]), (200, &t["id"]));

    let (err, got) = tool(&app, &key, "tasks_get", json!({"id_or_slug": "TET-1"}));
    assert!(!err);
    assert_eq!(got["priority"], "high");
    tool(&app, &key, "tasks_create", json!({"title": "Second"}));
    let (_, list) = tool(&app, &key, "tasks_list", json!({"priority": "high"}));
    let titles: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Fix login"]);
    let (_, list) = tool(&app, &key, "tasks_list", json!({"limit": 1}));
    assert_eq!(list["data"][0]["slug"], "TET-2");
    assert!(list["next_cursor"].is_string());

    let (err, up) = tool(
        &app,
        &key,
        "tasks_update",
        json!({"id_or_slug": "TET-1", "title": "Fix the login", "labels": []}),
    );
    assert!(!err, "{up}");
    assert_eq!(
        (up["title"].as_str(), &up["labels"]),
        (Some("Fix the login"), &json!([]))
    );
    assert_eq!(up["priority"], "high", "untouched fields stay");

    let (err, _) = tool(&app, &key, "tasks_delete", json!({"id_or_slug": "TET-1"}));
    assert!(!err);
    let (err, gone) = tool(&app, &key, "tasks_get", json!({"id_or_slug": "TET-1"}));
    assert!(err);
    assert_eq!(gone["error"]["code"], "not_found");
    assert_eq!(
        call(&app, "GET", "/v1/tasks/TET-1", Some(&key), None).0,
        404
    );

    let (_, statuses) = tool(&app, &key, "task_statuses_list", json!({}));
    assert_eq!(statuses.as_array().map(Vec::len), Some(5));
    let (_, members) = tool(&app, &key, "members_list", json!({}));
    assert_eq!(members[0]["role"], "owner");
    call(
        &app,
        "POST",
        "/v1/projects",
        Some(&key),
        Some(json!({"name": "web"})),
    );
    let (_, projects) = tool(&app, &key, "projects_list", json!({}));
    assert_eq!(projects["data"][0]["name"], "web");
}

#[test]
fn tool_failures_carry_the_apis_error() {
    let app = app();
    let key = owner(&app);
    // The store's cap on titles, as REST answers it.
    let (err, e) = tool(
        &app,
        &key,
        "tasks_create",
        json!({"title": "x".repeat(201)}),
    );
    assert!(err);
    assert_eq!(e["error"]["code"], "validation_failed");
    let (s, rest) = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&key),
        Some(json!({"title": "x".repeat(201)})),
    );
    assert_eq!((s, &rest), (422, &e));
    // Arguments of the wrong shape.
    let (err, e) = tool(&app, &key, "tasks_create", json!({"title": 3}));
    assert!(err);
    assert_eq!(e["error"]["code"], "invalid_arguments");
    let (err, e) = tool(
        &app,
        &key,
        "tasks_create",
        json!({"title": "x", "bogus": 1}),
    );
    assert!(err, "{e}");
    let (err, e) = tool(&app, &key, "worktrees_list", json!({"host_id": "hst_nope"}));
    assert!(err);
    assert!(e["error"]["code"].is_string());
    // An unknown tool is a protocol error.
    let (_, v) = rpc(
        &app,
        &key,
        request(1, "tools/call", json!({"name": "rm_rf", "arguments": {}})),
    );
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let (_, v) = rpc(
        &app,
        &key,
        request(1, "tools/call", json!({"arguments": {}})),
    );
    assert_eq!(v["error"]["code"], -32602, "{v}");
}

#[test]
fn mcp_needs_a_member_credential() {
    let app = app();
    let key = owner(&app);
    let body = request(1, "tools/list", json!({})).to_string();
    for headers in [
        vec![("content-type", "application/json")],
        vec![
            ("x-api-key", "tk_garbage"),
            ("content-type", "application/json"),
        ],
        vec![("authorization", "Bearer not.a.jwt")],
    ] {
        let (s, _, h) = post(&app, &headers, body.as_bytes());
        assert_eq!(s, 401, "{headers:?}");
        assert!(h.get("www-authenticate").is_some());
    }
    // A token works like the key.
    let (_, t) = call(&app, "POST", "/v1/auth/token", Some(&key), None);
    let bearer = format!("Bearer {}", t["token"].as_str().unwrap());
    let (s, v, _) = post(
        &app,
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["result"]["tools"].is_array());
}

#[test]
fn another_orgs_tasks_are_invisible() {
    let app = app();
    let a = owner(&app);
    let b_key = second_org(&app, &a);
    let (_, secret) = tool(
        &app,
        &b_key,
        "tasks_create",
        json!({"title": "secret plan"}),
    );
    assert_eq!(secret["slug"], "BRV-1");
    for key in ["BRV-1", secret["id"].as_str().unwrap()] {
        let (err, e) = tool(&app, &a, "tasks_get", json!({"id_or_slug": key}));
        assert!(err);
        assert_eq!(e["error"]["code"], "not_found");
        let (err, _) = tool(
            &app,
            &a,
            "tasks_update",
            json!({"id_or_slug": key, "title": "x"}),
        );
        assert!(err);
        let (err, _) = tool(&app, &a, "tasks_delete", json!({"id_or_slug": key}));
        assert!(err);
    }
    let (_, list) = tool(&app, &a, "tasks_list", json!({}));
    assert_eq!(list["data"], json!([]));
    let (_, members) = tool(&app, &a, "members_list", json!({}));
    assert_eq!(members.as_array().map(Vec::len), Some(1));
    let (_, mine) = tool(&app, &b_key, "tasks_get", json!({"id_or_slug": "BRV-1"}));
    assert_eq!(mine["title"], "secret plan");
}

#[test]
fn batches_notifications_and_bad_messages() {
    let app = app();
    let key = owner(&app);
    // A batch: answers for the requests only, in order.
    let (s, v) = rpc(
        &app,
        &key,
        json!([
            request(1, "ping", json!({})),
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            request(2, "tools/call", json!({"name": "tasks_create", "arguments": {"title": "b"}})),
            request(3, "nope", json!({})),
        ]),
    );
    assert_eq!(s, 200, "{v}");
    let answers = v.as_array().unwrap();
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(answers[1]["result"]["isError"], false);
    assert_eq!(answers[2]["error"]["code"], -32601);
    // Notifications alone, and responses: 202 without a body.
    let (s, v) = rpc(
        &app,
        &key,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!((s, v), (202, Value::Null));
    let (s, v) = rpc(
        &app,
        &key,
        json!([{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
               {"jsonrpc": "2.0", "id": 9, "result": {}}]),
    );
    assert_eq!((s, v), (202, Value::Null));
    // Unknown method, malformed JSON, not JSON-RPC.
    let (_, v) = rpc(&app, &key, request(4, "resources/list", json!({})));
    assert_eq!(
        (v["id"].as_u64(), v["error"]["code"].as_i64()),
        (Some(4), Some(-32601))
    );
    let (s, v, _) = post(
        &app,
        &[("x-api-key", &key), ("content-type", "application/json")],
        b"{\"jsonrpc\": \"2.0\", \"id\": 1,",
    );
    assert_eq!(s, 400);
    assert_eq!(
        (&v["id"], v["error"]["code"].as_i64()),
        (&Value::Null, Some(-32700))
    );
    let (_, v) = rpc(&app, &key, json!({"id": 5, "method": "ping"}));
    assert_eq!(
        (v["id"].as_u64(), v["error"]["code"].as_i64()),
        (Some(5), Some(-32600))
    );
    let (s, v) = rpc(&app, &key, json!([]));
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32600)));
    // No SSE stream to open, and only JSON is answered.
    let res = super::raw(&app, "GET", "/mcp", &[("x-api-key", &key)], None);
    assert_eq!(res.status().as_u16(), 405);
    let (s, _, _) = post(
        &app,
        &[("x-api-key", &key), ("accept", "text/event-stream")],
        request(1, "ping", json!({})).to_string().as_bytes(),
    );
    assert_eq!(s, 406);
}

#[test]
fn every_tool_call_is_audited_and_only_admins_read_the_trail() {
    let app = app();
    let key = owner(&app);
    let member = add_member(&app, &key, "bo@x.io", "member");
    let args = json!({"title": "audited", "labels": ["a"]});
    tool(&app, &member, "tasks_create", args.clone());
    tool(&app, &member, "tasks_get", json!({"id_or_slug": "TET-99"}));
    rpc(
        &app,
        &member,
        request(
            1,
            "tools/call",
            json!({"name": "no_such_tool", "arguments": {}}),
        ),
    );
    // Not tool calls: not audited.
    rpc(&app, &member, request(2, "tools/list", json!({})));

    let (s, _) = call(&app, "GET", "/v1/mcp/audit", Some(&member), None);
    assert_eq!(s, 403);
    let (s, page) = call(&app, "GET", "/v1/mcp/audit", Some(&key), None);
    assert_eq!(s, 200, "{page}");
    let calls = page["calls"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c["tool"].as_str().unwrap(), c["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("no_such_tool", "unknown_tool"),
            ("tasks_get", "not_found"),
            ("tasks_create", "ok")
        ],
        "newest first"
    );
    let (_, me) = call(&app, "GET", "/v1/me", Some(&member), None);
    assert!(calls.iter().all(|c| c["member_id"] == me["member_id"]));
    // The digest is of the arguments as canonical JSON (keys sorted, no spaces).
    let canonical = r#"{"labels":["a"],"title":"audited"}"#;
    assert_eq!(
        calls[2]["args_sha256"],
        format!("{:x}", Sha256::digest(canonical.as_bytes()))
    );
    assert!(calls[2]["duration_ms"].is_u64() && calls[2]["at"].is_string());
    // Paging.
    let (_, first) = call(&app, "GET", "/v1/mcp/audit?limit=2", Some(&key), None);
    assert_eq!(first["calls"].as_array().map(Vec::len), Some(2));
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        "GET",
        &format!("/v1/mcp/audit?limit=2&cursor={cursor}"),
        Some(&key),
        None,
    );
    assert_eq!(rest["calls"][0]["tool"], "tasks_create");
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(
        call(&app, "GET", "/v1/mcp/audit?cursor=zzz", Some(&key), None).0,
        400
    );
}

#[test]
fn hosts_sessions_and_terminals_through_the_tools() {
    let app = app();
    let key = owner(&app);
    let m = super::machine(1);
    let host = super::pair(&app, &key, &m);
    let token = super::connect(&app, &m, &host);
    let (s, l) = call(
        &app,
        "POST",
        &format!("/v1/hosts/{host}/links"),
        Some(&token),
        Some(json!({"project": "app", "path": "/src/app", "create": true})),
    );
    assert_eq!(s, 200, "{l}");

    // Machines, with why they are offline; asking one that is offline is a tool error.
    let (_, hosts) = tool(&app, &key, "hosts_list", json!({}));
    assert_eq!(hosts[0]["id"], host.as_str());
    assert_eq!(
        (&hosts[0]["online"], &hosts[0]["reason"]),
        (&json!(false), &json!("never connected"))
    );
    let (err, e) = tool(&app, &key, "worktrees_list", json!({"host_id": host}));
    assert!(err);
    assert_eq!(e["error"]["code"], "host_offline");

    // A session queued on the host, read back, listed, and its bad twin refused.
    let (err, started) = tool(
        &app,
        &key,
        "sessions_start",
        json!({"project": "app", "agent": "claude", "host": host, "prompt": "hi"}),
    );
    assert!(!err, "{started}");
    assert_eq!(started["status"], "queued");
    let sid = started["id"].as_str().unwrap();
    let (err, e) = tool(
        &app,
        &key,
        "sessions_start",
        json!({"project": "app", "agent": "Bad Name", "host": host}),
    );
    assert!(err);
    assert_eq!(e["error"]["code"], "validation_failed");
    let (_, got) = tool(&app, &key, "sessions_get", json!({"session_id": sid}));
    assert_eq!(got["id"], sid);
    let (_, list) = tool(&app, &key, "sessions_list", json!({"status": "queued"}));
    assert_eq!(list["data"][0]["id"], sid);

    // Its terminal in pieces of at most 64 KiB, never cut inside a character.
    let output = format!("a{}", "é".repeat(40_000));
    app.streams.1.borrow_mut().insert(
        started["stream_path"].as_str().unwrap().to_owned(),
        output.clone().into_bytes(),
    );
    let (err, first) = tool(&app, &key, "terminals_read", json!({"session_id": sid}));
    assert!(!err, "{first}");
    assert_eq!(first["next_offset"], 65_535);
    assert_eq!(first["up_to_date"], false);
    let (_, second) = tool(
        &app,
        &key,
        "terminals_read",
        json!({"session_id": sid, "offset": first["next_offset"]}),
    );
    assert_eq!(second["next_offset"], output.len());
    assert_eq!(second["up_to_date"], true);
    let whole = format!(
        "{}{}",
        first["text"].as_str().unwrap(),
        second["text"].as_str().unwrap()
    );
    assert_eq!(whole, output);
    let (err, e) = tool(
        &app,
        &key,
        "terminals_read",
        json!({"session_id": sid, "max_bytes": 0}),
    );
    assert!(err);
    assert_eq!(e["error"]["code"], "validation_failed");

    // Stopped at once (it never started); then there is nobody to type to.
    let (err, stopped) = tool(&app, &key, "sessions_stop", json!({"session_id": sid}));
    assert!(!err, "{stopped}");
    assert_eq!(stopped["status"], "stopped");
    let (err, e) = tool(
        &app,
        &key,
        "terminals_send_input",
        json!({"session_id": sid, "data": "ls\r"}),
    );
    assert!(err);
    assert_eq!(e["error"]["code"], "session_not_running");
}

#[test]
fn a_failed_audit_write_does_not_fail_the_call() {
    let app = app();
    let key = owner(&app);
    app.orgs.1.set(true);
    let (err, t) = tool(&app, &key, "tasks_create", json!({"title": "still made"}));
    assert!(!err, "{t}");
    assert_eq!(t["slug"], "TET-1");
    app.orgs.1.set(false);
    tool(&app, &key, "tasks_get", json!({"id_or_slug": "TET-1"}));
    let (_, page) = call(&app, "GET", "/v1/mcp/audit", Some(&key), None);
    let tools: Vec<&str> = page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tool"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        ["tasks_get"],
        "the lost record is lost, nothing else"
    );
}

#[test]
fn a_machine_calls_the_tools_as_itself_and_speaks_for_its_own_sessions_only() {
    let app = app();
    let key = owner(&app);
    let (m1, m2) = (machine(1), machine(2));
    let (h1, h2) = (pair(&app, &key, &m1), pair(&app, &key, &m2));
    let (t1, t2) = (connect(&app, &m1, &h1), connect(&app, &m2, &h2));

    // A host token drives the same tools, with a member's rights, recorded as the host.
    let (err, task) = tool(&app, &t1, "tasks_create", json!({"title": "Fix login"}));
    assert!(!err, "{task}");
    let (err, listed) = tool(&app, &t1, "tasks_list", json!({}));
    assert!(
        !err && listed["data"][0]["slug"] == task["slug"],
        "{listed}"
    );
    let (_, page) = call(&app, "GET", "/v1/mcp/audit", Some(&key), None);
    assert_eq!(page["calls"][0]["member_id"], h1.as_str(), "{page}");
    // Another org's machine sees nothing of this org.
    let other = second_org(&app, &key);
    let m3 = machine(3);
    let h3 = pair(&app, &other, &m3);
    let t3 = connect(&app, &m3, &h3);
    let (err, e) = tool(&app, &t3, "tasks_get", json!({"id_or_slug": task["id"]}));
    assert!(err && e["error"]["code"] == "not_found", "{e}");

    // A session with the task on h1.
    call(
        &app,
        "POST",
        &format!("/v1/hosts/{h1}/links"),
        Some(&t1),
        Some(json!({"project": "app", "path": "/src/app", "create": true})),
    );
    let start = |body: Value| call(&app, "POST", "/v1/sessions", Some(&key), Some(body));
    let (s, ses) =
        start(json!({"project": "app", "agent": "claude", "host": h1, "task": task["slug"]}));
    assert_eq!(s, 201, "{ses}");
    let id = ses["id"].as_str().unwrap();
    let progress = |token: &str, host: &str, body: Value| {
        call(
            &app,
            "POST",
            &format!("/v1/hosts/{host}/sessions/{id}/progress"),
            Some(token),
            Some(body),
        )
    };
    let said = json!({"message": "tests pass", "percent": 60});
    // Not running yet.
    assert_eq!(
        progress(&t1, &h1, said.clone()).1["error"]["code"],
        "session_not_running"
    );
    call(
        &app,
        "POST",
        &format!("/v1/hosts/{h1}/sessions/{id}/status"),
        Some(&t1),
        Some(json!({"status": "running", "at_ms": 1})),
    );
    let (s, r) = progress(&t1, &h1, said.clone());
    assert_eq!(s, 200, "{r}");
    let (_, got) = call(&app, "GET", &format!("/v1/sessions/{id}"), Some(&key), None);
    assert_eq!(
        (&got["progress"]["message"], &got["progress"]["percent"]),
        (&json!("tests pass"), &json!(60)),
        "{got}"
    );
    assert!(got["progress"]["at"].is_string());
    // Only its own host, only its own id in the path, and within the caps.
    assert_eq!(progress(&t2, &h2, said.clone()).0, 404);
    assert_eq!(progress(&t2, &h1, said.clone()).0, 403);
    assert_eq!(progress(&key, &h1, said.clone()).0, 401);
    for bad in [
        json!({"message": ""}),
        json!({"message": "x".repeat(2001)}),
        json!({"message": "ok", "percent": 101}),
        json!({"message": "ok", "extra": 1}),
    ] {
        assert_eq!(progress(&t1, &h1, bad.clone()).0, 422, "{bad}");
    }

    // The session's task, through the session.
    let update = |token: &str, host: &str, sid: &str, body: Value| {
        call(
            &app,
            "PATCH",
            &format!("/v1/hosts/{host}/sessions/{sid}/task"),
            Some(token),
            Some(body),
        )
    };
    let (_, statuses) = call(&app, "GET", "/v1/task-statuses", Some(&key), None);
    let done = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["category"] == "completed")
        .unwrap()["id"]
        .clone();
    let (s, t) = update(&t1, &h1, id, json!({"status_id": done}));
    assert_eq!((s, &t["status"]["id"]), (200, &done), "{t}");
    assert_eq!(update(&t2, &h2, id, json!({"title": "x"})).0, 404);
    assert_eq!(update(&t1, &h1, id, json!({"bogus": 1})).0, 422);
    let (_, bare) = start(json!({"project": "app", "agent": "claude", "host": h1, "prompt": "hi"}));
    let (s, e) = update(
        &t1,
        &h1,
        bare["id"].as_str().unwrap(),
        json!({"title": "x"}),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("no_task")),
        "{e}"
    );
}

#[test]
fn automation_tools_schedule_version_prompts_and_log_runs() {
    let app = app();
    let key = owner(&app);
    call(
        &app,
        "POST",
        "/v1/projects",
        Some(&key),
        Some(json!({"name": "app"})),
    );
    let (err, a) = tool(
        &app,
        &key,
        "automations_create",
        json!({"name": "weekly", "rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9", "timezone": "America/New_York",
               "project": "app", "agent": "codex", "prompt": "Update dependencies."}),
    );
    assert!(!err, "{a}");
    assert!(a["next_run_at"].is_string() && a["host"] == "any", "{a}");
    let (err, v2) = tool(
        &app,
        &key,
        "automations_set_prompt",
        json!({"automation": "weekly", "prompt": "Update and test."}),
    );
    assert!(!err && v2["version"] == 2, "{v2}");
    let (err, e) = tool(
        &app,
        &key,
        "automations_set_prompt",
        json!({"automation": "weekly", "prompt": "x", "rollback_to": 1}),
    );
    assert!(err && e["error"]["code"] == "validation_failed", "{e}");
    let (_, back) = tool(
        &app,
        &key,
        "automations_set_prompt",
        json!({"automation": "weekly", "rollback_to": 1}),
    );
    assert_eq!(
        (back["version"].as_i64(), back["active"].as_bool()),
        (Some(1), Some(true)),
        "{back}"
    );
    let (_, v) = tool(
        &app,
        &key,
        "automations_get_prompt",
        json!({"automation": a["id"], "version": 2}),
    );
    assert_eq!(
        (v["prompt"].as_str(), v["active"].as_bool()),
        (Some("Update and test."), Some(false))
    );
    let (_, paused) = tool(
        &app,
        &key,
        "automations_pause",
        json!({"automation": "weekly"}),
    );
    assert_eq!(paused["paused"], true);
    let (_, updated) = tool(
        &app,
        &key,
        "automations_update",
        json!({"automation": "weekly", "name": "monday"}),
    );
    assert_eq!(updated["name"], "monday");
    // No host has the project: the run is recorded as failed with the reason.
    let (err, run) = tool(
        &app,
        &key,
        "automations_run",
        json!({"automation": "monday"}),
    );
    assert!(!err && run["status"] == "failed", "{run}");
    let (_, logs) = tool(
        &app,
        &key,
        "automations_logs",
        json!({"automation": "monday", "limit": 5}),
    );
    assert_eq!(logs["data"][0]["id"], run["id"]);
    let (_, list) = tool(&app, &key, "automations_list", json!({}));
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    let (err, _) = tool(
        &app,
        &key,
        "automations_delete",
        json!({"automation": "monday"}),
    );
    assert!(!err);
    let (err, e) = tool(
        &app,
        &key,
        "automations_get",
        json!({"automation": "monday"}),
    );
    assert!(err && e["error"]["code"] == "not_found", "{e}");
}
