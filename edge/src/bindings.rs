//! The Worker's bindings behind `tether_functions::backend`: D1 as [`Db`], the `ORG_STORE`
//! Durable Object namespace as [`OrgStore`], the `API_RATE_LIMITER` binding; and for streams the
//! `STREAMS` namespace and `STREAM_RATE_LIMITER`.

use serde::de::DeserializeOwned;
use tether_durable::host::HostStatus;
use tether_durable::objects::{
    ACTOR_HEADER, CallError, HOST_HEADER, ORG_HEADER, PATH_HEADER, call_org, fetch_object,
    read_shape,
};
use tether_durable::org::OrgCall;
use tether_durable::sql::{SqlError, SqlValue};
use tether_durable::stream::{h as stream_headers, object_name};
use tether_durable::sync::{ShapeChunk, ShapeRead};
use tether_functions::backend::{
    Backend, Config, Db, HostRef, OrgStore, RateLimiter, StreamChunk, StreamStore, Tunnels,
};
use tether_functions::error::ApiError;
use wasm_bindgen::JsValue;
use worker::{D1Database, Env, ObjectNamespace, RequestInit};

pub struct Edge {
    db: D1,
    orgs: Orgs,
    limiter: Limiter,
    stream_limiter: Limiter,
    streams: Streams,
    tunnels: HostTunnels,
    config: Config,
}

fn text(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
}

impl Edge {
    pub fn from_env(env: &Env) -> Result<Self, ApiError> {
        let misconfigured = |what: &str| {
            worker::console_error!("misconfigured: {what}");
            ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "misconfigured",
                format!("server misconfigured: {what}"),
            )
        };
        let jwt_secret = text(env, "JWT_SECRET")
            .filter(|s| s.len() >= Config::MIN_SECRET)
            .ok_or_else(|| {
                misconfigured(
                    "JWT_SECRET must be set (wrangler secret put JWT_SECRET) to at least 32 bytes",
                )
            })?;
        let token_ttl_secs = text(env, "TOKEN_TTL_SECS")
            .and_then(|v| v.parse().ok())
            .filter(|ttl| (60..=86_400).contains(ttl))
            .unwrap_or(Config::DEFAULT_TOKEN_TTL);
        Ok(Self {
            db: D1(env
                .d1("DB")
                .map_err(|_| misconfigured("the D1 binding DB is missing"))?),
            orgs: Orgs(
                env.durable_object("ORG_STORE")
                    .map_err(|_| misconfigured("the ORG_STORE binding is missing"))?,
            ),
            limiter: Limiter(env.rate_limiter("API_RATE_LIMITER").ok()),
            stream_limiter: Limiter(env.rate_limiter("STREAM_RATE_LIMITER").ok()),
            streams: Streams(
                env.durable_object("STREAMS")
                    .map_err(|_| misconfigured("the STREAMS binding is missing"))?,
            ),
            tunnels: HostTunnels(
                env.durable_object("HOSTS")
                    .map_err(|_| misconfigured("the HOSTS binding is missing"))?,
            ),
            config: Config {
                jwt_secret: jwt_secret.into_bytes(),
                bootstrap_token: text(env, "BOOTSTRAP_TOKEN").filter(|t| !t.is_empty()),
                token_ttl_secs,
            },
        })
    }
}

impl Edge {
    /// Appends and reads have their own, larger budget than the REST API.
    pub fn stream_limiter(&self) -> &Limiter {
        &self.stream_limiter
    }

    /// The Stream Durable Objects, one per stream.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }
}

impl Backend for Edge {
    type Db = D1;
    type Orgs = Orgs;
    type Limiter = Limiter;
    type Tunnels = HostTunnels;
    type Streams = Streams;
    fn stream_store(&self) -> &Streams {
        &self.streams
    }
    fn tunnels(&self) -> &HostTunnels {
        &self.tunnels
    }
    fn db(&self) -> &D1 {
        &self.db
    }
    fn orgs(&self) -> &Orgs {
        &self.orgs
    }
    fn limiter(&self) -> &Limiter {
        &self.limiter
    }
    fn config(&self) -> &Config {
        &self.config
    }
}

pub struct D1(D1Database);

fn js(params: &[SqlValue]) -> Vec<JsValue> {
    params
        .iter()
        .map(|p| match p {
            SqlValue::Null => JsValue::NULL,
            // D1 takes JS numbers; ids and timestamps are far inside the safe-integer range.
            SqlValue::Integer(i) => JsValue::from_f64(*i as f64),
            SqlValue::Real(f) => JsValue::from_f64(*f),
            SqlValue::Text(s) => JsValue::from_str(s),
            SqlValue::Blob(b) => js_sys::Uint8Array::from(b.as_slice()).into(),
        })
        .collect()
}

fn sql_err(e: worker::Error) -> SqlError {
    SqlError::new(e.to_string())
}

impl Db for D1 {
    async fn query<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, SqlError> {
        let stmt = self.0.prepare(sql).bind(&js(params)).map_err(sql_err)?;
        stmt.all()
            .await
            .map_err(sql_err)?
            .results()
            .map_err(sql_err)
    }

    async fn batch(&self, statements: &[(&str, Vec<SqlValue>)]) -> Result<Vec<u64>, SqlError> {
        let prepared = statements
            .iter()
            .map(|(sql, params)| self.0.prepare(*sql).bind(&js(params)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        let results = self.0.batch(prepared).await.map_err(sql_err)?;
        results
            .iter()
            .map(|r| {
                Ok(r.meta()
                    .map_err(sql_err)?
                    .and_then(|m| m.changes)
                    .unwrap_or(0) as u64)
            })
            .collect()
    }
}

pub struct Orgs(ObjectNamespace);

impl OrgStore for Orgs {
    async fn call(&self, call: &OrgCall) -> Result<Vec<u8>, ApiError> {
        call_org(&self.0, call).await.map_err(api_error)
    }

    async fn shape(&self, org_id: &str, read: &ShapeRead) -> Result<ShapeChunk, ApiError> {
        read_shape(&self.0, org_id, read).await.map_err(api_error)
    }
}

/// The `STREAMS` namespace: one Stream object per stream, named by org and path.
pub struct Streams(ObjectNamespace);

impl Streams {
    pub fn stub(&self, org_id: &str, path: &str) -> worker::Result<worker::Stub> {
        self.0.id_from_name(&object_name(org_id, path))?.get_stub()
    }

    /// The headers that tell a stream object its org, path and acting caller (the Worker alone
    /// sets them).
    pub fn route_headers(
        headers: &worker::Headers,
        org_id: &str,
        path: &str,
        actor: &str,
    ) -> worker::Result<()> {
        headers.set(ORG_HEADER, org_id)?;
        headers.set(PATH_HEADER, path)?;
        headers.set(ACTOR_HEADER, actor)
    }
}

impl StreamStore for Streams {
    async fn create(&self, org_id: &str, path: &str, content_type: &str) -> Result<(), ApiError> {
        let created = async {
            let headers = worker::Headers::new();
            Self::route_headers(&headers, org_id, path, "tether")?;
            headers.set("content-type", content_type)?;
            let mut init = RequestInit::new();
            init.with_method(worker::Method::Put).with_headers(headers);
            let req = worker::Request::new_with_init(
                &format!("https://stream.internal/v1/stream/{path}"),
                &init,
            )?;
            Ok::<_, worker::Error>((self.stub(org_id, path)?, req))
        };
        let (stub, req) = created.await.map_err(|e| ApiError::internal(&e))?;
        fetch_object(&stub, req).await.map(drop).map_err(api_error)
    }

    async fn read(&self, org_id: &str, path: &str, offset: &str) -> Result<StreamChunk, ApiError> {
        let read = async {
            let headers = worker::Headers::new();
            Self::route_headers(&headers, org_id, path, "tether")?;
            let mut init = RequestInit::new();
            init.with_method(worker::Method::Get).with_headers(headers);
            let req = worker::Request::new_with_init(
                &format!("https://stream.internal/v1/stream/{path}?offset={offset}"),
                &init,
            )?;
            let mut res = self.stub(org_id, path)?.fetch_with_request(req).await?;
            let next_offset = res.headers().get(stream_headers::NEXT_OFFSET)?;
            let up_to_date = res.headers().get(stream_headers::UP_TO_DATE)?.is_some();
            Ok::<_, worker::Error>((
                res.status_code(),
                next_offset,
                up_to_date,
                res.bytes().await?,
            ))
        };
        let (status, next_offset, up_to_date, bytes) =
            read.await.map_err(|e| ApiError::internal(&e))?;
        if !(200..300).contains(&status) {
            let body = serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(&e))?;
            return Err(ApiError::from_parts(status, body));
        }
        Ok(StreamChunk {
            bytes,
            next_offset: next_offset.unwrap_or_else(|| offset.to_owned()),
            up_to_date,
        })
    }
}

/// The `HOSTS` namespace: one Host object per paired machine.
pub struct HostTunnels(ObjectNamespace);

impl HostTunnels {
    /// A request to a host's object, naming the host and its org.
    pub fn request(
        &self,
        host: &HostRef<'_>,
        method: worker::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> worker::Result<(worker::Stub, worker::Request)> {
        let headers = worker::Headers::new();
        headers.set(HOST_HEADER, host.host_id)?;
        headers.set(ORG_HEADER, host.org_id)?;
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(b) = body {
            init.with_body(Some(JsValue::from_str(&b.to_string())));
        }
        let req = worker::Request::new_with_init(&format!("https://host.internal{path}"), &init)?;
        let stub = self.0.id_from_name(host.host_id)?.get_stub()?;
        Ok((stub, req))
    }

    async fn call(
        &self,
        host: &HostRef<'_>,
        method: worker::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, ApiError> {
        let (stub, req) = self
            .request(host, method, path, body)
            .map_err(|e| ApiError::internal(&e))?;
        fetch_object(&stub, req).await.map_err(api_error)
    }
}

/// An object's failure as the API's.
fn api_error(e: CallError) -> ApiError {
    match e {
        CallError::Answered(status, body) => ApiError::from_parts(status, body),
        CallError::Failed(e) => ApiError::internal(&e),
    }
}

impl Tunnels for HostTunnels {
    async fn status(&self, host: &HostRef<'_>) -> Result<HostStatus, ApiError> {
        let bytes = self
            .call(host, worker::Method::Get, "/status", None)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(&e))
    }

    async fn rpc(
        &self,
        host: &HostRef<'_>,
        method: &str,
        body: &serde_json::Value,
        deadline_ms: u32,
    ) -> Result<Vec<u8>, ApiError> {
        let call = serde_json::json!({"method": method, "body": body, "deadline_ms": deadline_ms});
        self.call(host, worker::Method::Post, "/rpc", Some(&call))
            .await
    }

    async fn command(
        &self,
        host: &HostRef<'_>,
        id: &str,
        kind: &str,
        body: &serde_json::Value,
    ) -> Result<Vec<u8>, ApiError> {
        let call = serde_json::json!({"id": id, "kind": kind, "body": body});
        self.call(host, worker::Method::Post, "/command", Some(&call))
            .await
    }

    async fn speedtest(&self, host: &HostRef<'_>, bytes: u64) -> Result<Vec<u8>, ApiError> {
        let call = serde_json::json!({ "bytes": bytes });
        self.call(host, worker::Method::Post, "/speedtest", Some(&call))
            .await
    }

    async fn revoke(&self, host: &HostRef<'_>) -> Result<(), ApiError> {
        self.call(host, worker::Method::Post, "/revoke", None)
            .await
            .map(drop)
    }
}

/// The Workers rate-limiting binding; without one configured, nothing is limited.
pub struct Limiter(Option<worker::RateLimiter>);

impl RateLimiter for Limiter {
    async fn allow(&self, key: &str) -> bool {
        match &self.0 {
            // A limiter failure must not lock everyone out: allow, and log it.
            Some(l) => l
                .limit(key.to_owned())
                .await
                .map(|o| o.success)
                .unwrap_or_else(|e| {
                    worker::console_error!("rate limiter: {e}");
                    true
                }),
            None => true,
        }
    }
}
