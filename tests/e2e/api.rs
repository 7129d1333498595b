//! The REST resources end to end: tasks, statuses, projects, members, roles, rate limits.

use crate::fresh_org;
use serde_json::{Value, json};
use tether_tests::Api;

#[tokio::test]
async fn tasks_crud_slugs_filters_and_pages() {
    let (url, key) = fresh_org("Crud", "CRD").await;
    let api = Api::new(&url, &key);
    let (s, project) = api
        .post(
            "/v1/projects",
            json!({"name": "web", "repo_url": "https://github.com/x/web.git"}),
        )
        .await;
    assert_eq!(s, 201, "{project}");
    let (_, statuses) = api.get("/v1/task-statuses").await;
    let done = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["category"] == "completed")
        .unwrap()
        .clone();

    let mut ids = Vec::new();
    for i in 1..=25 {
        let mut body = json!({"title": format!("task {i}"), "priority": if i % 5 == 0 { "urgent" } else { "low" }});
        if i % 2 == 0 {
            body["labels"] = json!(["even"]);
            body["project_id"] = project["id"].clone();
        }
        let (s, t) = api.post("/v1/tasks", body).await;
        assert_eq!(s, 201, "{t}");
        assert_eq!(t["slug"], format!("CRD-{i}"));
        ids.push(t["id"].as_str().unwrap().to_owned());
    }

    // Pages of 10, newest first, until next_cursor is null.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?limit=10&cursor={c}"),
            None => "/v1/tasks?limit=10".to_owned(),
        };
        let (s, page) = api.get(&path).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["number"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<_>>());

    let count = |v: &Value| v["data"].as_array().unwrap().len();
    assert_eq!(
        count(&api.get("/v1/tasks?label=even&limit=200").await.1),
        12
    );
    assert_eq!(count(&api.get("/v1/tasks?priority=urgent").await.1), 5);
    assert_eq!(
        count(
            &api.get(&format!(
                "/v1/tasks?project_id={}&limit=200",
                project["id"].as_str().unwrap()
            ))
            .await
            .1
        ),
        12
    );

    // Get by id and by slug (any case), update, move to done, delete.
    let (_, by_id) = api.get(&format!("/v1/tasks/{}", ids[2])).await;
    let (_, by_slug) = api.get("/v1/tasks/crd-3").await;
    assert_eq!(by_id, by_slug);
    let (s, u) = api
        .patch(
            "/v1/tasks/CRD-3",
            json!({"title": "renamed", "status_id": done["id"], "labels": ["x"]}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        (u["title"].as_str(), u["status"]["category"].as_str()),
        (Some("renamed"), Some("completed"))
    );
    assert_eq!(
        count(&api.get("/v1/tasks?status_category=completed").await.1),
        1
    );
    assert_eq!(api.delete("/v1/tasks/CRD-3").await.0, 204);
    assert_eq!(api.get("/v1/tasks/CRD-3").await.0, 404);
    assert_eq!(
        api.post("/v1/tasks", json!({"title": "after delete"}))
            .await
            .1["slug"],
        "CRD-26"
    );
}

#[tokio::test]
async fn statuses_and_projects_are_customisable() {
    let (url, key) = fresh_org("Custom", "CUS").await;
    let api = Api::new(&url, &key);
    let (s, review) = api
        .post(
            "/v1/task-statuses",
            json!({"name": "In Review", "category": "started", "color": "#aa00ff"}),
        )
        .await;
    assert_eq!(s, 201, "{review}");
    let rid = review["id"].as_str().unwrap();
    let (_, t) = api
        .post("/v1/tasks", json!({"title": "t", "status_id": rid}))
        .await;
    assert_eq!(t["status"]["name"], "In Review");
    let (s, e) = api.delete(&format!("/v1/task-statuses/{rid}")).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("status_in_use"))
    );
    let (_, statuses) = api.get("/v1/task-statuses").await;
    let backlog = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["category"] == "backlog")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.delete(&format!("/v1/task-statuses/{rid}?replace_with={backlog}"))
            .await
            .0,
        204
    );
    assert_eq!(
        api.get(&format!("/v1/tasks/{}", t["id"].as_str().unwrap()))
            .await
            .1["status"]["id"],
        backlog.as_str()
    );
    let (s, renamed) = api
        .patch(
            &format!("/v1/task-statuses/{backlog}"),
            json!({"name": "Icebox"}),
        )
        .await;
    assert_eq!((s, renamed["name"].as_str()), (200, Some("Icebox")));

    let (_, p) = api
        .post(
            "/v1/projects",
            json!({"name": "api", "default_branch": "develop"}),
        )
        .await;
    let pid = p["id"].as_str().unwrap();
    assert_eq!(
        api.post("/v1/projects", json!({"name": "API"})).await.0,
        409
    );
    let (_, p2) = api
        .patch(
            &format!("/v1/projects/{pid}"),
            json!({"repo_url": "git@github.com:x/api.git"}),
        )
        .await;
    assert_eq!(
        (p2["default_branch"].as_str(), p2["repo_url"].as_str()),
        (Some("develop"), Some("git@github.com:x/api.git"))
    );
    assert_eq!(
        api.get("/v1/projects").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(api.delete(&format!("/v1/projects/{pid}")).await.0, 204);
    assert_eq!(api.get(&format!("/v1/projects/{pid}")).await.0, 404);
}

#[tokio::test]
async fn roles_gate_members_admins_and_owners() {
    let (url, owner) = fresh_org("Roles", "ROL").await;
    let api = Api::new(&url, &owner);
    let (_, m) = api
        .post(
            "/v1/members",
            json!({"email": "m@roles.dev", "name": "M", "role": "member"}),
        )
        .await;
    let (_, a) = api
        .post(
            "/v1/members",
            json!({"email": "a@roles.dev", "name": "A", "role": "admin"}),
        )
        .await;
    let member = api.with(m["api_key"]["secret"].as_str().unwrap());
    let admin = api.with(a["api_key"]["secret"].as_str().unwrap());
    let (_, me) = api.get("/v1/me").await;
    let org = me["org"]["id"].as_str().unwrap();
    let owner_member = me["member_id"].as_str().unwrap();

    assert_eq!(
        member.post("/v1/tasks", json!({"title": "ok"})).await.0,
        201
    );
    assert_eq!(
        member.post("/v1/projects", json!({"name": "no"})).await.0,
        403
    );
    assert_eq!(
        member
            .patch(&format!("/v1/orgs/{org}"), json!({"name": "no"}))
            .await
            .0,
        403
    );
    assert_eq!(
        member
            .post(
                "/v1/members",
                json!({"email": "x@roles.dev", "name": "X", "role": "member"})
            )
            .await
            .0,
        403
    );
    assert_eq!(
        admin.post("/v1/projects", json!({"name": "yes"})).await.0,
        201
    );
    assert_eq!(
        admin
            .patch(&format!("/v1/orgs/{org}"), json!({"task_prefix": "rl"}))
            .await
            .1["task_prefix"],
        "RL"
    );
    assert_eq!(
        admin
            .post("/v1/tasks", json!({"title": "new prefix"}))
            .await
            .1["slug"],
        "RL-2"
    );
    assert_eq!(
        admin
            .patch(
                &format!("/v1/members/{owner_member}"),
                json!({"role": "member"})
            )
            .await
            .0,
        403
    );
    assert_eq!(admin.delete(&format!("/v1/orgs/{org}")).await.0, 403);
    // A member may leave; the last owner may not.
    let mid = m["member"]["id"].as_str().unwrap();
    assert_eq!(member.delete(&format!("/v1/members/{mid}")).await.0, 204);
    assert_eq!(member.get("/v1/me").await.0, 401);
    assert_eq!(
        api.delete(&format!("/v1/members/{owner_member}")).await.1["error"]["code"],
        "last_owner"
    );
    // The owner deletes the org; its keys stop working.
    assert_eq!(api.delete(&format!("/v1/orgs/{org}")).await.0, 204);
    assert_eq!(api.get("/v1/me").await.0, 401);
    assert_eq!(admin.get("/v1/tasks").await.0, 401);
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_and_others_do_not() {
    let (url, key) = fresh_org("Busy", "BSY").await;
    let api = Api::new(&url, &key);
    let (_, other) = api.post("/v1/api-keys", json!({"name": "other"})).await;
    // wrangler.toml allows 1200 requests per key per minute, counted in fixed windows: a run
    // that straddles a window's end starts counting again, so allow for one reset.
    let mut limited = None;
    for i in 0..2500 {
        let res = api.request("GET", "/v1/me").send().await.unwrap();
        if res.status().as_u16() == 429 {
            assert_eq!(res.headers()["retry-after"], "60");
            limited = Some(i);
            break;
        }
        assert_eq!(res.status().as_u16(), 200);
    }
    let at = limited.expect("never rate limited");
    assert!(at >= 1000, "limited too early, after {at} requests");
    assert_eq!(
        api.with(other["secret"].as_str().unwrap())
            .get("/v1/me")
            .await
            .0,
        200
    );
}
