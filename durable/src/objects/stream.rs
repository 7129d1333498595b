//! `StreamObject`: one Durable Object per stream, speaking the Durable Streams protocol.
//!
//! The Worker authenticates the caller and forwards the request here with the stream's org and
//! path in [`ORG_HEADER`] / [`PATH_HEADER`] (clients cannot set them: the Worker drops every
//! `x-tether-*` header it receives). The protocol rules live in [`crate::stream`]; this file adds
//! what needs the runtime:
//!
//! - readers waiting at the tail (long-poll, SSE) and the wake-up on every append or close;
//! - forks: a fork reads the part it inherits from its source object (`/_internal/read`),
//!   registers with it when created (`/_internal/fork`) and releases it when gone
//!   (`/_internal/release`); a deleted source with live forks stays readable to them (410 to
//!   everyone else) until the last one goes;
//! - the org's stream registry (the per-org cap) in the org object;
//! - expiry: checked on every access and by an alarm, which also retries undelivered notices
//!   (the outbox), so nothing is leaked when a call to another object fails.
//!
//! Paths starting `/_internal/` are calls from other stream objects; the Worker never forwards
//! such a path (every public path starts with `/v1/stream/`).

use super::do_sql::DoSql;
use super::{CallError, call_org};
use crate::org::{OrgCall, OrgOp};
use crate::sql::SqlError;
use crate::stream::format::{self, SseData};
use crate::stream::request::{self, CreateReq, Headers, Live, ReadReq, Start};
use crate::stream::store::{self, Meta, NewFork, NewStream, Notice, Row, Store};
use crate::stream::{
    COMMON_HEADERS, LONG_POLL_MS, Offset, PATH_PREFIX, READ_CHUNK, SSE_CYCLE_MS, StreamError, h,
    object_name,
};
use crate::time::now_ms;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::channel::oneshot;
use futures::future::{Either, select};
use futures::lock::Mutex;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::JsValue;
use worker::{
    Delay, DurableObject, Env, Method, Request, RequestInit, Response, Result, State,
    durable_object,
};

/// The org owning the stream (set by the Worker).
pub const ORG_HEADER: &str = "x-tether-org";
/// The stream's path under `/v1/stream/` (set by the Worker).
pub const PATH_HEADER: &str = "x-tether-path";
/// The member acting (set by the Worker), recorded by the org object.
pub const ACTOR_HEADER: &str = "x-tether-actor";

const INTERNAL_URL: &str = "https://stream.internal/_internal/";
/// How soon undelivered notices are retried.
const RETRY_MS: i64 = 30_000;

#[durable_object]
pub struct StreamObject {
    core: Rc<Core>,
}

struct Core {
    state: State,
    env: Env,
    sql: std::result::Result<DoSql, SqlError>,
    migrated: Cell<bool>,
    /// Serialises the operations that await other objects (create, delete, fork bookkeeping,
    /// expiry), so no two interleave. Appends and reads never wait on it.
    lock: Mutex<()>,
    /// Readers waiting at the tail.
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    flushing: Cell<bool>,
}

/// The stream as an access finds it.
enum Current {
    Missing,
    /// Deleted or expired while forks still read from it.
    Gone(Meta),
    Live(Meta),
}

/// Who the request is for, from the Worker's headers.
struct Target {
    org_id: String,
    path: String,
    actor: String,
}

impl Target {
    fn public_path(&self) -> String {
        format!("{PATH_PREFIX}{}", self.path)
    }
}

#[derive(Serialize, Deserialize)]
struct ReadCall {
    from: i64,
    cap: i64,
    max: usize,
}

#[derive(Serialize, Deserialize)]
struct ForkCall {
    child: String,
    offset: Option<i64>,
    sub_offset: i64,
    content_type: Option<String>,
}

/// What a source tells a new fork.
#[derive(Serialize, Deserialize)]
struct ForkInfo {
    content_type: String,
    ttl_secs: Option<i64>,
    expires_at: Option<(String, i64)>,
    offset: i64,
    prefix: String,
}

#[derive(Serialize, Deserialize)]
struct ReleaseCall {
    child: String,
}

fn random() -> u32 {
    // A UUIDv7's low bits are random.
    (uuid::Uuid::now_v7().as_u128() & 0xffff_ffff) as u32
}

fn reply(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Result<Response> {
    let res = if body.is_empty() {
        Response::empty()?
    } else {
        Response::from_bytes(body)?
    };
    let hs = worker::Headers::new();
    for (k, v) in COMMON_HEADERS {
        hs.set(k, v)?;
    }
    for (k, v) in headers {
        hs.set(k, v)?;
    }
    Ok(res.with_status(status).with_headers(hs))
}

fn error_reply(e: &StreamError) -> Result<Response> {
    if e.status >= 500 {
        worker::console_error!("stream: {}", e.body.error.message);
    }
    let mut headers = e.headers.clone();
    headers.push(("content-type", "application/json".into()));
    let body = serde_json::to_vec(&e.body).unwrap_or_default();
    reply(e.status, &headers, body)
}

fn answer(r: std::result::Result<Response, StreamError>) -> Result<Response> {
    r.or_else(|e| error_reply(&e))
}

fn worker_err(e: worker::Error) -> StreamError {
    StreamError::internal(e)
}

impl DurableObject for StreamObject {
    fn new(state: State, env: Env) -> Self {
        let sql = DoSql::new(&state);
        Self {
            core: Rc::new(Core {
                state,
                env,
                sql,
                migrated: Cell::new(false),
                lock: Mutex::new(()),
                waiters: RefCell::new(Vec::new()),
                flushing: Cell::new(false),
            }),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let core = &self.core;
        let url = req.url()?;
        if let Some(op) = url.path().strip_prefix("/_internal/") {
            let op = op.to_owned();
            return answer(core.internal(&op, req).await);
        }
        answer(core.public(req, &url).await)
    }

    async fn alarm(&self) -> Result<Response> {
        let core = &self.core;
        {
            let _guard = core.lock.lock().await;
            if let Err(e) = core.current().await {
                worker::console_error!("stream alarm: {}", e.body.error.message);
            }
        }
        core.flush().await;
        core.schedule().await;
        Response::empty()
    }
}

impl Core {
    fn store(&self) -> std::result::Result<Store<'_, DoSql>, StreamError> {
        let sql = self.sql.as_ref().map_err(StreamError::internal)?;
        let store = Store(sql);
        if !self.migrated.get() {
            store.migrate()?;
            self.migrated.set(true);
        }
        Ok(store)
    }

    /// Loads the stream, ending it first if it has expired.
    async fn current(&self) -> std::result::Result<Current, StreamError> {
        let store = self.store()?;
        let Some(meta) = store.meta()? else {
            return Ok(Current::Missing);
        };
        if meta.soft_deleted() {
            return Ok(Current::Gone(meta));
        }
        if !meta.expired(now_ms()) {
            return Ok(Current::Live(meta));
        }
        if meta.forks > 0 {
            store.mark_soft_deleted()?;
            self.wake_all();
            return Ok(Current::Gone(store.meta()?.unwrap_or(meta)));
        }
        self.purge(&meta).await?;
        Ok(Current::Missing)
    }

    async fn live(&self) -> std::result::Result<Meta, StreamError> {
        match self.current().await? {
            Current::Live(m) => Ok(m),
            Current::Gone(_) => Err(StreamError::gone()),
            Current::Missing => Err(StreamError::not_found()),
        }
    }

    /// Deletes the stream for good and tells its source and org.
    async fn purge(&self, meta: &Meta) -> std::result::Result<(), StreamError> {
        self.store()?.purge(meta)?;
        self.wake_all();
        self.flush().await;
        Ok(())
    }

    fn wake_all(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    /// Waits until the stream changes or `ms` pass; answers whether it changed.
    async fn wait(&self, ms: u64) -> bool {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.waiters.borrow_mut();
            waiters.retain(|w| !w.is_canceled());
            waiters.push(tx);
        }
        let delay = Delay::from(Duration::from_millis(ms));
        matches!(select(rx, delay).await, Either::Left((Ok(()), _)))
    }

    /// Delivers the outbox, oldest first, stopping at the first failure (the alarm retries).
    async fn flush(&self) {
        if self.flushing.replace(true) {
            return;
        }
        let mut failed = false;
        if let Ok(store) = self.store() {
            for (id, notice) in store.outbox().unwrap_or_default() {
                match self.deliver(&notice).await {
                    Ok(()) => {
                        let _ = store.delivered(id);
                    }
                    Err(e) => {
                        worker::console_error!("stream notice {notice:?} failed: {e}");
                        failed = true;
                        break;
                    }
                }
            }
        }
        self.flushing.set(false);
        if failed {
            let _ = self.state.storage().set_alarm(RETRY_MS).await;
        }
    }

    async fn deliver(&self, notice: &Notice) -> std::result::Result<(), String> {
        match notice {
            Notice::Release { source, child } => self
                .call_stream(
                    source,
                    "release",
                    &ReleaseCall {
                        child: child.clone(),
                    },
                )
                .await
                .map(drop)
                .map_err(|e| e.body.error.message),
            Notice::Unregister {
                org_id,
                path,
                incarnation,
            } => self
                .org(
                    org_id,
                    "system",
                    OrgOp::UnregisterStream {
                        path: path.clone(),
                        incarnation: incarnation.clone(),
                    },
                )
                .await
                .map_err(|e| e.body.error.message),
        }
    }

    /// Sets the alarm for the next expiry or retry (or clears it).
    async fn schedule(&self) {
        let Ok(store) = self.store() else { return };
        let now = now_ms();
        let expiry = store.meta().ok().flatten().and_then(|m| {
            if m.soft_deleted() {
                None
            } else {
                m.expiry_ms()
            }
        });
        let retry = (!store.outbox().unwrap_or_default().is_empty()).then_some(now + RETRY_MS);
        let storage = self.state.storage();
        let result = match expiry.into_iter().chain(retry).min() {
            Some(at) => storage.set_alarm((at - now).max(1)).await,
            None => storage.delete_alarm().await,
        };
        if let Err(e) = result {
            worker::console_error!("stream alarm: {e}");
        }
    }

    async fn org(
        &self,
        org_id: &str,
        actor: &str,
        op: OrgOp,
    ) -> std::result::Result<(), StreamError> {
        let ns = self
            .env
            .durable_object("ORG_STORE")
            .map_err(|_| StreamError::internal("the ORG_STORE binding is missing"))?;
        let call = OrgCall {
            org_id: org_id.to_owned(),
            actor: actor.to_owned(),
            op,
        };
        match call_org(&ns, &call).await {
            Ok(_) => Ok(()),
            // The org's caps are 409 limit_exceeded there; stream limits answer 413.
            Err(CallError::Answered(409, body)) if body.error.code == "limit_exceeded" => {
                Err(StreamError::too_large(body.error.message))
            }
            Err(CallError::Answered(status, body)) => Err(StreamError {
                status,
                body,
                headers: Vec::new(),
            }),
            Err(CallError::Failed(e)) => Err(StreamError::internal(e)),
        }
    }

    /// Calls another stream object's internal operation; answers its body.
    async fn call_stream(
        &self,
        name: &str,
        op: &str,
        body: &impl Serialize,
    ) -> std::result::Result<Vec<u8>, StreamError> {
        let ns = self
            .env
            .durable_object("STREAMS")
            .map_err(|_| StreamError::internal("the STREAMS binding is missing"))?;
        let stub = ns
            .id_from_name(name)
            .and_then(|id| id.get_stub())
            .map_err(worker_err)?;
        let json = serde_json::to_string(body).map_err(StreamError::internal)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(JsValue::from_str(&json)));
        let req =
            Request::new_with_init(&format!("{INTERNAL_URL}{op}"), &init).map_err(worker_err)?;
        super::fetch_object(&stub, req).await.map_err(|e| match e {
            CallError::Answered(status, body) => StreamError {
                status,
                body,
                headers: Vec::new(),
            },
            CallError::Failed(e) => StreamError::internal(e),
        })
    }

    /// Appends ending in `(from, cap]`, up to about `max` bytes: first what a fork inherits
    /// from its source, then the stream's own.
    async fn read(
        &self,
        meta: &Meta,
        from: i64,
        cap: i64,
        max: usize,
    ) -> std::result::Result<Vec<Row>, StreamError> {
        let mut rows = Vec::new();
        let mut from = from;
        if let (Some(source), Some(fork_at)) = (&meta.fork_source, meta.fork_offset)
            && from < fork_at
        {
            let name = object_name(&meta.org_id, source);
            let call = ReadCall {
                from,
                cap: cap.min(fork_at),
                max,
            };
            rows = decode_rows(&self.call_stream(&name, "read", &call).await?)?;
            let got: usize = rows.iter().map(|r| r.data.len()).sum();
            if got >= max || cap <= fork_at {
                return Ok(rows);
            }
            from = fork_at;
        }
        let got: usize = rows.iter().map(|r| r.data.len()).sum();
        rows.extend(
            self.store()?
                .rows(meta, from, cap, max.saturating_sub(got).max(1))?,
        );
        Ok(rows)
    }

    // ---- calls from other stream objects ----

    async fn internal(
        &self,
        op: &str,
        mut req: Request,
    ) -> std::result::Result<Response, StreamError> {
        let body = req.bytes().await.map_err(worker_err)?;
        let bad = |e: serde_json::Error| StreamError::bad_request(e.to_string());
        match op {
            "read" => {
                let call: ReadCall = serde_json::from_slice(&body).map_err(bad)?;
                // A source serves its forks even once deleted or expired: they still need it.
                let Some(meta) = self.store()?.meta()? else {
                    return reply(200, &[], Vec::new()).map_err(worker_err);
                };
                let rows = self.read(&meta, call.from, call.cap, call.max).await?;
                reply(200, &[], encode_rows(&rows)).map_err(worker_err)
            }
            "fork" => {
                let call: ForkCall = serde_json::from_slice(&body).map_err(bad)?;
                let _guard = self.lock.lock().await;
                let meta = match self.current().await? {
                    Current::Live(m) => m,
                    Current::Gone(_) => {
                        return Err(StreamError::conflict(
                            "source_deleted",
                            "the source stream was deleted",
                        ));
                    }
                    Current::Missing => {
                        return Err(StreamError::new(
                            404,
                            "not_found",
                            "source stream not found",
                        ));
                    }
                };
                let at = store::check_fork_source(
                    &meta,
                    call.content_type.as_deref(),
                    call.offset.map(Offset),
                )?;
                let prefix = if call.sub_offset > 0 {
                    let first = self.read(&meta, at, meta.tail, 1).await?;
                    store::fork_prefix(first.first(), call.sub_offset, meta.json())?
                } else {
                    Vec::new()
                };
                self.store()?.add_fork(&call.child)?;
                let info = ForkInfo {
                    content_type: meta.content_type.clone(),
                    ttl_secs: meta.ttl_secs,
                    expires_at: meta.expires_at.clone().zip(meta.expires_ms),
                    offset: at,
                    prefix: B64.encode(prefix),
                };
                let json = serde_json::to_vec(&info).map_err(StreamError::internal)?;
                reply(200, &[], json).map_err(worker_err)
            }
            "release" => {
                let call: ReleaseCall = serde_json::from_slice(&body).map_err(bad)?;
                let _guard = self.lock.lock().await;
                let store = self.store()?;
                if store.remove_fork(&call.child)?.is_some()
                    && let Current::Gone(meta) = self.current().await?
                    && meta.forks == 0
                {
                    self.purge(&meta).await?;
                }
                reply(204, &[], Vec::new()).map_err(worker_err)
            }
            _ => Err(StreamError::not_found()),
        }
    }

    // ---- the public protocol ----

    async fn public(
        self: &Rc<Self>,
        mut req: Request,
        url: &worker::Url,
    ) -> std::result::Result<Response, StreamError> {
        let header = |name: &str| req.headers().get(name).ok().flatten();
        let target = Target {
            org_id: header(ORG_HEADER).ok_or_else(|| StreamError::internal("no org header"))?,
            path: header(PATH_HEADER).ok_or_else(|| StreamError::internal("no path header"))?,
            actor: header(ACTOR_HEADER).unwrap_or_else(|| "system".into()),
        };
        let headers = Headers::new(req.headers().entries());
        match req.method() {
            Method::Put => {
                let create = request::parse_create(&headers)?;
                let body = req.bytes().await.map_err(worker_err)?;
                self.create(&target, create, &body, url).await
            }
            Method::Post => {
                let append = request::parse_append(&headers)?;
                let body = req.bytes().await.map_err(worker_err)?;
                let meta = self.live().await?;
                let now = now_ms();
                let done = self.store()?.append(&meta, &append, &body, now)?;
                if done.changed {
                    self.wake_all();
                }
                reply(done.status, &done.headers, Vec::new()).map_err(worker_err)
            }
            Method::Get => {
                let read = request::parse_read(url.query().unwrap_or_default())?;
                self.get(&target, read, headers.get("if-none-match")).await
            }
            Method::Head => {
                let meta = self.live().await?;
                let mut hs = vec![
                    ("content-type", meta.content_type.clone()),
                    (h::NEXT_OFFSET, meta.tail().to_string()),
                    ("cache-control", "no-store".into()),
                    (
                        "etag",
                        format::etag(&target.public_path(), "-1", meta.tail(), meta.closed()),
                    ),
                ];
                if meta.closed() {
                    hs.push((h::CLOSED, "true".into()));
                }
                if let Some(ttl) = meta.ttl_secs {
                    hs.push((h::TTL, ttl.to_string()));
                }
                if let Some(at) = &meta.expires_at {
                    hs.push((h::EXPIRES_AT, at.clone()));
                }
                reply(200, &hs, Vec::new()).map_err(worker_err)
            }
            Method::Delete => {
                let _guard = self.lock.lock().await;
                let meta = self.live().await?;
                if meta.forks > 0 {
                    self.store()?.mark_soft_deleted()?;
                    self.wake_all();
                } else {
                    self.purge(&meta).await?;
                }
                self.schedule().await;
                reply(204, &[], Vec::new()).map_err(worker_err)
            }
            Method::Options => reply(204, &[], Vec::new()).map_err(worker_err),
            _ => Err(StreamError::new(
                405,
                "method_not_allowed",
                "use GET, HEAD, PUT, POST, DELETE or OPTIONS",
            )),
        }
    }

    async fn create(
        &self,
        target: &Target,
        req: CreateReq,
        body: &[u8],
        url: &worker::Url,
    ) -> std::result::Result<Response, StreamError> {
        let _guard = self.lock.lock().await;
        let created = |status: u16, meta: &Meta| {
            let mut hs = vec![
                ("content-type", meta.content_type.clone()),
                (h::NEXT_OFFSET, meta.tail().to_string()),
            ];
            if status == 201 {
                let mut location = url.clone();
                location.set_query(None);
                hs.push(("location", location.to_string()));
            }
            if meta.closed() {
                hs.push((h::CLOSED, "true".into()));
            }
            reply(status, &hs, Vec::new()).map_err(worker_err)
        };
        match self.current().await? {
            Current::Gone(_) => {
                return Err(StreamError::conflict(
                    "stream_deleted",
                    "this path's stream was deleted but forks still read it; \
                     it cannot be re-created until they are gone",
                ));
            }
            Current::Live(meta) => {
                return if same_config(&meta, &req) {
                    created(200, &meta)
                } else {
                    Err(StreamError::conflict(
                        "stream_exists",
                        "a stream exists here with a different configuration",
                    ))
                };
            }
            Current::Missing => {}
        }
        if req.fork.as_ref().is_some_and(|f| f.source == target.path) {
            return Err(StreamError::new(
                404,
                "not_found",
                "source stream not found",
            ));
        }
        let incarnation = crate::ids::new("inc");
        self.org(
            &target.org_id,
            &target.actor,
            OrgOp::RegisterStream {
                path: target.path.clone(),
                incarnation: incarnation.clone(),
            },
        )
        .await?;
        let store = self.store()?;
        let child = format!("{}:{}#{incarnation}", target.org_id, target.path);
        let unregister = Notice::Unregister {
            org_id: target.org_id.clone(),
            path: target.path.clone(),
            incarnation: incarnation.clone(),
        };
        // From here on, a failure must undo the registrations made so far.
        let fork = match &req.fork {
            None => None,
            Some(f) => {
                let source = object_name(&target.org_id, &f.source);
                let call = ForkCall {
                    child: child.clone(),
                    offset: f.offset.map(|o| o.0),
                    sub_offset: f.sub_offset,
                    content_type: req.content_type.clone(),
                };
                match self.call_stream(&source, "fork", &call).await {
                    Ok(bytes) => {
                        let info: ForkInfo =
                            serde_json::from_slice(&bytes).map_err(StreamError::internal)?;
                        Some((source, f, info))
                    }
                    Err(e) => {
                        store.notify(&unregister)?;
                        self.flush().await;
                        return Err(e);
                    }
                }
            }
        };
        let undo = |store: &Store<'_, DoSql>| -> std::result::Result<(), StreamError> {
            if let Some((source, _, _)) = &fork {
                store.notify(&Notice::Release {
                    source: source.clone(),
                    child: child.clone(),
                })?;
            }
            store.notify(&unregister)
        };
        let result = (|| {
            let content_type = req
                .content_type
                .clone()
                .or_else(|| fork.as_ref().map(|(_, _, i)| i.content_type.clone()))
                .unwrap_or_else(|| "application/octet-stream".into());
            // A fork keeps the source's lifetime unless it asks for its own.
            let (ttl_secs, expires_at) = match &fork {
                Some((_, _, info)) if req.ttl_secs.is_none() && req.expires_at.is_none() => {
                    match info.ttl_secs {
                        Some(t) => (Some(t), None),
                        None => (None, info.expires_at.clone()),
                    }
                }
                _ => (req.ttl_secs, req.expires_at.clone()),
            };
            let initial = if body.is_empty() {
                Vec::new()
            } else if crate::stream::is_json(&content_type) {
                store::encode_json(body, true)?
            } else {
                body.to_vec()
            };
            let new = NewStream {
                org_id: target.org_id.clone(),
                path: target.path.clone(),
                incarnation: incarnation.clone(),
                content_type,
                ttl_secs,
                expires_at,
                closed: req.closed,
                fork: match &fork {
                    Some((_, f, info)) => Some(NewFork {
                        source: f.source.clone(),
                        offset: info.offset,
                        sub_offset: f.sub_offset,
                        prefix: B64.decode(&info.prefix).map_err(StreamError::internal)?,
                    }),
                    None => None,
                },
            };
            store.create(&new, &initial, now_ms())
        })();
        match result {
            Ok(meta) => {
                self.schedule().await;
                created(201, &meta)
            }
            Err(e) => {
                undo(&store)?;
                self.flush().await;
                Err(e)
            }
        }
    }

    async fn get(
        self: &Rc<Self>,
        target: &Target,
        read: ReadReq,
        if_none_match: Option<&str>,
    ) -> std::result::Result<Response, StreamError> {
        let meta = self.live().await?;
        self.store()?.touch(&meta, now_ms())?;
        let from = match read.start {
            Start::Beginning => 0,
            Start::Now => meta.tail,
            Start::At(o) => o.0.min(meta.tail),
        };
        let base = |meta: &Meta| vec![("content-type", meta.content_type.clone())];
        match read.live {
            Live::Sse => Ok(self.sse(&meta, from, read.cursor)?),
            Live::No if read.start == Start::Now => {
                let mut hs = base(&meta);
                hs.push((h::NEXT_OFFSET, meta.tail().to_string()));
                hs.push((h::UP_TO_DATE, "true".into()));
                hs.push(("cache-control", "no-store".into()));
                if meta.closed() {
                    hs.push((h::CLOSED, "true".into()));
                }
                reply(200, &hs, format::body(meta.json(), &[])).map_err(worker_err)
            }
            Live::No => {
                let rows = self.read(&meta, from, meta.tail, READ_CHUNK).await?;
                let next = rows.last().map_or(meta.tail, |r| r.end);
                let up_to_date = next >= meta.tail;
                let closed = meta.closed() && up_to_date;
                let etag = format::etag(
                    &target.public_path(),
                    &read.raw_offset,
                    Offset(next),
                    closed,
                );
                if if_none_match == Some(etag.as_str()) {
                    return reply(304, &[("etag", etag)], Vec::new()).map_err(worker_err);
                }
                let mut hs = base(&meta);
                hs.push((h::NEXT_OFFSET, Offset(next).to_string()));
                hs.push(("etag", etag));
                if up_to_date {
                    hs.push((h::UP_TO_DATE, "true".into()));
                    hs.push(("cache-control", "no-store".into()));
                } else {
                    // A chunk that is not the tail never changes.
                    hs.push(("cache-control", "private, max-age=60".into()));
                }
                if closed {
                    hs.push((h::CLOSED, "true".into()));
                }
                reply(200, &hs, format::body(meta.json(), &rows)).map_err(worker_err)
            }
            Live::LongPoll => self.long_poll(meta, from, read.cursor.as_deref()).await,
        }
    }

    async fn long_poll(
        &self,
        mut meta: Meta,
        from: i64,
        client_cursor: Option<&str>,
    ) -> std::result::Result<Response, StreamError> {
        let deadline = now_ms() + LONG_POLL_MS as i64;
        loop {
            let rows = self.read(&meta, from, meta.tail, READ_CHUNK).await?;
            let cursor = format::cursor(now_ms(), client_cursor, random());
            if let Some(last) = rows.last() {
                let up_to_date = last.end >= meta.tail;
                let mut hs = vec![
                    ("content-type", meta.content_type.clone()),
                    (h::NEXT_OFFSET, Offset(last.end).to_string()),
                    (h::CURSOR, cursor),
                    ("cache-control", "no-store".into()),
                ];
                if up_to_date {
                    hs.push((h::UP_TO_DATE, "true".into()));
                    if meta.closed() {
                        hs.push((h::CLOSED, "true".into()));
                    }
                }
                return reply(200, &hs, format::body(meta.json(), &rows)).map_err(worker_err);
            }
            let now = now_ms();
            if meta.closed() || now >= deadline {
                let mut hs = vec![
                    (h::NEXT_OFFSET, Offset(from).to_string()),
                    (h::UP_TO_DATE, "true".into()),
                    (h::CURSOR, cursor),
                    ("cache-control", "no-store".into()),
                ];
                if meta.closed() {
                    hs.push((h::CLOSED, "true".into()));
                }
                return reply(204, &hs, Vec::new()).map_err(worker_err);
            }
            self.wait((deadline - now) as u64).await;
            meta = self.live().await?;
            self.store()?.touch(&meta, now_ms())?;
        }
    }

    fn sse(
        self: &Rc<Self>,
        meta: &Meta,
        from: i64,
        client_cursor: Option<String>,
    ) -> std::result::Result<Response, StreamError> {
        let mode = SseData::for_type(&meta.content_type);
        let sse = Sse {
            core: Rc::clone(self),
            offset: from,
            cursor: client_cursor,
            mode,
            deadline: now_ms() + SSE_CYCLE_MS as i64,
            done: false,
            controlled: false,
        };
        let stream = futures::stream::unfold(sse, |mut sse| async move {
            if sse.done {
                return None;
            }
            let chunk = sse.next().await;
            Some((Ok::<Vec<u8>, worker::Error>(chunk.into_bytes()), sse))
        });
        let mut hs = vec![
            ("content-type", "text/event-stream".to_owned()),
            ("cache-control", "no-cache".to_owned()),
        ];
        if mode == SseData::Base64 {
            hs.push((h::SSE_ENCODING, "base64".into()));
        }
        let headers = worker::Headers::new();
        for (k, v) in COMMON_HEADERS {
            headers.set(k, v).map_err(worker_err)?;
        }
        for (k, v) in &hs {
            headers.set(k, v).map_err(worker_err)?;
        }
        Ok(Response::from_stream(stream)
            .map_err(worker_err)?
            .with_headers(headers))
    }
}

/// An SSE answer in progress.
struct Sse {
    core: Rc<Core>,
    offset: i64,
    cursor: Option<String>,
    mode: SseData,
    deadline: i64,
    done: bool,
    /// A control event has been sent (the first one tells an idle reader where it stands).
    controlled: bool,
}

impl Sse {
    /// The next events to send; empty once the answer should end.
    async fn next(&mut self) -> String {
        let mut out = String::new();
        loop {
            let meta = match self.core.live().await {
                Ok(m) => m,
                Err(_) => {
                    self.done = true;
                    return out;
                }
            };
            let cursor = format::cursor(now_ms(), self.cursor.as_deref(), random());
            let rows = match self
                .core
                .read(&meta, self.offset, meta.tail, READ_CHUNK)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    worker::console_error!("sse read: {}", e.body.error.message);
                    self.done = true;
                    return out;
                }
            };
            if let Ok(store) = self.core.store() {
                let _ = store.touch(&meta, now_ms());
            }
            if !rows.is_empty() {
                for row in &rows {
                    // Every data event is followed by its control event.
                    format::sse_data(&mut out, self.mode, row);
                    self.offset = row.end;
                    let at_tail = row.end >= meta.tail;
                    let closed = at_tail && meta.closed();
                    format::sse_control(&mut out, Offset(row.end), &cursor, at_tail, closed);
                    self.done |= closed;
                }
                self.controlled = true;
                return out;
            }
            let closed = meta.closed() && self.offset >= meta.tail;
            if closed || !self.controlled {
                format::sse_control(&mut out, Offset(self.offset), &cursor, true, closed);
                self.controlled = true;
                self.done |= closed;
                return out;
            }
            let now = now_ms();
            if now >= self.deadline {
                self.done = true;
                return out;
            }
            let wait = (self.deadline - now).min(LONG_POLL_MS as i64) as u64;
            if !self.core.wait(wait).await {
                // Idle: a keep-alive control event.
                format::sse_control(&mut out, Offset(self.offset), &cursor, true, false);
                return out;
            }
        }
    }
}

fn same_config(meta: &Meta, req: &CreateReq) -> bool {
    let fork_matches = match (&req.fork, &meta.fork_source) {
        (None, None) => true,
        (Some(f), Some(source)) => {
            &f.source == source
                && f.offset.is_none_or(|o| Some(o.0) == meta.fork_offset)
                && f.sub_offset == meta.fork_sub_offset
        }
        _ => false,
    };
    // A fork that names no type or lifetime inherits them: asking again the same way matches.
    let inherits = req.fork.is_some();
    let type_matches = match &req.content_type {
        Some(ct) => crate::stream::essence(ct) == crate::stream::essence(&meta.content_type),
        None if inherits => true,
        None => crate::stream::essence(&meta.content_type) == "application/octet-stream",
    };
    let lifetime_matches = if inherits && req.ttl_secs.is_none() && req.expires_at.is_none() {
        true
    } else {
        req.ttl_secs == meta.ttl_secs
            && req.expires_at.as_ref().map(|(s, _)| s) == meta.expires_at.as_ref()
    };
    fork_matches && type_matches && lifetime_matches && req.closed == meta.closed()
}

/// Rows between objects: per row, its end offset (8 bytes) and length (4 bytes), big-endian,
/// then the bytes.
fn encode_rows(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.iter().map(|r| r.data.len() + 12).sum());
    for r in rows {
        out.extend_from_slice(&r.end.to_be_bytes());
        out.extend_from_slice(&(r.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&r.data);
    }
    out
}

fn decode_rows(mut bytes: &[u8]) -> std::result::Result<Vec<Row>, StreamError> {
    let corrupt = || StreamError::internal("a source object answered malformed rows");
    let mut rows = Vec::new();
    while !bytes.is_empty() {
        let (end, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_be_bytes(*len) as usize;
        let data = rest.get(..len).ok_or_else(corrupt)?;
        rows.push(Row {
            end: i64::from_be_bytes(*end),
            data: data.to_vec(),
        });
        bytes = rest.get(len..).ok_or_else(corrupt)?;
    }
    Ok(rows)
}
