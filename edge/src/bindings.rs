//! The Worker's bindings behind `tether_functions::backend`: D1 as [`Db`], the `ORG_STORE`
//! Durable Object namespace as [`OrgStore`], and the `API_RATE_LIMITER` binding.

use serde::de::DeserializeOwned;
use tether_durable::error::ErrorBody;
use tether_durable::objects::ORG_CALL_URL;
use tether_durable::org::OrgCall;
use tether_durable::sql::{SqlError, SqlValue};
use tether_functions::backend::{Backend, Config, Db, OrgStore, RateLimiter};
use tether_functions::error::ApiError;
use wasm_bindgen::JsValue;
use worker::{D1Database, Env, ObjectNamespace, RequestInit};

pub struct Edge {
    db: D1,
    orgs: Orgs,
    limiter: Limiter,
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
            config: Config {
                jwt_secret: jwt_secret.into_bytes(),
                bootstrap_token: text(env, "BOOTSTRAP_TOKEN").filter(|t| !t.is_empty()),
                token_ttl_secs,
            },
        })
    }
}

impl Backend for Edge {
    type Db = D1;
    type Orgs = Orgs;
    type Limiter = Limiter;
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
        let internal = |e: &dyn std::fmt::Display| ApiError::internal(e);
        let stub = self
            .0
            .id_from_name(&call.org_id)
            .and_then(|id| id.get_stub())
            .map_err(|e| internal(&e))?;
        let body = serde_json::to_string(call).map_err(|e| internal(&e))?;
        let mut init = RequestInit::new();
        init.with_method(worker::Method::Post)
            .with_body(Some(JsValue::from_str(&body)));
        let req = worker::Request::new_with_init(ORG_CALL_URL, &init).map_err(|e| internal(&e))?;
        let mut res = stub
            .fetch_with_request(req)
            .await
            .map_err(|e| internal(&e))?;
        let status = res.status_code();
        let bytes = res.bytes().await.map_err(|e| internal(&e))?;
        if status == 200 {
            return Ok(bytes);
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|e| internal(&e))?;
        Err(ApiError::from_parts(status, body))
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
