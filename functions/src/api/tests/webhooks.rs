//! Webhook configurations and deliveries, through the router.

use super::{
    App, add_member, app, call, connect, count_rows, machine, owner, pair, raw, second_org,
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn project(app: &App, key: &str, name: &str) -> String {
    let (s, p) = call(
        app,
        "POST",
        "/v1/projects",
        Some(key),
        Some(json!({ "name": name })),
    );
    assert_eq!(s, 201, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

fn create(app: &App, key: &str, body: Value) -> (u16, Value) {
    call(app, "POST", "/v1/webhooks", Some(key), Some(body))
}

/// A GitHub delivery signed with `secret`: (status, body).
fn github(
    app: &App,
    path: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: &Value,
) -> (u16, Value) {
    let bytes = body.to_string();
    let sig = format!("sha256={}", hmac_hex(secret, &[bytes.as_bytes()]));
    let res = raw(
        app,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("x-github-event", event),
            ("x-github-delivery", delivery),
            ("x-hub-signature-256", &sig),
        ],
        Some(body.clone()),
    );
    let v = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    (res.status().as_u16(), v)
}

fn comment(body: &str) -> Value {
    json!({"action": "created",
           "issue": {"number": 1, "title": "Spelling error in the README file"},
           "comment": {"body": body, "html_url": "https://github.com/o/r/issues/1#issuecomment-1",
                       "user": {"login": "octocat", "type": "User"}}})
}

fn tasks(app: &App, key: &str) -> Vec<Value> {
    let (s, page) = call(app, "GET", "/v1/tasks", Some(key), None);
    assert_eq!(s, 200);
    page["data"].as_array().unwrap().clone()
}

#[test]
fn webhook_configs_are_admin_written_member_read_and_org_scoped() {
    let app = app();
    let key = owner(&app);
    let prj = project(&app, &key, "app");
    let member = add_member(&app, &key, "m@example.com", "member");

    // Members read, admins write.
    let body = json!({"provider": "github", "project": "APP", "label": "tether"});
    assert_eq!(create(&app, &member, body.clone()).0, 403);
    let (s, w) = create(&app, &key, body);
    assert_eq!(s, 201, "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("whk_"));
    assert_eq!(w["project_id"], prj.as_str(), "the project by name");
    assert_eq!(w["mention"], "@tether");
    assert_eq!(w["url_path"], format!("/webhooks/github/{id}"));
    let secret = w["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64, "32 random bytes in hex");
    for path in ["/v1/webhooks".to_owned(), format!("/v1/webhooks/{id}")] {
        let (s, v) = call(&app, "GET", &path, Some(&member), None);
        assert_eq!(s, 200, "{v}");
        assert!(!v.to_string().contains(&secret), "the secret is shown once");
    }
    let (s, v) = call(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(&member),
        Some(json!({"name": "x"})),
    );
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(&key),
        Some(json!({"name": "gh", "label": null, "mention": "@bot", "disabled": true})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["name"], &v["label"], &v["mention"], &v["disabled"]),
        (&json!("gh"), &Value::Null, &json!("@bot"), &json!(true))
    );
    // Rotation answers a new secret, once.
    let (s, r) = call(
        &app,
        "POST",
        &format!("/v1/webhooks/{id}/rotate"),
        Some(&key),
        None,
    );
    assert_eq!(s, 200, "{r}");
    let rotated = r["secret"].as_str().unwrap();
    assert_ne!(rotated, secret);
    let (_, g) = call(&app, "GET", &format!("/v1/webhooks/{id}"), Some(&key), None);
    assert!(g.get("secret").is_none());

    // Another org sees none of it.
    let other = &second_org(&app, &key);
    for (m, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"name": "x"}))),
        ("DELETE", None),
    ] {
        assert_eq!(
            call(&app, m, &format!("/v1/webhooks/{id}"), Some(other), body).0,
            404,
            "{m}"
        );
    }
    let (_, list) = call(&app, "GET", "/v1/webhooks", Some(other), None);
    assert_eq!(list, json!([]));
    assert_eq!(
        create(&app, other, json!({"provider": "github", "project": prj})).0,
        422,
        "another org's project"
    );

    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/webhooks/{id}"),
            Some(&member),
            None
        )
        .0,
        403
    );
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/webhooks/{id}"),
            Some(&key),
            None
        )
        .0,
        204
    );
    assert_eq!(
        call(&app, "GET", &format!("/v1/webhooks/{id}"), Some(&key), None).0,
        404
    );
}

#[test]
fn webhook_input_is_checked_and_capped() {
    let app = app();
    let key = owner(&app);
    project(&app, &key, "app");
    for (body, code) in [
        (json!({"provider": "gitlab", "project": "app"}), 422),
        (json!({"provider": "slack", "project": "app"}), 422),
        (json!({"provider": "linear", "project": "app"}), 422),
        (json!({"provider": "github", "project": "nope"}), 422),
        (
            json!({"provider": "github", "project": "app", "mention": "two words"}),
            422,
        ),
        (
            json!({"provider": "github", "project": "app", "secret": "short"}),
            422,
        ),
        (
            json!({"provider": "github", "project": "app", "extra": 1}),
            422,
        ),
        (
            json!({"provider": "github", "project": "app", "session": {"agent": "Bad Agent"}}),
            422,
        ),
        (
            json!({"provider": "github", "project": "app",
                   "session": {"agent": "claude", "host": "hst_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"}}),
            422,
        ),
    ] {
        let (s, v) = create(&app, &key, body.clone());
        assert_eq!(s, code, "{body}: {v}");
    }
    let (s, v) = create(
        &app,
        &key,
        json!({"provider": "slack", "project": "app", "secret": "8f742231b10e8888abcd99yyyzzz85a5"}),
    );
    assert_eq!(
        (s, &v["secret"]),
        (201, &json!("8f742231b10e8888abcd99yyyzzz85a5")),
        "{v}"
    );
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        call(
            &app,
            "POST",
            &format!("/v1/webhooks/{id}/rotate"),
            Some(&key),
            None
        )
        .0,
        422,
        "Slack issues its own secrets"
    );
    assert_eq!(
        call(&app, "GET", "/v1/webhooks/whk_nope", Some(&key), None).0,
        400
    );
    for _ in 1..20 {
        assert_eq!(
            create(&app, &key, json!({"provider": "github", "project": "app"})).0,
            201
        );
    }
    let (s, v) = create(&app, &key, json!({"provider": "github", "project": "app"}));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("limit_exceeded"))
    );
}

#[test]
fn github_deliveries_make_tasks_once_and_need_the_signature() {
    let app = app();
    let key = owner(&app);
    let prj = project(&app, &key, "app");
    let (_, w) = create(
        &app,
        &key,
        json!({"provider": "github", "project": "app", "label": "tether"}),
    );
    let path = w["url_path"].as_str().unwrap().to_owned();
    let secret = w["secret"].as_str().unwrap().to_owned();

    let (s, v) = github(&app, &path, &secret, "ping", "d0", &json!({"zen": "hi"}));
    assert_eq!((s, &v["status"]), (200, &json!("pong")), "{v}");

    let body = comment("Hey @Tether, please fix this.");
    let (s, v) = github(&app, &path, &secret, "issue_comment", "d1", &body);
    assert_eq!((s, &v["status"]), (201, &json!("created")), "{v}");
    assert_eq!(v["task"]["title"], "Spelling error in the README file");
    assert_eq!(v["task"]["project_id"], prj.as_str());
    assert_eq!(v["task"]["created_by"], w["id"]);
    assert_eq!(v["session"], Value::Null);
    let description = v["task"]["description"].as_str().unwrap();
    assert!(description.contains("please fix this"));
    assert!(description.ends_with("https://github.com/o/r/issues/1#issuecomment-1"));
    assert_eq!(tasks(&app, &key).len(), 1);

    // The same delivery again: nothing new.
    let (s, v) = github(&app, &path, &secret, "issue_comment", "d1", &body);
    assert_eq!((s, &v["status"]), (200, &json!("duplicate")), "{v}");
    assert_eq!(tasks(&app, &key).len(), 1);
    assert_eq!(
        count_rows(&app, "SELECT count(*) AS n FROM webhook_deliveries"),
        1
    );

    // Wrong secret, tampered body, no signature: 401 and nothing created.
    let (s, v) = github(&app, &path, "wrong-secret", "issue_comment", "d2", &body);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let sig = format!(
        "sha256={}",
        hmac_hex(&secret, &[body.to_string().as_bytes()])
    );
    let tampered = comment("Hey @tether, delete everything.");
    let res = raw(
        &app,
        "POST",
        &path,
        &[
            ("x-github-event", "issue_comment"),
            ("x-github-delivery", "d3"),
            ("x-hub-signature-256", &sig),
        ],
        Some(tampered),
    );
    assert_eq!(res.status().as_u16(), 401);
    let res = raw(
        &app,
        "POST",
        &path,
        &[
            ("x-github-event", "issue_comment"),
            ("x-github-delivery", "d4"),
        ],
        Some(body.clone()),
    );
    assert_eq!(res.status().as_u16(), 401);
    // No delivery id: 400.
    let sig = format!(
        "sha256={}",
        hmac_hex(&secret, &[body.to_string().as_bytes()])
    );
    let res = raw(
        &app,
        "POST",
        &path,
        &[
            ("x-github-event", "issue_comment"),
            ("x-hub-signature-256", &sig),
        ],
        Some(body.clone()),
    );
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(tasks(&app, &key).len(), 1);

    // Not mentioned, another label: ignored. The configured label: a task.
    let (s, v) = github(
        &app,
        &path,
        &secret,
        "issue_comment",
        "d5",
        &comment("LGTM"),
    );
    assert_eq!((s, &v["status"]), (202, &json!("ignored")), "{v}");
    let labeled = |name: &str| {
        json!({"action": "labeled", "label": {"name": name},
               "issue": {"title": "Crash on start", "body": "Stack trace", "html_url": "https://github.com/o/r/issues/2"}})
    };
    assert_eq!(
        github(&app, &path, &secret, "issues", "d6", &labeled("bug")).0,
        202
    );
    let (s, v) = github(&app, &path, &secret, "issues", "d7", &labeled("tether"));
    assert_eq!(
        (s, &v["task"]["title"]),
        (201, &json!("Crash on start")),
        "{v}"
    );
    let review = json!({"action": "created",
        "pull_request": {"title": "Update the README"},
        "comment": {"body": "@tether rename this", "html_url": "https://github.com/o/r/pull/3#discussion_r1", "user": {"type": "User"}}});
    let (s, v) = github(
        &app,
        &path,
        &secret,
        "pull_request_review_comment",
        "d8",
        &review,
    );
    assert_eq!(
        (s, &v["task"]["title"]),
        (201, &json!("Update the README")),
        "{v}"
    );
    assert_eq!(tasks(&app, &key).len(), 3);

    // Another provider's path, an unknown id, a disabled webhook: 404.
    let id = w["id"].as_str().unwrap();
    let (s, _) = github(
        &app,
        &format!("/webhooks/slack/{id}"),
        &secret,
        "issue_comment",
        "d9",
        &body,
    );
    assert_eq!(s, 404);
    let (s, _) = github(
        &app,
        "/webhooks/github/whk_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d",
        &secret,
        "issue_comment",
        "d9",
        &body,
    );
    assert_eq!(s, 404);
    call(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(&key),
        Some(json!({"disabled": true})),
    );
    let (s, _) = github(&app, &path, &secret, "issue_comment", "d9", &body);
    assert_eq!(s, 404);
    // GET is not a delivery.
    assert_eq!(raw(&app, "GET", &path, &[], None).status().as_u16(), 405);
}

#[test]
fn a_failed_session_start_keeps_the_task_and_says_why() {
    let app = app();
    let key = owner(&app);
    project(&app, &key, "app");
    let (s, w) = create(
        &app,
        &key,
        json!({"provider": "github", "project": "app", "session": {"agent": "claude"}}),
    );
    assert_eq!(s, 201, "{w}");
    assert_eq!(w["session"], json!({"agent": "claude", "host": null}));
    let path = w["url_path"].as_str().unwrap().to_owned();
    let secret = w["secret"].as_str().unwrap().to_owned();
    let (s, v) = github(
        &app,
        &path,
        &secret,
        "issue_comment",
        "x1",
        &comment("@tether go"),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["session"], Value::Null);
    assert_eq!(v["session_error"]["code"], "project_not_linked", "{v}");
    assert_eq!(tasks(&app, &key).len(), 1);

    // A host with the project linked: the session is queued on it for the new task.
    let m = machine(7);
    let host = pair(&app, &key, &m);
    let token = connect(&app, &m, &host);
    let (s, l) = call(
        &app,
        "POST",
        &format!("/v1/hosts/{host}/links"),
        Some(&token),
        Some(json!({"project": "app", "path": "/src/app"})),
    );
    assert_eq!(s, 200, "{l}");
    // `any` needs an online host (none here); the host by id is queued for.
    let (s, v) = github(
        &app,
        &path,
        &secret,
        "issue_comment",
        "x2",
        &comment("@tether again"),
    );
    assert_eq!(
        (s, &v["session_error"]["code"]),
        (201, &json!("no_host_online")),
        "{v}"
    );
    let id = w["id"].as_str().unwrap();
    let (s, p) = call(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(&key),
        Some(json!({"session": {"agent": "codex", "host": host}})),
    );
    assert_eq!(s, 200, "{p}");
    let (s, v) = github(
        &app,
        &path,
        &secret,
        "issue_comment",
        "x3",
        &comment("@tether third"),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["session_error"], Value::Null, "{v}");
    assert_eq!(v["session"]["host_id"], host.as_str());
    assert_eq!(v["session"]["task_id"], v["task"]["id"]);
    assert_eq!(v["session"]["agent"], "codex");
}

#[test]
fn slack_and_linear_deliveries() {
    let app = app();
    let key = owner(&app);
    project(&app, &key, "app");
    let (_, sw) = create(
        &app,
        &key,
        json!({"provider": "slack", "project": "app", "secret": "slack-signing-secret"}),
    );
    let spath = sw["url_path"].as_str().unwrap().to_owned();
    let slack = |body: &Value, ts: i64, secret: &str| {
        let text = body.to_string();
        let t = ts.to_string();
        let sig = format!(
            "v0={}",
            hmac_hex(secret, &[b"v0:", t.as_bytes(), b":", text.as_bytes()])
        );
        let res = raw(
            &app,
            "POST",
            &spath,
            &[
                ("x-slack-request-timestamp", &t),
                ("x-slack-signature", &sig),
            ],
            Some(body.clone()),
        );
        let v: Value = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
        (res.status().as_u16(), v)
    };
    let now = tether_durable::time::now_ms() / 1000;
    let (s, v) = slack(
        &json!({"type": "url_verification", "challenge": "3eZbrw1aBm"}),
        now,
        "slack-signing-secret",
    );
    assert_eq!((s, v), (200, json!({"challenge": "3eZbrw1aBm"})));
    let mention = json!({"type": "event_callback", "event_id": "Ev1",
        "event": {"type": "app_mention", "user": "U1", "channel": "C1",
                  "text": "<@U0LAN0Z89> the deploy is failing"}});
    let (s, v) = slack(&mention, now, "slack-signing-secret");
    assert_eq!(
        (s, &v["task"]["title"]),
        (201, &json!("the deploy is failing")),
        "{v}"
    );
    assert_eq!(
        slack(&mention, now, "slack-signing-secret").1["status"],
        "duplicate"
    );
    let (s, v) = slack(&mention, now - 301, "slack-signing-secret");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("stale_request"))
    );
    assert_eq!(slack(&mention, now, "another-secret").0, 401);

    let (_, lw) = create(
        &app,
        &key,
        json!({"provider": "linear", "project": "app", "secret": "lin_wh_secret", "label": "tether"}),
    );
    let lpath = lw["url_path"].as_str().unwrap().to_owned();
    let linear = |body: &Value, delivery: &str| {
        let text = body.to_string();
        let sig = hmac_hex("lin_wh_secret", &[text.as_bytes()]);
        let res = raw(
            &app,
            "POST",
            &lpath,
            &[("linear-signature", &sig), ("linear-delivery", delivery)],
            Some(body.clone()),
        );
        let v: Value = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
        (res.status().as_u16(), v)
    };
    let ms = tether_durable::time::now_ms();
    let issue = |ts: i64, label: &str| {
        json!({"action": "create", "type": "Issue", "webhookTimestamp": ts,
               "url": "https://linear.app/t/issue/LIN-1",
               "data": {"title": "Broken link", "description": "On the home page",
                        "labels": [{"name": label}]}})
    };
    let (s, v) = linear(&issue(ms, "Tether"), "l1");
    assert_eq!(
        (s, &v["task"]["title"]),
        (201, &json!("Broken link")),
        "{v}"
    );
    assert_eq!(linear(&issue(ms, "Tether"), "l1").1["status"], "duplicate");
    assert_eq!(linear(&issue(ms, "bug"), "l2").0, 202);
    let (s, v) = linear(&issue(ms - 61_000, "Tether"), "l3");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("stale_request"))
    );
    assert_eq!(tasks(&app, &key).len(), 2);
}

#[test]
fn deliveries_are_limited_per_address() {
    let mut app = app();
    app.limiter.budget = 2;
    let post = || {
        raw(
            &app,
            "POST",
            "/webhooks/github/whk_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d",
            &[("cf-connecting-ip", "192.0.2.9")],
            Some(json!({})),
        )
        .status()
        .as_u16()
    };
    assert_eq!((post(), post(), post()), (404, 404, 429));
}
