//! Org isolation: a key of org A gets 404 for every org-B resource, by id and by slug, and
//! never sees org-B rows in a list.

use crate::fresh_org;
use serde_json::{Value, json};
use tether_tests::Api;

struct Org {
    api: Api,
    org: String,
    member: String,
    key: String,
    project: String,
    status: String,
    task: Value,
}

async fn populated(name: &str, prefix: &str) -> Org {
    let (url, key) = fresh_org(name, prefix).await;
    let api = Api::new(&url, &key);
    let (_, me) = api.get("/v1/me").await;
    let (_, m) = api
        .post(
            "/v1/members",
            json!({"email": format!("m@{prefix}.dev"), "name": "M", "role": "member"}),
        )
        .await;
    let (_, p) = api
        .post("/v1/projects", json!({"name": format!("{name} project")}))
        .await;
    let (_, s) = api
        .post(
            "/v1/task-statuses",
            json!({"name": format!("{name} review"), "category": "started"}),
        )
        .await;
    let (_, t) = api
        .post(
            "/v1/tasks",
            json!({"title": format!("{name} secret"), "project_id": p["id"], "status_id": s["id"]}),
        )
        .await;
    Org {
        api,
        org: me["org"]["id"].as_str().unwrap().into(),
        member: m["member"]["id"].as_str().unwrap().into(),
        key: m["api_key"]["id"].as_str().unwrap().into(),
        project: p["id"].as_str().unwrap().into(),
        status: s["id"].as_str().unwrap().into(),
        task: t,
    }
}

#[tokio::test]
async fn org_a_cannot_see_or_touch_org_b() {
    let a = populated("Alpha", "ALP").await;
    let b = populated("Bravo", "BRV").await;
    let b_task_id = b.task["id"].as_str().unwrap();
    let b_slug = b.task["slug"].as_str().unwrap();
    let matrix: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/orgs/{}", b.org), None),
        (
            "PATCH",
            format!("/v1/orgs/{}", b.org),
            Some(json!({"name": "pwned"})),
        ),
        ("DELETE", format!("/v1/orgs/{}", b.org), None),
        ("GET", format!("/v1/members/{}", b.member), None),
        (
            "PATCH",
            format!("/v1/members/{}", b.member),
            Some(json!({"role": "admin"})),
        ),
        ("DELETE", format!("/v1/members/{}", b.member), None),
        ("GET", format!("/v1/api-keys/{}", b.key), None),
        ("DELETE", format!("/v1/api-keys/{}", b.key), None),
        ("GET", format!("/v1/projects/{}", b.project), None),
        (
            "PATCH",
            format!("/v1/projects/{}", b.project),
            Some(json!({"name": "pwned"})),
        ),
        ("DELETE", format!("/v1/projects/{}", b.project), None),
        (
            "PATCH",
            format!("/v1/task-statuses/{}", b.status),
            Some(json!({"name": "pwned"})),
        ),
        ("DELETE", format!("/v1/task-statuses/{}", b.status), None),
        ("GET", format!("/v1/tasks/{b_task_id}"), None),
        ("GET", format!("/v1/tasks/{b_slug}"), None),
        (
            "PATCH",
            format!("/v1/tasks/{b_task_id}"),
            Some(json!({"title": "pwned"})),
        ),
        (
            "PATCH",
            format!("/v1/tasks/{b_slug}"),
            Some(json!({"title": "pwned"})),
        ),
        ("DELETE", format!("/v1/tasks/{b_task_id}"), None),
        ("DELETE", format!("/v1/tasks/{b_slug}"), None),
    ];
    for (method, path, body) in &matrix {
        let (status, res) = a.api.call(method, path, body.clone()).await;
        assert_eq!(
            status, 404,
            "{method} {path} from org A answered {status}: {res}"
        );
    }
    // B references in A's writes are refused as unknown, not followed.
    let (s, _) = a
        .api
        .post("/v1/tasks", json!({"title": "x", "project_id": b.project}))
        .await;
    assert_eq!(s, 422);
    let (s, _) = a
        .api
        .post("/v1/tasks", json!({"title": "x", "assignee_id": b.member}))
        .await;
    assert_eq!(s, 422);
    let (s, _) = a
        .api
        .post("/v1/api-keys", json!({"name": "x", "member_id": b.member}))
        .await;
    assert_eq!(s, 404);

    // Lists hold A's rows only.
    let b_ids = [
        b.org.as_str(),
        b.member.as_str(),
        b.key.as_str(),
        b.project.as_str(),
        b.status.as_str(),
        b_task_id,
    ];
    for path in [
        "/v1/tasks?limit=200",
        "/v1/projects",
        "/v1/task-statuses",
        "/v1/members",
        "/v1/api-keys",
        "/v1/orgs",
    ] {
        let (s, list) = a.api.get(path).await;
        assert_eq!(s, 200);
        let text = list.to_string();
        for id in b_ids {
            assert!(!text.contains(id), "{path} leaks {id}");
        }
        assert!(!text.contains("Bravo"), "{path} leaks Bravo rows");
    }
    // And B is untouched.
    let (s, t) = b.api.get(&format!("/v1/tasks/{b_slug}")).await;
    assert_eq!((s, t["title"].as_str()), (200, Some("Bravo secret")));
    assert_eq!(
        a.api
            .get(&format!("/v1/tasks/{}", a.task["slug"].as_str().unwrap()))
            .await
            .0,
        200
    );
}
