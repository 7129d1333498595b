//! Chat sessions through the router: starting one, follow-ups and their checks, approval
//! answers mapped from the daemon's outcome and recorded, titles from the session's host, and
//! the same through MCP.

use super::{
    App, add_member, app, call, connect, futures_lite_block_on, machine, owner, pair, second_org,
};
use crate::api::handle;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// An org with one host (`app` linked on it): (owner key, host id, host token).
fn org(app: &App) -> (String, String, String) {
    let key = owner(app);
    let m = machine(1);
    let host = pair(app, &key, &m);
    let token = connect(app, &m, &host);
    let (s, l) = call(
        app,
        "POST",
        &format!("/v1/hosts/{host}/links"),
        Some(&token),
        Some(json!({"project": "app", "path": "/src/app", "create": true})),
    );
    assert_eq!(s, 200, "{l}");
    (key, host, token)
}

/// Starts a session of `kind` on `host`; answers it.
fn start(app: &App, key: &str, host: &str, kind: &str, prompt: &str) -> Value {
    let (s, v) = call(
        app,
        "POST",
        "/v1/sessions",
        Some(key),
        Some(
            json!({"project": "app", "agent": "claude", "host": host, "kind": kind,
                    "prompt": prompt}),
        ),
    );
    assert_eq!(s, 201, "{v}");
    v
}

/// The host reports its session `status`.
fn report(app: &App, token: &str, host: &str, id: &str, status: &str) {
    let (s, v) = call(
        app,
        "POST",
        &format!("/v1/hosts/{host}/sessions/{id}/status"),
        Some(token),
        Some(json!({"status": status, "at_ms": 1})),
    );
    assert_eq!(s, 200, "{v}");
}

/// A running chat session: its id.
fn running_chat(app: &App, key: &str, host: &str, token: &str) -> String {
    let c = start(app, key, host, "chat", "Fix the login");
    let id = c["id"].as_str().unwrap().to_owned();
    report(app, token, host, &id, "running");
    id
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn field(v: &Value) -> &str {
    v["error"]["details"]["field"].as_str().unwrap_or("")
}

fn b64(n: usize) -> String {
    STANDARD.encode(vec![7u8; n])
}

#[test]
fn chat_sessions_start_with_a_json_stream_and_a_title() {
    let app = app();
    let (key, host, _) = org(&app);
    let c = start(&app, &key, &host, "chat", "## Fix the   login\nIt 500s.");
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["kind"], "chat");
    assert_eq!(c["title"], "Fix the login");
    assert_eq!(
        c["stream_path"],
        format!("hosts/{host}/sessions/{id}/chat"),
        "{c}"
    );
    let created = app.streams.0.borrow().last().cloned().unwrap();
    assert_eq!(
        (created.1.as_str(), created.2.as_str()),
        (c["stream_path"].as_str().unwrap(), "application/json")
    );
    let command = app.tunnels.command_bodies.borrow().last().cloned().unwrap();
    assert_eq!(
        (&command["kind"], &command["stream_path"]),
        (&json!("chat"), &c["stream_path"])
    );

    // The default is a terminal session, as before.
    let (s, t) = call(
        &app,
        "POST",
        "/v1/sessions",
        Some(&key),
        Some(json!({"project": "app", "agent": "claude", "host": host, "prompt": "hi"})),
    );
    assert_eq!((s, t["kind"].as_str()), (201, Some("terminal")), "{t}");
    assert!(t["stream_path"].as_str().unwrap().ends_with("/terminal"));
    assert_eq!(
        app.streams.0.borrow().last().unwrap().2,
        "application/octet-stream"
    );
    assert_eq!(
        app.tunnels.command_bodies.borrow().last().unwrap()["kind"],
        "terminal"
    );
    let (s, e) = call(
        &app,
        "POST",
        "/v1/sessions",
        Some(&key),
        Some(json!({"project": "app", "agent": "claude", "host": host, "kind": "gui"})),
    );
    assert_eq!(s, 422, "{e}");

    let (s, page) = call(&app, "GET", "/v1/sessions?kind=chat", Some(&key), None);
    assert_eq!(s, 200, "{page}");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id]);
    assert_eq!(
        call(&app, "GET", "/v1/sessions?kind=gui", Some(&key), None).0,
        400
    );
}

#[test]
fn follow_ups_are_checked_then_sent_to_the_sessions_host() {
    let app = app();
    let (key, host, token) = org(&app);
    let id = running_chat(&app, &key, &host, &token);
    let send = |id: &str, body: Value| {
        call(
            &app,
            "POST",
            &format!("/v1/sessions/{id}/messages"),
            Some(&key),
            Some(body),
        )
    };
    let file = |name: &str, data: String| json!({"name": name, "data_base64": data});

    for (body, want) in [
        (json!({"text": ""}), "text"),
        (json!({"text": " \n "}), "text"),
        (json!({"text": "x".repeat(100_001)}), "text"),
        (json!({"text": "a\u{7}b"}), "text"),
        (
            json!({"text": "hi", "attachments": vec![file("a", b64(1)); 9]}),
            "attachments",
        ),
        (
            json!({"text": "hi", "attachments": [file("a", b64(1)), file("b", "%%%".into())]}),
            "attachments[1].data_base64",
        ),
        (
            json!({"text": "hi", "attachments": [file("big", b64(256 * 1024 + 1))]}),
            "attachments[0].data_base64",
        ),
        (
            json!({"text": "hi", "attachments": vec![file("f", b64(200 * 1024)); 3]}),
            "attachments",
        ),
        (
            json!({"text": "hi", "attachments": [file("ok.txt", b64(1)), file("$$$", b64(1))]}),
            "attachments[1].name",
        ),
    ] {
        let (s, e) = send(&id, body);
        assert_eq!(
            (s, code(&e), field(&e)),
            (422, "validation_failed", want),
            "{e}"
        );
    }
    let (s, e) = send(
        &id,
        json!({"text": "hi", "attachments": vec![file("f", b64(200 * 1024)); 3]}),
    );
    assert!(
        s == 422 && e["error"]["message"].as_str().unwrap().contains("524288"),
        "the cap is named: {e}"
    );
    assert_eq!(send(&id, json!({"text": "hi", "files": []})).0, 422);

    // Only chat sessions, only running ones, only the org's own.
    let t = start(&app, &key, &host, "terminal", "x");
    let tid = t["id"].as_str().unwrap();
    report(&app, &token, &host, tid, "running");
    let (s, e) = send(tid, json!({"text": "hi"}));
    assert_eq!((s, code(&e)), (409, "not_chat"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("/input"));
    let queued = start(&app, &key, &host, "chat", "later");
    let (s, e) = send(queued["id"].as_str().unwrap(), json!({"text": "hi"}));
    assert_eq!((s, code(&e)), (409, "session_not_running"), "{e}");
    let other = second_org(&app, &key);
    let (s, _) = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/messages"),
        Some(&other),
        Some(json!({"text": "hi"})),
    );
    assert_eq!(s, 404);
    assert_eq!(send("ses_1", json!({"text": "hi"})).0, 400);
    // A chat session takes no keystrokes or resizes.
    for (route, body) in [
        ("input", json!({"data": "x"})),
        ("resize", json!({"cols": 80, "rows": 24})),
    ] {
        let (s, e) = call(
            &app,
            "POST",
            &format!("/v1/sessions/{id}/{route}"),
            Some(&key),
            Some(body),
        );
        assert_eq!((s, code(&e)), (409, "not_terminal"), "{e}");
    }

    // The host is offline: 503. Then it answers.
    let (s, e) = send(&id, json!({"text": "hi"}));
    assert_eq!((s, code(&e)), (503, "host_offline"), "{e}");
    let delivered = json!({"message_id": "msg_x", "attachments": [
        {"name": "notes.txt", "path": ".tether/attachments/msg_x/notes.txt", "bytes": 3}]});
    app.tunnels
        .answers
        .borrow_mut()
        .insert("session.message".into(), delivered.clone());
    let (s, v) = send(
        &id,
        json!({"text": "Also check the logout.\nThanks", "attachments": [
            file("../notes.txt", b64(3)), file("notes.txt", b64(2))]}),
    );
    assert_eq!((s, &v), (202, &delivered));
    let (h, method, body) = app.tunnels.rpcs.borrow().last().cloned().unwrap();
    assert_eq!(
        (h.as_str(), method.as_str()),
        (host.as_str(), "session.message")
    );
    assert_eq!(body["session_id"], id.as_str());
    assert_eq!(body["text"], "Also check the logout.\nThanks");
    assert!(body["message_id"].as_str().unwrap().starts_with("msg_"));
    assert!(body["sent_by"].as_str().unwrap().starts_with("mem_"));
    let names: Vec<&str> = body["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt", "notes-2.txt"]);
    assert_eq!(body["attachments"][0]["data_base64"], b64(3));
}

fn answered(request: &str, decision: &str, member: &str, role: &str) -> Value {
    json!({"outcome": "answered", "request_id": request, "decision": decision,
           "answered_by": {"kind": "member", "id": member, "role": role}})
}

#[test]
fn approvals_are_answered_by_members_mapped_and_recorded() {
    let app = app();
    let (key, host, token) = org(&app);
    let id = running_chat(&app, &key, &host, &token);
    let (_, me) = call(&app, "GET", "/v1/me", Some(&key), None);
    let member = me["member_id"].as_str().unwrap().to_owned();
    let request = tether_durable::ids::new("apr");
    let approve = |id: &str, request: &str, body: Value| {
        call(
            &app,
            "POST",
            &format!("/v1/sessions/{id}/approvals/{request}"),
            Some(&key),
            Some(body),
        )
    };
    let set = |outcome: Value| {
        app.tunnels
            .answers
            .borrow_mut()
            .insert("session.approve".into(), outcome);
    };

    // Checked before anything is asked.
    let (s, e) = approve(&id, "apr_123", json!({"decision": "allow"}));
    assert_eq!((s, code(&e)), (400, "bad_request"), "{e}");
    assert_eq!(approve(&id, &request, json!({"decision": "maybe"})).0, 422);
    let (s, e) = approve(&id, &request, json!({"decision": "deny", "reason": "a\nb"}));
    assert_eq!((s, field(&e)), (422, "reason"), "{e}");
    let long = "x".repeat(1001);
    assert_eq!(
        approve(&id, &request, json!({"decision": "deny", "reason": long})).0,
        422
    );
    let t = start(&app, &key, &host, "terminal", "x");
    let (s, e) = approve(
        t["id"].as_str().unwrap(),
        &request,
        json!({"decision": "allow"}),
    );
    assert_eq!((s, code(&e)), (409, "not_chat"), "{e}");
    let other = second_org(&app, &key);
    let (s, _) = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/approvals/{request}"),
        Some(&other),
        Some(json!({"decision": "allow"})),
    );
    assert_eq!(s, 404);
    // The host is offline.
    let (s, e) = approve(&id, &request, json!({"decision": "allow"}));
    assert_eq!((s, code(&e)), (503, "host_offline"), "{e}");

    // Each outcome of the daemon is its own answer.
    set(json!({"outcome": "unknown"}));
    let (s, e) = approve(&id, &request, json!({"decision": "allow"}));
    assert_eq!((s, code(&e)), (404, "approval_not_found"), "{e}");
    set(json!({"outcome": "role_too_low", "required": "owner"}));
    let (s, e) = approve(&id, &request, json!({"decision": "allow"}));
    assert_eq!((s, code(&e)), (403, "role_too_low"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("owner"));
    set(json!({"outcome": "already_answered", "decision": "deny",
               "answered_by": {"kind": "timeout"}}));
    let (s, e) = approve(&id, &request, json!({"decision": "allow"}));
    assert_eq!((s, code(&e)), (409, "already_answered"), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("denied by its timeout"),
        "{e}"
    );
    set(json!({"outcome": "already_answered", "decision": "allow",
               "answered_by": {"kind": "member", "id": "mem_other", "role": "admin"}}));
    let (_, e) = approve(&id, &request, json!({"decision": "allow"}));
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed by mem_other")
    );
    set(json!("garbage"));
    let (s, e) = approve(&id, &request, json!({"decision": "allow"}));
    assert_eq!((s, code(&e)), (502, "bad_host_answer"), "{e}");

    set(answered(&request, "deny", &member, "owner"));
    let (s, r) = approve(
        &id,
        &request,
        json!({"decision": "deny", "reason": " not now "}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (
            &r["request_id"],
            &r["session_id"],
            &r["decision"],
            &r["reason"]
        ),
        (
            &json!(request),
            &json!(id),
            &json!("deny"),
            &json!("not now")
        )
    );
    assert_eq!(
        r["answered_by"],
        json!({"kind": "member", "id": member, "role": "owner"})
    );
    assert!(r["answered_at"].is_string());
    let (_, method, body) = app.tunnels.rpcs.borrow().last().cloned().unwrap();
    assert_eq!(method, "session.approve");
    assert_eq!(
        body,
        json!({"session_id": id, "request_id": request, "decision": "deny",
               "reason": "not now",
               "answered_by": {"kind": "member", "id": member, "role": "owner"}})
    );

    // The same member's same answer again (a retry) is the same 200; anyone else's is a 409.
    set(json!({"outcome": "already_answered", "decision": "deny",
               "answered_by": {"kind": "member", "id": member, "role": "owner"}}));
    let (s, again) = approve(&id, &request, json!({"decision": "deny"}));
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        again["answered_at"], r["answered_at"],
        "the first record stands"
    );
    let (s, e) = approve(&id, &request, json!({"decision": "allow"}));
    assert_eq!((s, code(&e)), (409, "already_answered"), "{e}");

    // A second member's answer to another request; the list shows who answered, newest first.
    let admin = add_member(&app, &key, "ad@x.io", "admin");
    let (_, ad) = call(&app, "GET", "/v1/me", Some(&admin), None);
    let second = tether_durable::ids::new("apr");
    set(answered(
        &second,
        "allow",
        ad["member_id"].as_str().unwrap(),
        "admin",
    ));
    let (s, _) = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/approvals/{second}"),
        Some(&admin),
        Some(json!({"decision": "allow", "reason": ""})),
    );
    assert_eq!(s, 200);
    let (s, list) = call(
        &app,
        "GET",
        &format!("/v1/sessions/{id}/approvals"),
        Some(&key),
        None,
    );
    assert_eq!(s, 200, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["request_id"], second.as_str());
    assert_eq!(list[0]["answered_by"]["id"], ad["member_id"]);
    assert_eq!(list[0]["answered_by"]["role"], "admin");
    assert_eq!(list[0]["reason"], Value::Null);
    assert_eq!(list[1]["answered_by"]["id"], member.as_str());
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/v1/sessions/{id}/approvals"),
            Some(&other),
            None
        )
        .0,
        404
    );
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/sessions/{id}/approvals"),
            Some(&key),
            None
        )
        .0,
        405
    );

    // An ended session's requests are settled.
    report(&app, &token, &host, &id, "exited");
    let (s, e) = approve(
        &id,
        &tether_durable::ids::new("apr"),
        json!({"decision": "allow"}),
    );
    assert_eq!((s, code(&e)), (409, "session_ended"), "{e}");
}

#[test]
fn hosts_title_their_own_sessions() {
    let app = app();
    let (key, host, token) = org(&app);
    let c = start(&app, &key, &host, "chat", "fix it");
    let id = c["id"].as_str().unwrap();
    let m2 = machine(2);
    let host2 = pair(&app, &key, &m2);
    let token2 = connect(&app, &m2, &host2);
    let put = |cred: &str, h: &str, body: Value| {
        call(
            &app,
            "PUT",
            &format!("/v1/hosts/{h}/sessions/{id}/title"),
            Some(cred),
            Some(body),
        )
    };
    let (s, v) = put(&token, &host, json!({"title": "Login 500s on Safari"}));
    assert_eq!(
        (s, v["title"].as_str()),
        (200, Some("Login 500s on Safari")),
        "{v}"
    );
    let (_, got) = call(&app, "GET", &format!("/v1/sessions/{id}"), Some(&key), None);
    assert_eq!(got["title"], "Login 500s on Safari");

    assert_eq!(
        put(&key, &host, json!({"title": "x"})).0,
        401,
        "members cannot"
    );
    assert_eq!(
        put(&token2, &host, json!({"title": "x"})).0,
        403,
        "another host's path"
    );
    assert_eq!(
        put(&token2, &host2, json!({"title": "x"})).0,
        404,
        "another host's session"
    );
    for bad in [
        json!({"title": ""}),
        json!({"title": "x".repeat(81)}),
        json!({"title": "a\nb"}),
        json!({"title": "x", "source": "llm"}),
    ] {
        assert_eq!(put(&token, &host, bad.clone()).0, 422, "{bad}");
    }
    let (s, _) = call(
        &app,
        "POST",
        &format!("/v1/hosts/{host}/sessions/{id}/title"),
        Some(&token),
        Some(json!({"title": "x"})),
    );
    assert_eq!(s, 405);
}

/// Calls an MCP tool with `auth` (a header); answers `(isError, the text parsed as JSON)`.
fn tool(app: &App, auth: (&str, &str), name: &str, args: Value) -> (bool, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": name, "arguments": args}});
    let req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(auth.0, auth.1)
        .header("content-type", "application/json")
        .body(body.to_string().into_bytes())
        .unwrap();
    let res = futures_lite_block_on(handle(app, req, "test"));
    let v: Value = serde_json::from_slice(res.body()).unwrap();
    let result = &v["result"];
    let text = result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    (
        result["isError"].as_bool().unwrap_or(false),
        serde_json::from_str(text).unwrap(),
    )
}

#[test]
fn mcp_sends_follow_ups_and_answers_approvals_for_members_only() {
    let app = app();
    let (key, host, token) = org(&app);
    let id = running_chat(&app, &key, &host, &token);
    let member = ("x-api-key", key.as_str());
    let bearer = format!("Bearer {token}");
    let machine = ("authorization", bearer.as_str());

    app.tunnels.answers.borrow_mut().insert(
        "session.message".into(),
        json!({"message_id": "msg_1", "attachments": []}),
    );
    let (err, v) = tool(
        &app,
        member,
        "sessions_send_message",
        json!({"session_id": id, "text": "go on"}),
    );
    assert!(!err, "{v}");
    assert_eq!(v["message_id"], "msg_1");
    // The session's own agent (its host's token) may send follow-ups, as the host.
    let (err, _) = tool(
        &app,
        machine,
        "sessions_send_message",
        json!({"session_id": id, "text": "note to self"}),
    );
    assert!(!err);
    assert_eq!(
        app.tunnels.rpcs.borrow().last().unwrap().2["sent_by"],
        host.as_str()
    );
    let (err, v) = tool(
        &app,
        member,
        "sessions_send_message",
        json!({"session_id": id, "text": ""}),
    );
    assert!(err && v["error"]["code"] == "validation_failed", "{v}");

    let request = tether_durable::ids::new("apr");
    let (err, v) = tool(
        &app,
        machine,
        "sessions_answer_approval",
        json!({"session_id": id, "request_id": request, "decision": "allow"}),
    );
    assert!(err && v["error"]["code"] == "members_only", "{v}");
    let (_, me) = call(&app, "GET", "/v1/me", Some(&key), None);
    app.tunnels.answers.borrow_mut().insert(
        "session.approve".into(),
        answered(
            &request,
            "allow",
            me["member_id"].as_str().unwrap(),
            "owner",
        ),
    );
    let (err, v) = tool(
        &app,
        member,
        "sessions_answer_approval",
        json!({"session_id": id, "request_id": request, "decision": "allow"}),
    );
    assert!(!err, "{v}");
    assert_eq!(
        (v["decision"].as_str(), v["answered_by"]["role"].as_str()),
        (Some("allow"), Some("owner"))
    );
    let (err, v) = tool(
        &app,
        member,
        "sessions_answer_approval",
        json!({"session_id": id, "request_id": request, "decision": "yes"}),
    );
    assert!(err && v["error"]["code"] == "invalid_arguments", "{v}");
}
