//! What the handlers need from the runtime, as traits: the directory database (D1), the org
//! Durable Objects, the host tunnels, the session streams, a rate limiter and configuration. The Worker, the Spin component and the
//! in-memory test backend each implement them.
//!
//! The traits use `async fn` without `Send` bounds on purpose: Wasm runtimes run a request on
//! one thread, and no handler future is ever moved across threads.
#![allow(async_fn_in_trait)]

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use tether_durable::host::HostStatus;
use tether_durable::org::OrgCall;
use tether_durable::sql::{SqlError, SqlValue};
use tether_durable::sync::{ShapeChunk, ShapeRead};

/// The directory database: SQLite semantics, asynchronous (Cloudflare D1).
pub trait Db {
    async fn query<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, SqlError>;

    /// Runs statements atomically, in order; answers how many rows each changed.
    async fn batch(&self, statements: &[(&str, Vec<SqlValue>)]) -> Result<Vec<u64>, SqlError>;

    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
        Ok(self
            .batch(&[(sql, params.to_vec())])
            .await?
            .first()
            .copied()
            .unwrap_or(0))
    }

    async fn query_one<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Option<T>, SqlError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// The org Durable Objects: one call, one JSON answer as bytes, passed through to the client
/// without re-parsing (or the object's error).
pub trait OrgStore {
    async fn call(&self, call: &OrgCall) -> Result<Vec<u8>, ApiError>;
    /// Reads a shape from the org's change log; a live read may wait in the object for a
    /// change (up to [`tether_durable::sync::LIVE_TIMEOUT_MS`]).
    async fn shape(&self, org_id: &str, read: &ShapeRead) -> Result<ShapeChunk, ApiError>;
}

/// The host tunnels: one Host Durable Object per paired machine.
pub trait Tunnels {
    /// Whether the host's tunnel is up, and if not why.
    async fn status(&self, host: &HostRef<'_>) -> Result<HostStatus, ApiError>;
    /// A request answered by the host's daemon through its tunnel (JSON in, JSON bytes out):
    /// 503 with the reason when it is offline, 504 past `deadline_ms`.
    async fn rpc(
        &self,
        host: &HostRef<'_>,
        method: &str,
        body: &serde_json::Value,
        deadline_ms: u32,
    ) -> Result<Vec<u8>, ApiError>;
    /// Queues a command for the host (delivered in order, once acked it is gone); answers the
    /// object's JSON `{id, seq}`.
    async fn command(
        &self,
        host: &HostRef<'_>,
        id: &str,
        kind: &str,
        body: &serde_json::Value,
    ) -> Result<Vec<u8>, ApiError>;
    /// Has the daemon send `bytes` through one byte channel (credit flow control) and answers
    /// the measured `{bytes, elapsed_ms, mb_per_s}` JSON.
    async fn speedtest(&self, host: &HostRef<'_>, bytes: u64) -> Result<Vec<u8>, ApiError>;
    /// Closes the tunnel for good (the daemon stops retrying) and drops queued commands.
    async fn revoke(&self, host: &HostRef<'_>) -> Result<(), ApiError>;
}

/// The session streams, for what the API does to them itself (the protocol is served by the
/// stream objects directly).
pub trait StreamStore {
    /// Creates the stream at `path` in the org (idempotent with the same content type).
    async fn create(&self, org_id: &str, path: &str, content_type: &str) -> Result<(), ApiError>;
    /// Reads the stream at `path` from `offset` (a protocol offset) without waiting: at most
    /// what the object answers in one read.
    async fn read(&self, org_id: &str, path: &str, offset: &str) -> Result<StreamChunk, ApiError>;
}

/// What one stream read answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    pub bytes: Vec<u8>,
    /// The offset after `bytes`.
    pub next_offset: String,
    /// Whether `bytes` reach the stream's tail.
    pub up_to_date: bool,
}

/// Which host a tunnel call is for.
#[derive(Debug, Clone, Copy)]
pub struct HostRef<'a> {
    pub host_id: &'a str,
    pub org_id: &'a str,
}

/// Per-caller request limits.
pub trait RateLimiter {
    /// False when `key` has used up its budget for the current window.
    async fn allow(&self, key: &str) -> bool;
}

/// Settings read from the runtime's environment and secrets.
#[derive(Clone)]
pub struct Config {
    /// HMAC key for API JWTs (HS256); at least 32 bytes. Never in the repository.
    pub jwt_secret: Vec<u8>,
    /// Enables `POST /v1/bootstrap` while no org exists.
    pub bootstrap_token: Option<String>,
    /// Lifetime of tokens from `POST /v1/auth/token`.
    pub token_ttl_secs: i64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub const MIN_SECRET: usize = 32;
    pub const DEFAULT_TOKEN_TTL: i64 = 900;
}

/// Everything a handler can reach.
pub trait Backend {
    type Db: Db;
    type Orgs: OrgStore;
    type Limiter: RateLimiter;
    type Tunnels: Tunnels;
    type Streams: StreamStore;
    fn db(&self) -> &Self::Db;
    fn orgs(&self) -> &Self::Orgs;
    fn limiter(&self) -> &Self::Limiter;
    fn tunnels(&self) -> &Self::Tunnels;
    fn stream_store(&self) -> &Self::Streams;
    fn config(&self) -> &Config;
}
