//! Handler tests in memory: the real router, directory SQL and org store, on in-memory SQLite.

use super::handle;
use crate::backend::{Backend, Config, Db, OrgStore, RateLimiter};
use crate::error::ApiError;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use tether_durable::org::OrgCall;
use tether_durable::org::store::Store;
use tether_durable::sql::{NativeSql, Sql, SqlError, SqlValue};

struct TestDb(NativeSql);

impl Db for TestDb {
    async fn query<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, SqlError> {
        self.0.query(sql, params)
    }

    async fn batch(&self, statements: &[(&str, Vec<SqlValue>)]) -> Result<Vec<u64>, SqlError> {
        self.0.transaction(|| {
            statements
                .iter()
                .map(|(sql, p)| self.0.execute(sql, p))
                .collect()
        })
    }
}

#[derive(Default)]
struct TestOrgs(RefCell<HashMap<String, NativeSql>>);

impl OrgStore for TestOrgs {
    async fn call(&self, call: &OrgCall) -> Result<Vec<u8>, ApiError> {
        let mut map = self.0.borrow_mut();
        let sql = map
            .entry(call.org_id.clone())
            .or_insert_with(|| NativeSql::open_in_memory().unwrap());
        // Through JSON, as over the wire.
        let call: OrgCall = serde_json::from_value(serde_json::to_value(call).unwrap()).unwrap();
        Ok(Store::open(sql).and_then(|s| s.call(call, tether_durable::time::now_ms()))?)
    }
}

struct Limiter {
    budget: usize,
    used: RefCell<HashMap<String, usize>>,
}

impl RateLimiter for Limiter {
    async fn allow(&self, key: &str) -> bool {
        let mut used = self.used.borrow_mut();
        let n = used.entry(key.to_owned()).or_default();
        *n += 1;
        *n <= self.budget
    }
}

struct App {
    db: TestDb,
    orgs: TestOrgs,
    limiter: Limiter,
    config: Config,
}

impl Backend for App {
    type Db = TestDb;
    type Orgs = TestOrgs;
    type Limiter = Limiter;
    fn db(&self) -> &TestDb {
        &self.db
    }
    fn orgs(&self) -> &TestOrgs {
        &self.orgs
    }
    fn limiter(&self) -> &Limiter {
        &self.limiter
    }
    fn config(&self) -> &Config {
        &self.config
    }
}

const BOOT: &str = "boot-secret";

fn app() -> App {
    let db = NativeSql::open_in_memory().unwrap();
    for (_, sql) in crate::MIGRATIONS {
        db.execute_script(sql).unwrap();
    }
    App {
        db: TestDb(db),
        orgs: TestOrgs::default(),
        limiter: Limiter {
            budget: 1000,
            used: RefCell::default(),
        },
        config: Config {
            jwt_secret: vec![1; 32],
            bootstrap_token: Some(BOOT.into()),
            token_ttl_secs: 900,
        },
    }
}

fn call(
    app: &App,
    method: &str,
    path: &str,
    cred: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut b = http::Request::builder().method(method).uri(path);
    if let Some(c) = cred {
        b = b.header("authorization", format!("Bearer {c}"));
    }
    let body = body.map(|v| v.to_string().into_bytes()).unwrap_or_default();
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    let res = futures_lite_block_on(handle(app, b.body(body).unwrap(), "test"));
    let status = res.status().as_u16();
    let v = if res.body().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(res.body()).unwrap()
    };
    if status >= 400 {
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "error shape: {v}"
        );
    }
    (status, v)
}

/// The handlers never actually suspend in these tests (every backend call is synchronous).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Bootstraps and answers the owner's key.
fn owner(app: &App) -> String {
    let (s, v) = call(
        app,
        "POST",
        "/v1/bootstrap",
        Some(BOOT),
        Some(json!({"org_name": "Tether", "email": "ada@example.com", "name": "Ada"})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["org"]["task_prefix"], "TET");
    v["api_key"]["secret"].as_str().unwrap().to_owned()
}

#[test]
fn bootstrap_works_once_and_needs_its_token() {
    let app = app();
    let body = json!({"org_name": "X", "email": "a@b.co", "name": "A"});
    assert_eq!(
        call(&app, "POST", "/v1/bootstrap", None, Some(body.clone())).0,
        401
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/bootstrap",
            Some("wrong"),
            Some(body.clone())
        )
        .0,
        401
    );
    owner(&app);
    let (s, v) = call(&app, "POST", "/v1/bootstrap", Some(BOOT), Some(body));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("already_bootstrapped"))
    );
}

#[test]
fn keys_exchange_for_tokens_that_work_like_the_key() {
    let app = app();
    let key = owner(&app);
    let (s, t) = call(&app, "POST", "/v1/auth/token", Some(&key), None);
    assert_eq!(s, 200);
    let token = t["token"].as_str().unwrap();
    let (s, me) = call(&app, "GET", "/v1/me", Some(token), None);
    assert_eq!(
        (s, me["auth"].as_str(), me["role"].as_str()),
        (200, Some("token"), Some("owner"))
    );
    // A token cannot mint another token.
    assert_eq!(
        call(&app, "POST", "/v1/auth/token", Some(token), None).0,
        401
    );
    // Last-used time is recorded.
    let (_, keys) = call(&app, "GET", "/v1/api-keys", Some(&key), None);
    assert!(keys[0]["last_used_at"].is_string());
    assert!(keys[0]["prefix"].as_str().unwrap().starts_with("tk_"));
    assert!(keys[0].get("secret").is_none(), "secrets are never listed");
}

#[test]
fn every_non_public_route_needs_auth() {
    let app = app();
    for (m, p) in [
        ("GET", "/v1/tasks"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/me"),
        ("GET", "/v1/nope"),
        ("DELETE", "/v1/orgs/x"),
    ] {
        assert_eq!(call(&app, m, p, None, None).0, 401, "{m} {p}");
        assert_eq!(call(&app, m, p, Some("tk_garbage"), None).0, 401, "{m} {p}");
    }
    for p in ["/health", "/version", "/v1/openapi.json"] {
        assert_eq!(call(&app, "GET", p, None, None).0, 200, "{p}");
    }
}

#[test]
fn revoked_keys_stop_working() {
    let app = app();
    let key = owner(&app);
    let (s, k2) = call(
        &app,
        "POST",
        "/v1/api-keys",
        Some(&key),
        Some(json!({"name": "ci"})),
    );
    assert_eq!(s, 201);
    let second = k2["secret"].as_str().unwrap();
    assert_eq!(call(&app, "GET", "/v1/me", Some(second), None).0, 200);
    let id = k2["id"].as_str().unwrap();
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/api-keys/{id}"),
            Some(&key),
            None
        )
        .0,
        204
    );
    assert_eq!(call(&app, "GET", "/v1/me", Some(second), None).0, 401);
    let (_, k) = call(&app, "GET", &format!("/v1/api-keys/{id}"), Some(&key), None);
    assert!(k["revoked_at"].is_string());
}

#[test]
fn roles_gate_what_members_may_do() {
    let app = app();
    let key = owner(&app);
    let (s, m) = call(
        &app,
        "POST",
        "/v1/members",
        Some(&key),
        Some(json!({"email": "bo@x.io", "name": "Bo", "role": "member"})),
    );
    assert_eq!(s, 201, "{m}");
    let member = m["api_key"]["secret"].as_str().unwrap().to_owned();
    let (_, a) = call(
        &app,
        "POST",
        "/v1/members",
        Some(&key),
        Some(json!({"email": "cy@x.io", "name": "Cy", "role": "admin"})),
    );
    let admin = a["api_key"]["secret"].as_str().unwrap().to_owned();

    // Members work on tasks but cannot manage projects, statuses or people.
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/tasks",
            Some(&member),
            Some(json!({"title": "t"}))
        )
        .0,
        201
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/projects",
            Some(&member),
            Some(json!({"name": "p"}))
        )
        .0,
        403
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/task-statuses",
            Some(&member),
            Some(json!({"name": "s", "category": "started"}))
        )
        .0,
        403
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/members",
            Some(&member),
            Some(json!({"email": "d@x.io", "name": "D", "role": "member"}))
        )
        .0,
        403
    );
    // Admins manage projects and members, but not owners.
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/projects",
            Some(&admin),
            Some(json!({"name": "p"}))
        )
        .0,
        201
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/members",
            Some(&admin),
            Some(json!({"email": "e@x.io", "name": "E", "role": "owner"}))
        )
        .0,
        403
    );
    let (_, me) = call(&app, "GET", "/v1/me", Some(&key), None);
    let owner_id = me["member_id"].as_str().unwrap();
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/members/{owner_id}"),
            Some(&admin),
            None
        )
        .0,
        403
    );
    // The last owner cannot step down.
    let (s, v) = call(
        &app,
        "PATCH",
        &format!("/v1/members/{owner_id}"),
        Some(&key),
        Some(json!({"role": "admin"})),
    );
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("last_owner")));
    // Only an owner deletes the org.
    let org = me["org"]["id"].as_str().unwrap();
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/orgs/{org}"),
            Some(&admin),
            None
        )
        .0,
        403
    );
    // Members see only their own keys.
    let (_, keys) = call(&app, "GET", "/v1/api-keys", Some(&member), None);
    assert_eq!(keys.as_array().unwrap().len(), 1);
}

#[test]
fn removed_members_lose_access_and_their_tasks() {
    let app = app();
    let key = owner(&app);
    let (_, m) = call(
        &app,
        "POST",
        "/v1/members",
        Some(&key),
        Some(json!({"email": "bo@x.io", "name": "Bo", "role": "member"})),
    );
    let mid = m["member"]["id"].as_str().unwrap();
    let secret = m["api_key"]["secret"].as_str().unwrap();
    let (_, t) = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&key),
        Some(json!({"title": "t", "assignee_id": mid})),
    );
    assert_eq!(t["assignee_id"], mid);
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/members/{mid}"),
            Some(&key),
            None
        )
        .0,
        204
    );
    assert_eq!(call(&app, "GET", "/v1/me", Some(secret), None).0, 401);
    let (_, t) = call(&app, "GET", "/v1/tasks/TET-1", Some(&key), None);
    assert_eq!(t["assignee_id"], Value::Null);
    // Someone outside the org cannot be assigned.
    let (s, _) = call(
        &app,
        "PATCH",
        "/v1/tasks/TET-1",
        Some(&key),
        Some(json!({"assignee_id": mid})),
    );
    assert_eq!(s, 422);
}

#[test]
fn another_orgs_rows_are_not_found() {
    let app = app();
    let a = owner(&app);
    let (s, b) = call(
        &app,
        "POST",
        "/v1/orgs",
        Some(&a),
        Some(json!({"name": "Bravo", "task_prefix": "BRV"})),
    );
    assert_eq!(s, 201, "{b}");
    let b_key = b["api_key"]["secret"].as_str().unwrap().to_owned();
    let b_org = b["org"]["id"].as_str().unwrap().to_owned();
    let (_, bt) = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&b_key),
        Some(json!({"title": "secret plan"})),
    );
    assert_eq!(bt["slug"], "BRV-1");
    call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&a),
        Some(json!({"title": "mine"})),
    );
    for path in [
        format!("/v1/tasks/{}", bt["id"].as_str().unwrap()),
        "/v1/tasks/BRV-1".to_owned(),
        format!("/v1/orgs/{b_org}"),
        format!("/v1/members/{}", b["member"]["id"].as_str().unwrap()),
        format!("/v1/api-keys/{}", b["api_key"]["id"].as_str().unwrap()),
    ] {
        assert_eq!(call(&app, "GET", &path, Some(&a), None).0, 404, "{path}");
    }
    let (_, list) = call(&app, "GET", "/v1/tasks", Some(&a), None);
    let titles: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["mine"]);
}

#[test]
fn bad_input_gets_clear_client_errors() {
    let app = app();
    let key = owner(&app);
    let raw = |body: &[u8], ct: &str| {
        let req = http::Request::builder()
            .method("POST")
            .uri("/v1/tasks")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", ct)
            .body(body.to_vec())
            .unwrap();
        futures_lite_block_on(handle(&app, req, "test"))
            .status()
            .as_u16()
    };
    assert_eq!(raw(b"{", "application/json"), 400);
    assert_eq!(raw(b"{\"title\": \"\xc3\x28\"}", "application/json"), 400);
    assert_eq!(raw(br#"{"title": 1}"#, "application/json"), 422);
    assert_eq!(
        raw(br#"{"title": "x", "bogus": true}"#, "application/json"),
        422
    );
    assert_eq!(raw(br#"{"title": "x"}"#, "text/plain"), 415);
    assert_eq!(raw(&vec![b' '; 1024 * 1024 + 1], "application/json"), 413);
    assert_eq!(
        call(&app, "GET", "/v1/tasks?limit=abc", Some(&key), None).0,
        400
    );
    assert_eq!(
        call(&app, "GET", "/v1/tasks?bogus=1", Some(&key), None).0,
        400
    );
    assert_eq!(
        call(&app, "GET", "/v1/tasks/not-a-slug!", Some(&key), None).0,
        400
    );
    assert_eq!(
        call(&app, "GET", "/v1/projects/prj_zz", Some(&key), None).0,
        400
    );
    assert_eq!(call(&app, "PUT", "/v1/tasks", Some(&key), None).0, 405);
    assert_eq!(call(&app, "GET", "/v1/nothing", Some(&key), None).0, 404);
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let mut app = app();
    app.limiter.budget = 3;
    let key = owner(&app);
    for _ in 0..3 {
        assert_eq!(call(&app, "GET", "/v1/me", Some(&key), None).0, 200);
    }
    let req = http::Request::builder()
        .uri("/v1/me")
        .header("x-api-key", &key)
        .body(vec![])
        .unwrap();
    let res = futures_lite_block_on(handle(&app, req, "test"));
    assert_eq!(res.status().as_u16(), 429);
    assert_eq!(res.headers()["retry-after"], "60");
}

#[test]
fn deleted_orgs_are_gone_for_good() {
    let app = app();
    let key = owner(&app);
    let (_, t) = call(&app, "POST", "/v1/auth/token", Some(&key), None);
    let token = t["token"].as_str().unwrap();
    let (_, me) = call(&app, "GET", "/v1/me", Some(&key), None);
    let org = me["org"]["id"].as_str().unwrap();
    assert_eq!(
        call(&app, "DELETE", &format!("/v1/orgs/{org}"), Some(&key), None).0,
        204
    );
    assert_eq!(call(&app, "GET", "/v1/me", Some(&key), None).0, 401);
    // A token minted before the deletion cannot write into the dead org.
    assert_eq!(
        call(&app, "GET", "/v1/task-statuses", Some(token), None).0,
        404
    );
}

#[test]
fn the_openapi_document_is_3_1_and_covers_the_routes() {
    let app = app();
    let (_, doc) = call(&app, "GET", "/v1/openapi.json", None, None);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/v1/tasks",
        "/v1/tasks/{id_or_slug}",
        "/v1/auth/token",
        "/v1/members/{id}",
        "/v1/task-statuses/{id}",
    ] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
    assert!(doc["components"]["schemas"]["Task"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
