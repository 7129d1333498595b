//! Webhooks end to end against the Worker in workerd: deliveries shaped as the providers
//! document them, signed here with HMAC-SHA256, make tasks once; replays, tampered bodies,
//! stale timestamps and the wrong provider's path do not.

use crate::fresh_org;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};
use tether_tests::Api;

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Posts raw bytes with headers and no credential, as a provider does.
async fn deliver(api: &Api, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut r = api
        .request("POST", path)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    api.send(r).await
}

/// A fresh org with a project `app`: (the owner's client, a client without credentials, the
/// project id).
async fn setup(name: &str, prefix: &str) -> (Api, Api, String) {
    let (url, key) = fresh_org(name, prefix).await;
    let api = Api::new(&url, &key);
    let (s, p) = api.post("/v1/projects", json!({"name": "app"})).await;
    assert_eq!(s, 201, "{p}");
    (
        api,
        Api::anonymous(&url),
        p["id"].as_str().unwrap().to_owned(),
    )
}

async fn task_titles(api: &Api, project: &str) -> Vec<String> {
    let (s, page) = api.get(&format!("/v1/tasks?project_id={project}")).await;
    assert_eq!(s, 200, "{page}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

async fn github(
    api: &Api,
    path: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> (u16, Value) {
    let sig = format!("sha256={}", hmac_hex(secret, &[body]));
    deliver(
        api,
        path,
        &[
            ("x-github-event", event.to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("x-hub-signature-256", sig),
            ("user-agent", "GitHub-Hookshot/044aadd".to_owned()),
        ],
        body,
    )
    .await
}

/// `issue_comment` as in GitHub's webhook payload documentation (trimmed).
fn issue_comment(body: &str) -> Vec<u8> {
    json!({
        "action": "created",
        "issue": {
            "url": "https://api.github.com/repos/Codertocat/Hello-World/issues/1",
            "html_url": "https://github.com/Codertocat/Hello-World/issues/1",
            "number": 1,
            "title": "Spelling error in the README file",
            "user": {"login": "Codertocat", "id": 21031067, "type": "User"},
            "labels": [{"id": 1362934389, "name": "bug", "color": "d73a4a"}],
            "state": "open",
            "body": "It looks like you accidently spelled 'commit' with two 't's."
        },
        "comment": {
            "url": "https://api.github.com/repos/Codertocat/Hello-World/issues/comments/492700400",
            "html_url": "https://github.com/Codertocat/Hello-World/issues/1#issuecomment-492700400",
            "id": 492700400,
            "user": {"login": "Codertocat", "id": 21031067, "type": "User"},
            "created_at": "2019-05-15T15:20:21Z",
            "body": body
        },
        "repository": {"id": 186853002, "name": "Hello-World", "full_name": "Codertocat/Hello-World"},
        "sender": {"login": "Codertocat", "id": 21031067, "type": "User"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn github_deliveries_become_tasks_once() {
    let (api, anon, project) = setup("Hooks GH", "WHG").await;
    let (s, w) = api
        .post(
            "/v1/webhooks",
            json!({"provider": "github", "project": "app", "label": "tether"}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let path = w["url_path"].as_str().unwrap().to_owned();
    let id = w["id"].as_str().unwrap().to_owned();
    let secret = w["secret"].as_str().unwrap().to_owned();
    let (_, listed) = api.get("/v1/webhooks").await;
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is shown once"
    );

    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 1}).to_string();
    let (s, v) = github(&anon, &path, &secret, "ping", "p-1", ping.as_bytes()).await;
    assert_eq!((s, &v["status"]), (200, &json!("pong")), "{v}");

    let body = issue_comment("@tether can you fix the spelling?");
    let (s, v) = github(&anon, &path, &secret, "issue_comment", "gh-1", &body).await;
    assert_eq!((s, &v["status"]), (201, &json!("created")), "{v}");
    assert!(v["task"]["slug"].as_str().unwrap().starts_with("WHG-"));
    assert_eq!(
        task_titles(&api, &project).await,
        ["Spelling error in the README file"]
    );
    let (_, t) = api
        .get(&format!("/v1/tasks/{}", v["task"]["id"].as_str().unwrap()))
        .await;
    assert!(
        t["description"]
            .as_str()
            .unwrap()
            .contains("https://github.com/Codertocat/Hello-World/issues/1#issuecomment-492700400")
    );

    // Replayed: "duplicate", nothing new.
    let (s, v) = github(&anon, &path, &secret, "issue_comment", "gh-1", &body).await;
    assert_eq!((s, &v["status"]), (200, &json!("duplicate")), "{v}");
    assert_eq!(task_titles(&api, &project).await.len(), 1);

    // Tampered: the signature of the original over another body.
    let sig = format!("sha256={}", hmac_hex(&secret, &[&body]));
    let tampered = issue_comment("@tether delete the repository");
    let (s, v) = deliver(
        &anon,
        &path,
        &[
            ("x-github-event", "issue_comment".into()),
            ("x-github-delivery", "gh-2".into()),
            ("x-hub-signature-256", sig),
        ],
        &tampered,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (s, _) = github(
        &anon,
        &path,
        "not-the-secret",
        "issue_comment",
        "gh-3",
        &tampered,
    )
    .await;
    assert_eq!(s, 401);

    // The wrong provider's path: 404.
    let (s, _) = github(
        &anon,
        &format!("/webhooks/slack/{id}"),
        &secret,
        "issue_comment",
        "gh-4",
        &body,
    )
    .await;
    assert_eq!(s, 404);

    // issues labeled, and a pull request review comment.
    let labeled = json!({
        "action": "labeled",
        "issue": {"html_url": "https://github.com/Codertocat/Hello-World/issues/2", "number": 2,
                  "title": "Crash on start", "body": "Stack trace attached.", "state": "open"},
        "label": {"id": 1362934389, "name": "tether", "color": "d73a4a"},
        "repository": {"full_name": "Codertocat/Hello-World"},
        "sender": {"login": "Codertocat", "type": "User"}
    })
    .to_string();
    let (s, v) = github(&anon, &path, &secret, "issues", "gh-5", labeled.as_bytes()).await;
    assert_eq!(
        (s, &v["task"]["title"]),
        (201, &json!("Crash on start")),
        "{v}"
    );
    let review = json!({
        "action": "created",
        "comment": {
            "html_url": "https://github.com/Codertocat/Hello-World/pull/2#discussion_r284312630",
            "path": "README.md", "body": "@tether maybe you should use more emoji on this line.",
            "user": {"login": "Codertocat", "type": "User"}
        },
        "pull_request": {"number": 2, "title": "Update the README with new information.",
                         "html_url": "https://github.com/Codertocat/Hello-World/pull/2", "state": "open"},
        "repository": {"full_name": "Codertocat/Hello-World"},
        "sender": {"login": "Codertocat", "type": "User"}
    })
    .to_string();
    let (s, v) = github(
        &anon,
        &path,
        &secret,
        "pull_request_review_comment",
        "gh-6",
        review.as_bytes(),
    )
    .await;
    assert_eq!(
        (s, &v["task"]["title"]),
        (201, &json!("Update the README with new information.")),
        "{v}"
    );
    // A comment without the mention: ignored.
    let (s, v) = github(
        &anon,
        &path,
        &secret,
        "issue_comment",
        "gh-7",
        &issue_comment("LGTM"),
    )
    .await;
    assert_eq!((s, &v["status"]), (202, &json!("ignored")), "{v}");
    assert_eq!(task_titles(&api, &project).await.len(), 3);
}

#[tokio::test]
async fn a_session_that_cannot_start_leaves_the_task_and_says_why() {
    let (api, anon, project) = setup("Hooks Session", "WHS").await;
    let (s, w) = api
        .post(
            "/v1/webhooks",
            json!({"provider": "github", "project": project, "session": {"agent": "claude"}}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let path = w["url_path"].as_str().unwrap();
    let secret = w["secret"].as_str().unwrap();
    let body = issue_comment("@tether please");
    let (s, v) = github(&anon, path, secret, "issue_comment", "s-1", &body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["session"], Value::Null);
    assert_eq!(v["session_error"]["code"], "project_not_linked", "{v}");
    assert_eq!(task_titles(&api, &project).await.len(), 1);
}

#[tokio::test]
async fn slack_mentions_become_tasks_and_stale_requests_do_not() {
    let (api, anon, project) = setup("Hooks Slack", "WHK").await;
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let (s, w) = api
        .post(
            "/v1/webhooks",
            json!({"provider": "slack", "project": "app", "secret": secret}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let path = w["url_path"].as_str().unwrap().to_owned();
    let slack = |body: String, ts: i64| {
        let t = ts.to_string();
        let sig = format!(
            "v0={}",
            hmac_hex(secret, &[b"v0:", t.as_bytes(), b":", body.as_bytes()])
        );
        (
            vec![("x-slack-request-timestamp", t), ("x-slack-signature", sig)],
            body,
        )
    };
    let now = now_ms() / 1000;
    let (h, b) = slack(
        json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
               "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
               "type": "url_verification"})
        .to_string(),
        now,
    );
    let (s, v) = deliver(&anon, &path, &h, b.as_bytes()).await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
        )
    );
    let mention = json!({
        "token": "ZZZZZZWSxiZZZ2yIvs3peJ", "team_id": "T123ABC456", "api_app_id": "A123ABC456",
        "event": {"type": "app_mention", "user": "U123ABC456",
                  "text": "<@U0LAN0Z89> the nightly build is red, can you look?",
                  "ts": "1515449522.000016", "channel": "C123ABC456", "event_ts": "1515449522000016"},
        "type": "event_callback", "event_id": "Ev123ABC456", "event_time": 1515449522000016_i64,
        "authed_users": ["U0LAN0Z89"]
    })
    .to_string();
    let (h, b) = slack(mention.clone(), now);
    let (s, v) = deliver(&anon, &path, &h, b.as_bytes()).await;
    assert_eq!(
        (s, &v["task"]["title"]),
        (201, &json!("the nightly build is red, can you look?")),
        "{v}"
    );
    let (s, v) = deliver(&anon, &path, &h, b.as_bytes()).await;
    assert_eq!((s, &v["status"]), (200, &json!("duplicate")), "{v}");
    // Signed correctly, but six minutes old.
    let (h, b) = slack(mention.replace("Ev123ABC456", "Ev2"), now - 360);
    let (s, v) = deliver(&anon, &path, &h, b.as_bytes()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("stale_request"))
    );
    // Tampered.
    let (h, _) = slack(mention.clone(), now);
    let (s, _) = deliver(&anon, &path, &h, mention.replace("red", "green").as_bytes()).await;
    assert_eq!(s, 401);
    assert_eq!(task_titles(&api, &project).await.len(), 1);
}

#[tokio::test]
async fn linear_issues_and_comments_become_tasks() {
    let (api, anon, project) = setup("Hooks Linear", "WHL").await;
    let secret = "lin_wh_3b1f1c0e2d6a4c5b8e9f";
    let (s, w) = api
        .post(
            "/v1/webhooks",
            json!({"provider": "linear", "project": "app", "secret": secret, "label": "Tether"}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let path = w["url_path"].as_str().unwrap().to_owned();
    let send = |body: String, delivery: &str| {
        let sig = hmac_hex(secret, &[body.as_bytes()]);
        (
            vec![
                ("linear-signature", sig),
                ("linear-delivery", delivery.to_owned()),
                ("linear-event", "Issue".to_owned()),
            ],
            body,
        )
    };
    let issue = |ts: i64| {
        json!({
            "action": "create", "type": "Issue", "createdAt": "2024-02-10T19:22:20.508Z",
            "data": {"id": "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9", "number": 12,
                     "title": "Checkout button does nothing", "description": "Repro: click it.",
                     "priority": 2, "teamId": "72b2a2dc-6f4f-4423-9d34-24b5bd10634a",
                     "labelIds": ["b2d4e0a6"], "labels": [{"id": "b2d4e0a6", "name": "tether", "color": "#bec2c8"}]},
            "url": "https://linear.app/acme/issue/ENG-12/checkout-button-does-nothing",
            "organizationId": "c8b5e58b-9a5d-4b4c-8d7a-1d0b0c3e5a2f",
            "webhookTimestamp": ts, "webhookId": "000042e3-d123-4980-b49f-8e140eef9329"
        })
        .to_string()
    };
    let (h, b) = send(issue(now_ms()), "ld-1");
    let (s, v) = deliver(&anon, &path, &h, b.as_bytes()).await;
    assert_eq!(
        (s, &v["task"]["title"]),
        (201, &json!("Checkout button does nothing")),
        "{v}"
    );
    let (s, v) = deliver(&anon, &path, &h, b.as_bytes()).await;
    assert_eq!((s, &v["status"]), (200, &json!("duplicate")), "{v}");
    let (h, b) = send(issue(now_ms() - 120_000), "ld-2");
    let (s, v) = deliver(&anon, &path, &h, b.as_bytes()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("stale_request"))
    );

    let comment = json!({
        "action": "create", "type": "Comment",
        "data": {"id": "c1", "body": "@tether could you take this one?",
                 "issueId": "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9",
                 "issue": {"id": "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9", "title": "Checkout button does nothing"}},
        "url": "https://linear.app/acme/issue/ENG-12#comment-c1",
        "webhookTimestamp": now_ms()
    })
    .to_string();
    let (h, b) = send(comment.clone(), "ld-3");
    let (s, v) = deliver(&anon, &path, &h, b.as_bytes()).await;
    assert_eq!((s, &v["status"]), (201, &json!("created")), "{v}");
    let (s, _) = deliver(&anon, &path, &h, comment.replace("take", "drop").as_bytes()).await;
    assert_eq!(s, 401, "tampered");
    let wrong = path.replace("/linear/", "/github/");
    let (s, _) = deliver(&anon, &wrong, &h, b.as_bytes()).await;
    assert_eq!(s, 404);
    assert_eq!(task_titles(&api, &project).await.len(), 2);
}
