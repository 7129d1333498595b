//! Handler tests in memory: the real router, directory SQL and org store, on in-memory SQLite.

use super::handle;
use crate::backend::{
    Backend, Config, Db, HostRef, OrgStore, RateLimiter, StreamChunk, StreamStore, Tunnels,
};
use crate::error::ApiError;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use tether_durable::host::HostStatus;
use tether_durable::org::OrgCall;
use tether_durable::org::store::Store;
use tether_durable::sql::{NativeSql, Sql, SqlError, SqlValue};
use tether_durable::stream::Offset;
use tether_durable::sync::{ShapeChunk, ShapeRead};

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

/// The org stores; with the flag set, recording an MCP tool call fails (an audit outage).
#[derive(Default)]
struct TestOrgs(RefCell<HashMap<String, NativeSql>>, std::cell::Cell<bool>);

impl OrgStore for TestOrgs {
    async fn call(&self, call: &OrgCall) -> Result<Vec<u8>, ApiError> {
        if self.1.get() && matches!(call.op, tether_durable::org::OrgOp::RecordToolCall(_)) {
            return Err(ApiError::internal(&"the audit trail is down"));
        }
        let mut map = self.0.borrow_mut();
        let sql = map
            .entry(call.org_id.clone())
            .or_insert_with(|| NativeSql::open_in_memory().unwrap());
        // Through JSON, as over the wire.
        let call: OrgCall = serde_json::from_value(serde_json::to_value(call).unwrap()).unwrap();
        Ok(Store::open(sql).and_then(|s| s.call(call, tether_durable::time::now_ms()))?)
    }

    /// A live read that finds nothing answers at once, as if its wait had timed out.
    async fn shape(&self, org_id: &str, read: &ShapeRead) -> Result<ShapeChunk, ApiError> {
        let mut map = self.0.borrow_mut();
        let sql = map
            .entry(org_id.to_owned())
            .or_insert_with(|| NativeSql::open_in_memory().unwrap());
        let read: ShapeRead = serde_json::from_value(serde_json::to_value(read).unwrap()).unwrap();
        let now = tether_durable::time::now_ms();
        Ok(Store::open(sql)
            .and_then(|s| s.shape(&read, now))?
            .into_chunk())
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

/// Host tunnels without hosts: every host is offline (never connected) unless revoked, and
/// records what it was asked. A request whose method a test gave an answer for (`answers`)
/// gets it, as if the host were there, and is recorded in `rpcs` (host, method, body).
#[derive(Default)]
struct TestTunnels {
    revoked: RefCell<Vec<(String, String)>>,
    commands: RefCell<Vec<(String, String)>>,
    command_bodies: RefCell<Vec<Value>>,
    answers: RefCell<HashMap<String, Value>>,
    rpcs: RefCell<Vec<(String, String, Value)>>,
}

impl Tunnels for TestTunnels {
    async fn status(&self, host: &HostRef<'_>) -> Result<HostStatus, ApiError> {
        let revoked = self.revoked.borrow().iter().any(|(h, _)| h == host.host_id);
        Ok(crate::directory::hosts::directory_status(revoked))
    }

    async fn rpc(
        &self,
        host: &HostRef<'_>,
        method: &str,
        body: &Value,
        _: u32,
    ) -> Result<Vec<u8>, ApiError> {
        if let Some(answer) = self.answers.borrow().get(method) {
            self.rpcs
                .borrow_mut()
                .push((host.host_id.into(), method.into(), body.clone()));
            return Ok(serde_json::to_vec(answer).unwrap());
        }
        Err(ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "host_offline",
            "the host is offline: never connected",
        ))
    }

    async fn command(
        &self,
        host: &HostRef<'_>,
        id: &str,
        kind: &str,
        body: &Value,
    ) -> Result<Vec<u8>, ApiError> {
        self.commands
            .borrow_mut()
            .push((host.host_id.into(), kind.into()));
        self.command_bodies.borrow_mut().push(body.clone());
        Ok(serde_json::to_vec(&json!({"id": id, "seq": self.commands.borrow().len()})).unwrap())
    }

    async fn speedtest(&self, _: &HostRef<'_>, _: u64) -> Result<Vec<u8>, ApiError> {
        Err(ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "host_offline",
            "the host is offline: never connected",
        ))
    }

    async fn revoke(&self, host: &HostRef<'_>) -> Result<(), ApiError> {
        self.revoked
            .borrow_mut()
            .push((host.host_id.into(), host.org_id.into()));
        Ok(())
    }
}

/// Records the streams the API created: (org, path, content type); reads answer what a test
/// put in the second map (by path).
#[derive(Default)]
struct TestStreams(
    RefCell<Vec<(String, String, String)>>,
    RefCell<HashMap<String, Vec<u8>>>,
);

impl StreamStore for TestStreams {
    async fn create(&self, org_id: &str, path: &str, content_type: &str) -> Result<(), ApiError> {
        self.0
            .borrow_mut()
            .push((org_id.into(), path.into(), content_type.into()));
        Ok(())
    }

    async fn read(&self, _: &str, path: &str, offset: &str) -> Result<StreamChunk, ApiError> {
        let data = self.1.borrow().get(path).cloned().unwrap_or_default();
        let from = Offset::parse(offset).map_or(0, |o| o.0 as usize);
        Ok(StreamChunk {
            bytes: data.get(from..).unwrap_or_default().to_vec(),
            next_offset: Offset(data.len() as i64).to_string(),
            up_to_date: true,
        })
    }
}

struct App {
    streams: TestStreams,
    db: TestDb,
    orgs: TestOrgs,
    limiter: Limiter,
    tunnels: TestTunnels,
    config: Config,
}

impl Backend for App {
    type Db = TestDb;
    type Orgs = TestOrgs;
    type Limiter = Limiter;
    type Tunnels = TestTunnels;
    type Streams = TestStreams;
    fn stream_store(&self) -> &TestStreams {
        &self.streams
    }
    fn tunnels(&self) -> &TestTunnels {
        &self.tunnels
    }
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
        streams: TestStreams::default(),
        db: TestDb(db),
        orgs: TestOrgs::default(),
        tunnels: TestTunnels::default(),
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

/// A second org, made by the owner of the first; answers its owner's key.
fn second_org(app: &App, key: &str) -> String {
    let (s, b) = call(
        app,
        "POST",
        "/v1/orgs",
        Some(key),
        Some(json!({"name": "Bravo", "task_prefix": "BRV"})),
    );
    assert_eq!(s, 201, "{b}");
    b["api_key"]["secret"].as_str().unwrap().to_owned()
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
        "/v1/pairing",
        "/v1/pairing/{code}",
        "/v1/pairing/{code}/approve",
        "/v1/hosts",
        "/v1/hosts/{id}",
        "/v1/hosts/{id}/nonce",
        "/v1/hosts/{id}/token",
        "/v1/sessions/{id}/messages",
        "/v1/sessions/{id}/approvals",
        "/v1/sessions/{id}/approvals/{request}",
        "/v1/hosts/{id}/sessions/{session}/title",
    ] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
    assert!(doc["components"]["schemas"]["HostStatus"]["properties"]["online"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["PairingStatus"]["oneOf"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(doc["components"]["securitySchemes"]["poll_token"].is_object());
    assert!(doc["components"]["schemas"]["Task"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

// ---- machines: pairing, connect, hosts ----

use crate::auth::host::signed_message;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer, SigningKey};

fn machine(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public_key(m: &SigningKey) -> String {
    B64.encode(m.verifying_key().as_bytes())
}

fn pairing_body(m: &SigningKey) -> Value {
    json!({
        "public_key": public_key(m),
        "name": "devbox",
        "os": "linux",
        "arch": "x86_64",
        "agents": [{"name": "claude", "version": "2.0.1"}, {"name": "codex", "version": "0.40.0"}],
    })
}

/// Runs SQL straight on the directory, to move time for rows (expiry) or fill tables (caps).
fn sql(app: &App, script: &str) {
    app.db.0.execute_script(script).unwrap();
}

fn count_rows(app: &App, query: &str) -> i64 {
    #[derive(serde::Deserialize)]
    struct N {
        n: i64,
    }
    app.db.0.query_one::<N>(query, &[]).unwrap().unwrap().n
}

/// A request with any headers, answered as the raw response.
fn raw(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> crate::http::Response {
    let mut b = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = body.map(|v| v.to_string().into_bytes()).unwrap_or_default();
    futures_lite_block_on(handle(app, b.body(body).unwrap(), "test"))
}

/// Asks for a pairing code; answers (code as shown, poll token).
fn start_pairing(app: &App, m: &SigningKey) -> (String, String) {
    let (s, v) = call(app, "POST", "/v1/pairing", None, Some(pairing_body(m)));
    assert_eq!(s, 201, "{v}");
    (
        v["code"].as_str().unwrap().to_owned(),
        v["poll_token"].as_str().unwrap().to_owned(),
    )
}

/// Pairs a machine into the org of `key`; answers the host id.
fn pair(app: &App, key: &str, m: &SigningKey) -> String {
    let (code, _) = start_pairing(app, m);
    let (s, h) = call(
        app,
        "POST",
        &format!("/v1/pairing/{code}/approve"),
        Some(key),
        None,
    );
    assert_eq!(s, 201, "{h}");
    h["id"].as_str().unwrap().to_owned()
}

fn nonce(app: &App, host: &str) -> String {
    let (s, n) = call(app, "POST", &format!("/v1/hosts/{host}/nonce"), None, None);
    assert_eq!(s, 201, "{n}");
    n["nonce"].as_str().unwrap().to_owned()
}

fn sign(m: &SigningKey, host: &str, nonce: &str) -> String {
    B64.encode(m.sign(&signed_message(host, nonce)).to_bytes())
}

fn redeem(app: &App, host: &str, nonce: &str, signature: &str) -> (u16, Value) {
    call(
        app,
        "POST",
        &format!("/v1/hosts/{host}/token"),
        None,
        Some(json!({"nonce": nonce, "signature": signature})),
    )
}

/// A fresh nonce, signed and redeemed: the host token.
fn connect(app: &App, m: &SigningKey, host: &str) -> String {
    let n = nonce(app, host);
    let (s, t) = redeem(app, host, &n, &sign(m, host, &n));
    assert_eq!(s, 200, "{t}");
    t["token"].as_str().unwrap().to_owned()
}

fn identify_host(app: &App, token: &str) -> Result<crate::auth::HostPrincipal, ApiError> {
    let req = http::Request::builder()
        .uri("/v1/tunnel")
        .header("authorization", format!("Bearer {token}"))
        .body(vec![])
        .unwrap();
    futures_lite_block_on(super::identify_host(app, &req))
}

/// A second member of the org of `key`, with `role`; answers their key.
fn add_member(app: &App, key: &str, email: &str, role: &str) -> String {
    let (s, m) = call(
        app,
        "POST",
        "/v1/members",
        Some(key),
        Some(json!({"email": email, "name": "M", "role": role})),
    );
    assert_eq!(s, 201, "{m}");
    m["api_key"]["secret"].as_str().unwrap().to_owned()
}

#[test]
fn machines_pair_then_connect_with_a_signed_nonce() {
    let app = app();
    let owner_key = owner(&app);
    let member = add_member(&app, &owner_key, "bo@x.io", "member");
    let m = machine(1);

    let (code, poll) = start_pairing(&app, &m);
    assert_eq!(code.len(), 9);
    assert_eq!(code.as_bytes()[4], b'-');
    let poll_path = format!("/v1/pairing/{code}");
    let (s, st) = call(&app, "GET", &poll_path, Some(&poll), None);
    assert_eq!((s, st), (200, json!({"status": "pending"})));

    // Any member approves, typing the code loosely.
    let typed = code.replace('-', "").to_lowercase();
    let (s, host) = call(
        &app,
        "POST",
        &format!("/v1/pairing/{typed}/approve"),
        Some(&member),
        None,
    );
    assert_eq!(s, 201, "{host}");
    let host_id = host["id"].as_str().unwrap().to_owned();
    assert!(host_id.starts_with("hst_"));
    assert_eq!(host["name"], "devbox");
    assert_eq!(host["os"], "linux");
    assert_eq!(host["arch"], "x86_64");
    assert_eq!(host["public_key"], public_key(&m));
    assert_eq!(
        host["agents"][1],
        json!({"name": "codex", "version": "0.40.0"})
    );
    assert_eq!(host["online"], false);
    assert_eq!(host["reason"], "never connected");
    assert_eq!(host["last_seen_at"], Value::Null);
    assert_eq!(host["queued_commands"], 0);
    assert_eq!(host["revoked_at"], Value::Null);
    let (_, me) = call(&app, "GET", "/v1/me", Some(&member), None);
    assert_eq!(host["created_by"], me["member_id"]);
    let org_id = me["org"]["id"].as_str().unwrap();
    assert_eq!(host["org_id"], org_id);

    // The daemon's poll learns its host id.
    let (s, st) = call(&app, "GET", &poll_path, Some(&poll), None);
    assert_eq!(s, 200);
    assert_eq!(
        st,
        json!({"status": "approved", "host_id": host_id, "org_id": org_id})
    );

    // Nonce, signature, token.
    let (s, n) = call(
        &app,
        "POST",
        &format!("/v1/hosts/{host_id}/nonce"),
        None,
        None,
    );
    assert_eq!(s, 201, "{n}");
    assert!(n["expires_at"].is_string());
    let nonce = n["nonce"].as_str().unwrap();
    assert_eq!(B64.decode(nonce).unwrap().len(), 32);
    let (s, t) = redeem(&app, &host_id, nonce, &sign(&m, &host_id, nonce));
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["expires_in"], 900);
    let token = t["token"].as_str().unwrap();
    let hp = crate::auth::verify_host_token(&app.config, token).unwrap();
    assert_eq!(
        (hp.host_id.as_str(), hp.org_id.as_str()),
        (host_id.as_str(), org_id)
    );
    assert_eq!(identify_host(&app, token).unwrap(), hp);

    // Members see it.
    let (s, list) = call(&app, "GET", "/v1/hosts", Some(&member), None);
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0], host);
    let (s, got) = call(
        &app,
        "GET",
        &format!("/v1/hosts/{host_id}"),
        Some(&owner_key),
        None,
    );
    assert_eq!((s, &got), (200, &host));
}

#[test]
fn pairing_codes_are_typed_loosely_but_checked() {
    let app = app();
    let key = owner(&app);
    let (code, poll) = start_pairing(&app, &machine(1));
    let lower = code.to_lowercase();
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/v1/pairing/{lower}"),
            Some(&poll),
            None
        )
        .0,
        200
    );
    // Not a code at all: 400, and not counted as a guess.
    for bad in ["ABCD-EFG0", "ABCD", "ABCDEFGHJK", "OOOO-OOOO"] {
        let (s, v) = call(
            &app,
            "POST",
            &format!("/v1/pairing/{bad}/approve"),
            Some(&key),
            None,
        );
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_code")),
            "{bad}"
        );
        assert_eq!(
            call(
                &app,
                "GET",
                &format!("/v1/pairing/{bad}"),
                Some(&poll),
                None
            )
            .0,
            400
        );
    }
    assert_eq!(
        count_rows(&app, "SELECT count(*) AS n FROM pairing_attempts"),
        0
    );
    // The poll needs the token: without one 401; a wrong one, like an unknown code, 404.
    let path = format!("/v1/pairing/{code}");
    assert_eq!(call(&app, "GET", &path, None, None).0, 401);
    let (s, wrong) = call(&app, "GET", &path, Some("not-the-token"), None);
    let (_, unknown) = call(&app, "GET", "/v1/pairing/ZZZZ-ZZZZ", Some(&poll), None);
    assert_eq!(s, 404);
    assert_eq!(
        wrong, unknown,
        "a wrong token and an unknown code look the same"
    );
    // The token is stored only as a hash.
    assert_eq!(
        count_rows(
            &app,
            &format!("SELECT count(*) AS n FROM pairing_codes WHERE poll_hash = '{poll}'")
        ),
        0
    );
    // Wrong methods.
    assert_eq!(call(&app, "GET", "/v1/pairing", None, None).0, 405);
    assert_eq!(call(&app, "DELETE", &path, None, None).0, 405);
    assert_eq!(
        call(&app, "GET", &format!("{path}/approve"), Some(&key), None).0,
        405
    );
}

#[test]
fn pairing_codes_expire_and_work_once() {
    let app = app();
    let key = owner(&app);
    // Used once, then gone.
    let (code, poll) = start_pairing(&app, &machine(1));
    let approve = format!("/v1/pairing/{code}/approve");
    assert_eq!(call(&app, "POST", &approve, Some(&key), None).0, 201);
    assert_eq!(call(&app, "POST", &approve, Some(&key), None).0, 404);
    assert_eq!(count_rows(&app, "SELECT count(*) AS n FROM hosts"), 1);
    // The approved code stays pollable after its original expiry (approval extends it).
    sql(
        &app,
        "UPDATE pairing_codes SET created_at = created_at - 600000",
    );
    let (s, st) = call(
        &app,
        "GET",
        &format!("/v1/pairing/{code}"),
        Some(&poll),
        None,
    );
    assert_eq!((s, st["status"].as_str()), (200, Some("approved")));

    // Expired before approval: poll and approve both 404.
    let (code, poll) = start_pairing(&app, &machine(2));
    sql(
        &app,
        "UPDATE pairing_codes SET expires_at = expires_at - 600001 WHERE host_id IS NULL",
    );
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/v1/pairing/{code}"),
            Some(&poll),
            None
        )
        .0,
        404
    );
    assert_eq!(
        call(
            &app,
            "POST",
            &format!("/v1/pairing/{code}/approve"),
            Some(&key),
            None
        )
        .0,
        404
    );
    // Expired codes are purged by the next request for one.
    start_pairing(&app, &machine(3));
    assert_eq!(
        count_rows(&app, "SELECT count(*) AS n FROM pairing_codes"),
        2
    );
}

#[test]
fn a_key_pairs_one_live_host_at_a_time() {
    let app = app();
    let key = owner(&app);
    let m = machine(1);
    // Two codes for one key: the first approval wins, the second conflicts.
    let (first, _) = start_pairing(&app, &m);
    let (second, _) = start_pairing(&app, &m);
    let host = {
        let (s, h) = call(
            &app,
            "POST",
            &format!("/v1/pairing/{first}/approve"),
            Some(&key),
            None,
        );
        assert_eq!(s, 201);
        h["id"].as_str().unwrap().to_owned()
    };
    let (s, v) = call(
        &app,
        "POST",
        &format!("/v1/pairing/{second}/approve"),
        Some(&key),
        None,
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("host_key_registered"))
    );
    // A registered key cannot even ask for a code ...
    let (s, v) = call(&app, "POST", "/v1/pairing", None, Some(pairing_body(&m)));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("host_key_registered"))
    );
    // ... until its host is revoked.
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/hosts/{host}"),
            Some(&key),
            None
        )
        .0,
        204
    );
    let again = pair(&app, &key, &m);
    assert_ne!(again, host);
}

#[test]
fn guessing_pairing_codes_is_rate_limited_per_key() {
    let app = app();
    let key = owner(&app);
    let other = add_member(&app, &key, "bo@x.io", "member");
    let (code, _) = start_pairing(&app, &machine(1));
    for i in 0..10 {
        let (s, _) = call(
            &app,
            "POST",
            "/v1/pairing/ZZZZ-ZZZZ/approve",
            Some(&key),
            None,
        );
        assert_eq!(s, 404, "guess {i}");
    }
    let res = raw(
        &app,
        "POST",
        "/v1/pairing/ZZZZ-ZZZZ/approve",
        &[("x-api-key", &key)],
        None,
    );
    assert_eq!(res.status().as_u16(), 429);
    let wait: u32 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&wait), "{wait}");
    // Even the right code waits: the limit is on the key, not on wrong answers only.
    let approve = format!("/v1/pairing/{code}/approve");
    assert_eq!(call(&app, "POST", &approve, Some(&key), None).0, 429);
    // Tokens minted from the key share its budget.
    let (_, t) = call(&app, "POST", "/v1/auth/token", Some(&key), None);
    assert_eq!(
        call(
            &app,
            "POST",
            &approve,
            Some(t["token"].as_str().unwrap()),
            None
        )
        .0,
        429
    );
    // Another key is not affected.
    assert_eq!(call(&app, "POST", &approve, Some(&other), None).0, 201);
    // Once the window has passed, the key may try again.
    sql(&app, "UPDATE pairing_attempts SET at = at - 600000");
    assert_eq!(
        call(&app, "POST", &approve, Some(&key), None).0,
        404,
        "used by now"
    );
}

#[test]
fn nonces_are_single_use_short_lived_and_bound_to_the_host() {
    let app = app();
    let key = owner(&app);
    let (a, b) = (machine(1), machine(2));
    let host_a = pair(&app, &key, &a);
    let host_b = pair(&app, &key, &b);

    // Replay: the same nonce and signature work once.
    let n = nonce(&app, &host_a);
    let sig = sign(&a, &host_a, &n);
    assert_eq!(redeem(&app, &host_a, &n, &sig).0, 200);
    let (s, v) = redeem(&app, &host_a, &n, &sig);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_nonce"))
    );

    // Wrong key, or a signature made for another host or nonce: 401, and the nonce survives.
    let n = nonce(&app, &host_a);
    for bad in [
        sign(&b, &host_a, &n),
        sign(&a, &host_b, &n),
        sign(&a, &host_a, "other"),
    ] {
        let (s, v) = redeem(&app, &host_a, &n, &bad);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("invalid_signature"))
        );
    }
    assert_eq!(redeem(&app, &host_a, &n, &sign(&a, &host_a, &n)).0, 200);

    // A nonce issued to one host does not serve another.
    let n = nonce(&app, &host_a);
    let (s, v) = redeem(&app, &host_b, &n, &sign(&b, &host_b, &n));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_nonce"))
    );

    // Expired.
    let n = nonce(&app, &host_a);
    sql(
        &app,
        "UPDATE host_nonces SET expires_at = expires_at - 60001",
    );
    assert_eq!(redeem(&app, &host_a, &n, &sign(&a, &host_a, &n)).0, 401);

    // Never issued.
    let made_up = B64.encode([3u8; 32]);
    assert_eq!(
        redeem(&app, &host_a, &made_up, &sign(&a, &host_a, &made_up)).0,
        401
    );

    // Malformed input is a 4xx of its own.
    let n = nonce(&app, &host_a);
    assert_eq!(redeem(&app, &host_a, &n, "c2ln").0, 422);
    assert_eq!(
        redeem(&app, &host_a, "short", &sign(&a, &host_a, "short")).0,
        422
    );
    let (s, _) = call(
        &app,
        "POST",
        &format!("/v1/hosts/{host_a}/token"),
        None,
        Some(json!({"nonce": n, "signature": sign(&a, &host_a, &n), "extra": 1})),
    );
    assert_eq!(s, 422);
    assert_eq!(
        call(&app, "POST", "/v1/hosts/hst_nope/nonce", None, None).0,
        400
    );
    assert_eq!(
        redeem(&app, "hst_nope", &n, &sign(&a, "hst_nope", &n)).0,
        400
    );
    let unknown = tether_durable::ids::new("hst");
    assert_eq!(
        call(
            &app,
            "POST",
            &format!("/v1/hosts/{unknown}/nonce"),
            None,
            None
        )
        .0,
        404
    );
    assert_eq!(redeem(&app, &unknown, &n, &sign(&a, &unknown, &n)).0, 401);
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/v1/hosts/{host_a}/nonce"),
            None,
            None
        )
        .0,
        405
    );
}

#[test]
fn outstanding_nonces_are_capped_per_host_oldest_first() {
    let app = app();
    let key = owner(&app);
    let m = machine(1);
    let host = pair(&app, &key, &m);
    let nonces: Vec<String> = (0..25).map(|_| nonce(&app, &host)).collect();
    let kept = count_rows(&app, "SELECT count(*) AS n FROM host_nonces");
    assert_eq!(kept, crate::directory::hosts::MAX_NONCES_PER_HOST);
    // The oldest were evicted; the newest still work.
    let first = &nonces[0];
    assert_eq!(redeem(&app, &host, first, &sign(&m, &host, first)).0, 401);
    let last = &nonces[24];
    assert_eq!(redeem(&app, &host, last, &sign(&m, &host, last)).0, 200);
    // Used nonces make room too.
    nonce(&app, &host);
    assert_eq!(
        count_rows(&app, "SELECT count(*) AS n FROM host_nonces"),
        20
    );
    assert_eq!(
        count_rows(
            &app,
            "SELECT count(*) AS n FROM host_nonces WHERE used_at IS NOT NULL"
        ),
        0
    );
}

#[test]
fn revoked_hosts_cannot_connect() {
    let app = app();
    let key = owner(&app);
    let member = add_member(&app, &key, "bo@x.io", "member");
    let m = machine(1);
    let host = pair(&app, &key, &m);
    let token = connect(&app, &m, &host);
    let pending = nonce(&app, &host);
    let path = format!("/v1/hosts/{host}");

    // Members may not revoke; admins may, and the host's tunnel is closed.
    assert_eq!(call(&app, "DELETE", &path, Some(&member), None).0, 403);
    assert!(app.tunnels.revoked.borrow().is_empty());
    let res = raw(&app, "DELETE", &path, &[("x-api-key", &key)], None);
    assert_eq!(res.status().as_u16(), 204);
    let (_, me) = call(&app, "GET", "/v1/me", Some(&key), None);
    let org = me["org"]["id"].as_str().unwrap().to_owned();
    assert_eq!(*app.tunnels.revoked.borrow(), vec![(host.clone(), org)]);
    // A revoked host takes no commands and answers nothing.
    let (s, _) = call(
        &app,
        "POST",
        &format!("{path}/commands"),
        Some(&key),
        Some(json!({"kind": "host.ping"})),
    );
    assert_eq!(s, 410);

    // No token for a nonce issued before, no new nonce, and the old token no longer connects.
    assert_eq!(
        redeem(&app, &host, &pending, &sign(&m, &host, &pending)).0,
        401
    );
    assert_eq!(
        call(&app, "POST", &format!("{path}/nonce"), None, None).0,
        404
    );
    let e = identify_host(&app, &token).unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.body.error.code.as_str()),
        (401, "host_revoked")
    );

    // Still listed, as revoked; revoking again changes nothing.
    let (_, h) = call(&app, "GET", &path, Some(&member), None);
    assert!(h["revoked_at"].is_string());
    assert_eq!(h["reason"], "revoked");
    assert_eq!(call(&app, "DELETE", &path, Some(&key), None).0, 204);
    let (_, again) = call(&app, "GET", &path, Some(&member), None);
    assert_eq!(again["revoked_at"], h["revoked_at"]);
}

#[test]
fn host_and_member_tokens_do_not_cross() {
    let app = app();
    let key = owner(&app);
    let m = machine(1);
    let host = pair(&app, &key, &m);
    let host_token = connect(&app, &m, &host);
    for (method, path) in [
        ("GET", "/v1/me"),
        ("GET", "/v1/hosts"),
        ("DELETE", &*format!("/v1/hosts/{host}")),
    ] {
        assert_eq!(
            call(&app, method, path, Some(&host_token), None).0,
            401,
            "{path}"
        );
    }
    let (_, t) = call(&app, "POST", "/v1/auth/token", Some(&key), None);
    let member_token = t["token"].as_str().unwrap();
    assert_eq!(
        crate::auth::verify_host_token(&app.config, member_token)
            .unwrap_err()
            .status
            .as_u16(),
        401
    );
    assert_eq!(
        identify_host(&app, member_token)
            .unwrap_err()
            .status
            .as_u16(),
        401
    );
    assert_eq!(identify_host(&app, &key).unwrap_err().status.as_u16(), 401);
}

#[test]
fn hosts_of_another_org_are_not_found() {
    let app = app();
    let a = owner(&app);
    let b_key = second_org(&app, &a);
    let mine = pair(&app, &a, &machine(1));
    let theirs = pair(&app, &b_key, &machine(2));
    for method in ["GET", "DELETE"] {
        assert_eq!(
            call(&app, method, &format!("/v1/hosts/{theirs}"), Some(&a), None).0,
            404,
            "{method}"
        );
    }
    let (_, list) = call(&app, "GET", "/v1/hosts", Some(&a), None);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()]);
    let (_, h) = call(
        &app,
        "GET",
        &format!("/v1/hosts/{theirs}"),
        Some(&b_key),
        None,
    );
    assert_eq!(
        h["revoked_at"],
        Value::Null,
        "B's host was not revoked by A"
    );
    assert_eq!(call(&app, "GET", "/v1/hosts/hst_zz", Some(&a), None).0, 400);
    assert_eq!(call(&app, "PUT", "/v1/hosts", Some(&a), None).0, 405);
}

#[test]
fn pairing_input_is_checked() {
    let app = app();
    let m = machine(1);
    let with = |field: &str, value: Value| {
        let mut b = pairing_body(&m);
        b[field] = value;
        b
    };
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let agents = |n: usize| {
        Value::Array(
            (0..n)
                .map(|i| json!({"name": format!("agent{i}"), "version": "1"}))
                .collect(),
        )
    };
    for (what, body) in [
        ("not base64", with("public_key", json!("not a key!"))),
        ("31 bytes", with("public_key", json!(B64.encode([7u8; 31])))),
        ("weak key", with("public_key", json!(B64.encode(weak)))),
        ("empty name", with("name", json!("  "))),
        ("long name", with("name", json!("x".repeat(101)))),
        ("control characters", with("os", json!("li\nnux"))),
        ("long arch", with("arch", json!("x".repeat(51)))),
        ("33 agents", with("agents", agents(33))),
        (
            "duplicate agent",
            with(
                "agents",
                json!([{"name": "claude", "version": "1"}, {"name": "claude", "version": "2"}]),
            ),
        ),
        (
            "long version",
            with(
                "agents",
                json!([{"name": "claude", "version": "v".repeat(101)}]),
            ),
        ),
        (
            "agent field",
            with(
                "agents",
                json!([{"name": "claude", "version": "1", "path": "/x"}]),
            ),
        ),
        ("unknown field", with("token", json!("x"))),
        ("missing field", {
            let mut b = pairing_body(&m);
            b.as_object_mut().unwrap().remove("os");
            b
        }),
    ] {
        let (s, v) = call(&app, "POST", "/v1/pairing", None, Some(body));
        assert_eq!(s, 422, "{what}: {v}");
    }
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/pairing",
            None,
            Some(with("name", json!("x".repeat(100))))
        )
        .0,
        201
    );
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/pairing",
            None,
            Some(with("agents", agents(32)))
        )
        .0,
        201
    );
    let mut no_agents = pairing_body(&machine(2));
    no_agents.as_object_mut().unwrap().remove("agents");
    assert_eq!(
        call(&app, "POST", "/v1/pairing", None, Some(no_agents)).0,
        201
    );
}

#[test]
fn host_and_pending_code_caps_hold() {
    let app = app();
    let key = owner(&app);
    let (_, me) = call(&app, "GET", "/v1/me", Some(&key), None);
    let org = me["org"]["id"].as_str().unwrap();
    sql(
        &app,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO hosts (id, org_id, name, os, arch, public_key, agents, created_by, created_at)
             SELECT printf('hst_%032x', i), '{org}', 'h', 'linux', 'x86_64', printf('k%d', i), '[]', 'm', 0 FROM n"
        ),
    );
    let (code, _) = start_pairing(&app, &machine(1));
    let approve = format!("/v1/pairing/{code}/approve");
    let (s, v) = call(&app, "POST", &approve, Some(&key), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("limit_exceeded"))
    );
    // Revoked hosts do not count.
    sql(
        &app,
        "UPDATE hosts SET revoked_at = 1 WHERE id = printf('hst_%032x', 1)",
    );
    assert_eq!(call(&app, "POST", &approve, Some(&key), None).0, 201);

    // Pending codes across the deployment. The filler codes start with '1', outside
    // the code alphabet, so expiring them below cannot touch a real code.
    sql(
        &app,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
         INSERT INTO pairing_codes (code, poll_hash, public_key, name, os, arch, agents, created_at, expires_at)
         SELECT printf('1%07d', i), 'h', 'k', 'n', 'o', 'a', '[]', 0, 9000000000000 FROM n",
    );
    let res = raw(
        &app,
        "POST",
        "/v1/pairing",
        &[("content-type", "application/json")],
        Some(pairing_body(&machine(2))),
    );
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(res.headers()["retry-after"], "60");
    // Once they expire, they are purged and pairing works again.
    sql(
        &app,
        "UPDATE pairing_codes SET expires_at = 1 WHERE code LIKE '1%'",
    );
    start_pairing(&app, &machine(2));
    assert_eq!(
        count_rows(&app, "SELECT count(*) AS n FROM pairing_codes"),
        2
    );
}

#[test]
fn credential_free_host_routes_are_limited_per_address() {
    let mut app = app();
    app.limiter.budget = 3;
    let body = pairing_body(&machine(1));
    let post = |ip: &str| {
        raw(
            &app,
            "POST",
            "/v1/pairing",
            &[
                ("content-type", "application/json"),
                ("cf-connecting-ip", ip),
            ],
            Some(body.clone()),
        )
        .status()
        .as_u16()
    };
    for _ in 0..3 {
        assert_eq!(post("192.0.2.1"), 201);
    }
    assert_eq!(post("192.0.2.1"), 429);
    assert_eq!(post("192.0.2.2"), 201);
}

#[test]
fn the_cron_purges_what_expired() {
    let app = app();
    let key = owner(&app);
    let m = machine(1);
    let host = pair(&app, &key, &m);
    connect(&app, &m, &host);
    nonce(&app, &host);
    start_pairing(&app, &machine(2));
    call(
        &app,
        "POST",
        "/v1/pairing/ZZZZ-ZZZZ/approve",
        Some(&key),
        None,
    );
    let later = tether_durable::time::now_ms() + 3_600_000;
    let removed =
        futures_lite_block_on(crate::directory::hosts::purge_expired(&app.db, later)).unwrap();
    // Two codes (one approved, one pending), one nonce (issuing it dropped the used one), one
    // failed approval.
    assert_eq!(removed, 4);
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/hosts/{host}"),
            Some(&key),
            None
        )
        .0,
        204
    );
    let purged =
        futures_lite_block_on(crate::directory::hosts::purge_revoked_hosts(&app.db, later))
            .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        call(&app, "GET", "/v1/hosts", Some(&key), None).1,
        json!([])
    );
}

#[test]
fn info_and_commands_go_through_the_hosts_tunnel() {
    let app = app();
    let key = owner(&app);
    let host = pair(&app, &key, &machine(7));
    let (s, e) = call(
        &app,
        "GET",
        &format!("/v1/hosts/{host}/info"),
        Some(&key),
        None,
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (503, Some("host_offline"))
    );
    let path = format!("/v1/hosts/{host}/commands");
    let (s, c) = call(
        &app,
        "POST",
        &path,
        Some(&key),
        Some(json!({"kind": "host.ping", "body": {"n": 1}})),
    );
    assert_eq!(s, 202);
    assert!(c["id"].as_str().unwrap().starts_with("cmd_"));
    assert_eq!(
        *app.tunnels.commands.borrow(),
        vec![(host.clone(), "host.ping".to_owned())]
    );
    for bad in [
        json!({}),
        json!({"kind": ""}),
        json!({"kind": "x", "extra": 1}),
    ] {
        assert_eq!(
            call(&app, "POST", &path, Some(&key), Some(bad.clone())).0,
            422,
            "{bad}"
        );
    }
    // Another org sees neither.
    let other = second_org(&app, &key);
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/v1/hosts/{host}/info"),
            Some(&other),
            None
        )
        .0,
        404
    );
    assert_eq!(
        call(
            &app,
            "POST",
            &path,
            Some(&other),
            Some(json!({"kind": "k"}))
        )
        .0,
        404
    );
}

#[test]
fn sessions_start_on_a_linked_host_and_hosts_report_only_their_own() {
    let app = app();
    let key = owner(&app);
    let (m1, m2) = (machine(1), machine(2));
    let (h1, h2) = (pair(&app, &key, &m1), pair(&app, &key, &m2));
    let (t1, t2) = (connect(&app, &m1, &h1), connect(&app, &m2, &h2));
    let start = |body: Value| call(&app, "POST", "/v1/sessions", Some(&key), Some(body));

    // Unknown project, then a project no host has.
    let (s, e) = start(json!({"project": "app", "agent": "claude", "host": h1}));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
    call(
        &app,
        "POST",
        "/v1/projects",
        Some(&key),
        Some(json!({"name": "other"})),
    );
    let (s, e) = start(json!({"project": "other", "agent": "claude", "host": h1}));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("project_not_linked")),
        "{e}"
    );

    // Links are the host's to make (host token, own id only); members cannot.
    let link = json!({"project": "app", "path": "/src/app", "create": true});
    assert_eq!(
        call(
            &app,
            "POST",
            &format!("/v1/hosts/{h1}/links"),
            Some(&key),
            Some(link.clone())
        )
        .0,
        401
    );
    assert_eq!(
        call(
            &app,
            "POST",
            &format!("/v1/hosts/{h1}/links"),
            Some(&t2),
            Some(link.clone())
        )
        .0,
        403
    );
    let (s, l) = call(
        &app,
        "POST",
        &format!("/v1/hosts/{h1}/links"),
        Some(&t1),
        Some(link),
    );
    assert_eq!((s, l["project_name"].as_str()), (200, Some("app")), "{l}");
    let (s, links) = call(
        &app,
        "GET",
        &format!("/v1/hosts/{h1}/links"),
        Some(&key),
        None,
    );
    assert_eq!(
        (s, links.as_array().map(Vec::len)),
        (200, Some(1)),
        "{links}"
    );

    // "Any" host needs one online: these never connected.
    let (s, e) = start(json!({"project": "app", "agent": "claude"}));
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("no_host_online")),
        "{e}"
    );
    assert_eq!(
        start(json!({"project": "app", "agent": "claude", "host": h2})).1["error"]["code"],
        "project_not_linked"
    );
    for bad in [
        json!({"project": "app", "agent": "Bad Name", "host": h1}),
        json!({"project": "app", "agent": "claude", "host": h1, "cols": 0}),
        json!({"project": "app", "agent": "claude", "host": h1, "branch": "a..b"}),
        json!({"project": "app", "agent": "claude", "host": h1, "prompt_template": "{{title}}"}),
        json!({"project": "app", "agent": "claude", "host": h1, "start_timeout_secs": 0}),
        json!({"project": "app", "agent": "claude", "host": h1, "prompt": "x".repeat(100_001)}),
    ] {
        assert_eq!(start(bad.clone()).0, 422, "{bad}");
    }

    // A named host is queued for even while offline; the task fills the prompt.
    let (_, task) = call(
        &app,
        "POST",
        "/v1/tasks",
        Some(&key),
        Some(json!({"title": "Fix login", "labels": ["bug"]})),
    );
    let (s, ses) = start(
        json!({"project": "app", "agent": "codex", "host": h1, "task": task["slug"], "prompt": "Be brief."}),
    );
    assert_eq!(s, 201, "{ses}");
    assert_eq!(ses["status"], "queued");
    let prompt = ses["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("Fix login") && prompt.contains("bug") && prompt.ends_with("Be brief."),
        "{prompt}"
    );
    let id = ses["id"].as_str().unwrap();
    let path = ses["stream_path"].as_str().unwrap();
    assert_eq!(path, format!("hosts/{h1}/sessions/{id}/terminal"));
    assert_eq!(
        app.streams.0.borrow().last().map(|s| s.1.clone()),
        Some(path.to_owned())
    );
    assert_eq!(
        app.tunnels.commands.borrow().last().cloned(),
        Some((h1.clone(), "session.start".to_owned()))
    );

    // Input needs a running session.
    let (s, e) = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/input"),
        Some(&key),
        Some(json!({"data": "y\r"})),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("session_not_running")),
        "{e}"
    );

    // Its host reports; the other host cannot see it.
    let report = |token: &str, host: &str, body: Value| {
        call(
            &app,
            "POST",
            &format!("/v1/hosts/{host}/sessions/{id}/status"),
            Some(token),
            Some(body),
        )
    };
    assert_eq!(
        report(&t2, &h2, json!({"status": "running", "at_ms": 1})).0,
        404
    );
    assert_eq!(
        report(&t2, &h1, json!({"status": "running", "at_ms": 1})).0,
        403
    );
    let (s, r) = report(
        &t1,
        &h1,
        json!({"status": "running", "branch": "tether/tet-1-fix-login", "at_ms": 1}),
    );
    assert_eq!((s, r["status"].as_str()), (200, Some("running")), "{r}");
    let (s, e) = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/input"),
        Some(&key),
        Some(json!({"data": "y", "data_base64": "eQ=="})),
    );
    assert_eq!(s, 422, "{e}");
    // Running: the input goes to the tunnel, which is down here.
    assert_eq!(
        call(
            &app,
            "POST",
            &format!("/v1/sessions/{id}/input"),
            Some(&key),
            Some(json!({"data": "y\r"}))
        )
        .0,
        503
    );

    // Stop goes as a command; the exit is reported; then nothing moves it.
    let (s, st) = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/stop"),
        Some(&key),
        None,
    );
    assert_eq!((s, st["status"].as_str()), (202, Some("running")), "{st}");
    assert_eq!(
        app.tunnels.commands.borrow().last().map(|c| c.1.clone()),
        Some("session.stop".to_owned())
    );
    let (s, r) = report(
        &t1,
        &h1,
        json!({"status": "stopped", "reason": "stopped by a member", "exit_code": 143, "at_ms": 2}),
    );
    assert_eq!(
        (s, r["status"].as_str(), r["exit_code"].as_i64()),
        (200, Some("stopped"), Some(143)),
        "{r}"
    );
    assert_eq!(
        report(&t1, &h1, json!({"status": "running", "at_ms": 3})).1["error"]["code"],
        "session_ended"
    );

    // A queued session stops at once.
    let (_, q) = start(json!({"project": "app", "agent": "claude", "host": h1}));
    let (s, st) = call(
        &app,
        "POST",
        &format!("/v1/sessions/{}/stop", q["id"].as_str().unwrap()),
        Some(&key),
        Some(json!({"reason": "changed my mind"})),
    );
    assert_eq!(
        (s, st["status"].as_str(), st["reason"].as_str()),
        (202, Some("stopped"), Some("changed my mind")),
        "{st}"
    );

    let (s, page) = call(&app, "GET", "/v1/sessions?status=stopped", Some(&key), None);
    assert_eq!(
        (s, page["data"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{page}"
    );
    assert_eq!(
        call(&app, "GET", "/v1/sessions?status=nope", Some(&key), None).0,
        400
    );
    assert_eq!(
        call(&app, "GET", "/v1/sessions/ses_123", Some(&key), None).0,
        400
    );
}

mod automations;
mod chat;
mod mcp;
mod policies;
mod shape;
mod webhooks;
