//! `HostObject`: one Durable Object per paired machine, holding its tunnel (one WebSocket,
//! accepted with the hibernation API so an idle host costs nothing) and everything addressed to
//! it while it is away.
//!
//! The Worker authenticates (a host token for the tunnel, a member for the rest) and calls
//! these internal routes, naming the host and org in [`HOST_HEADER`] / [`super::ORG_HEADER`]:
//!
//! - `GET /connect` (WebSocket upgrade): replaces any older connection (closed with
//!   `Replaced`), marks the host online and sends every queued command in order.
//! - `POST /rpc` `{method, body, deadline_ms}`: a request through the tunnel, answered by the
//!   daemon; 503 with the reason when the host is offline, 504 past the deadline, 429 when too
//!   many are pending.
//! - `POST /command` `{id, kind, body}`: persisted, sent now if the host is online, otherwise on
//!   reconnect; it stays queued until the daemon acks it.
//! - `POST /speedtest` `{bytes}`: the daemon sends that many bytes through one byte channel,
//!   under credit flow control; answers the throughput.
//! - `GET /status`, `POST /revoke` (closes the tunnel with `Forbidden`; later connects get 403).
//!
//! Liveness: the alarm pings every 10 s while a tunnel is open and closes it as `Stale` after
//! 25 s of silence (a half-open socket), waking at that moment rather than at the next ping;
//! the daemon runs the same clock on its side.

use super::do_sql::DoSql;
use crate::error::ErrorBody;
use crate::host::{HostStore, MAX_DEADLINE_MS, MAX_PENDING_RPCS, QueueError, SPEEDTEST_MAX_BYTES};
use crate::sql::SqlError;
use crate::time::now_ms;
use crate::tunnel::flow::RecvWindow;
use crate::tunnel::liveness::{DEAD_AFTER_MS, PING_EVERY_MS};
use crate::tunnel::pending::Pending;
use crate::tunnel::{self, CloseCode, Frame, RpcError, RpcErrorCode, RpcResult, SUBPROTOCOL};
use futures::channel::oneshot;
use futures::future::{Either, select};
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;
use worker::{
    Delay, DurableObject, Env, Method, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair, durable_object,
};

/// The host's id (set by the Worker).
pub const HOST_HEADER: &str = "x-tether-host";
/// `WebSocket.readyState` of an open socket.
const OPEN: u16 = 1;
/// Credit a channel reader grants (and re-grants as it consumes).
const CHANNEL_WINDOW: u32 = 1024 * 1024;
/// Most byte channels open to one host.
const MAX_SINKS: usize = 16;

#[durable_object]
pub struct HostObject {
    state: State,
    sql: std::result::Result<DoSql, SqlError>,
    opened: Cell<bool>,
    /// RPCs waiting for the daemon's answer (in memory: a waiting request keeps the object
    /// awake, so they never outlive it).
    pending: RefCell<Pending<oneshot::Sender<RpcResult>>>,
    /// Byte channels this object opened and reads (the edge opens even ids).
    sinks: RefCell<BTreeMap<u32, Sink>>,
    next_channel: Cell<u32>,
    /// The daemon announced it is going away (in-band drain): no new requests until it is back.
    draining: Cell<bool>,
}

/// The reading end of a byte channel: counts what arrives within the credit it granted and
/// grants more as it consumes.
struct Sink {
    window: RecvWindow,
    received: u64,
    done: Option<oneshot::Sender<std::result::Result<u64, String>>>,
}

#[derive(Deserialize)]
struct SpeedtestCall {
    bytes: u64,
}

#[derive(Deserialize)]
struct RpcCall {
    method: String,
    #[serde(default)]
    body: serde_json::Value,
    deadline_ms: Option<u32>,
}

#[derive(Deserialize)]
struct CommandCall {
    id: String,
    kind: String,
    #[serde(default)]
    body: serde_json::Value,
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Result<Response> {
    Ok(Response::from_json(&ErrorBody::new(code, message))?.with_status(status))
}

fn send(ws: &WebSocket, frame: &Frame) -> Result<()> {
    let bytes = tunnel::encode(frame).map_err(|e| worker::Error::RustError(e.to_string()))?;
    ws.send_with_bytes(bytes)
}

impl HostObject {
    fn store(&self) -> std::result::Result<HostStore<'_, DoSql>, SqlError> {
        self.sql
            .as_ref()
            .map(HostStore)
            .map_err(|e| SqlError::new(e.message.clone()))
    }

    /// Opens the store, creating the host's row on first use.
    fn open(&self, req: &Request) -> Result<HostStore<'_, DoSql>> {
        let store = self
            .store()
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        if !self.opened.get() {
            let header = |n: &str| req.headers().get(n).ok().flatten().unwrap_or_default();
            store
                .open(&header(HOST_HEADER), &header(super::ORG_HEADER))
                .map_err(|e| worker::Error::RustError(e.to_string()))?;
            self.opened.set(true);
        }
        Ok(store)
    }

    /// The open tunnel, if any (the newest, should there briefly be two). A socket this object
    /// has closed stays listed until the peer answers the close, which a half-open one never
    /// does, so only sockets still `OPEN` count.
    fn socket(&self) -> Option<WebSocket> {
        self.state
            .get_websockets()
            .into_iter()
            .filter(|ws| AsRef::<worker::web_sys::WebSocket>::as_ref(ws).ready_state() == OPEN)
            .last()
    }

    /// The store says online but no tunnel is open: the sockets went with the edge's restart
    /// (no close event reaches the new instance), so record the host offline.
    fn check_tunnel(&self, store: &HostStore<'_, DoSql>) {
        if self.socket().is_none() {
            let _ = store.tunnel_lost();
        }
    }

    fn touch(&self) {
        if let Ok(store) = self.store() {
            let _ = store.seen(now_ms());
        }
    }

    async fn accept_tunnel(&self, store: HostStore<'_, DoSql>) -> Result<Response> {
        if store.revoked().unwrap_or(false) {
            return error(403, "forbidden", "this host was revoked");
        }
        self.draining.set(false);
        for old in self.state.get_websockets() {
            let _ = old.close(
                Some(CloseCode::Replaced.code()),
                Some("replaced by a newer connection"),
            );
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        let now = now_ms();
        let conn = crate::ids::new("conn");
        pair.server.serialize_attachment(&conn)?;
        store
            .connected(&conn, now)
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        for c in store
            .queued()
            .map_err(|e| worker::Error::RustError(e.to_string()))?
        {
            send(
                &pair.server,
                &Frame::Command {
                    id: c.id,
                    seq: c.seq as u64,
                    kind: c.kind,
                    body: c.body,
                },
            )?;
        }
        self.state.storage().set_alarm(PING_EVERY_MS).await?;
        let headers = worker::Headers::new();
        headers.set("sec-websocket-protocol", SUBPROTOCOL)?;
        Ok(Response::from_websocket(pair.client)?.with_headers(headers))
    }

    async fn rpc(&self, call: RpcCall) -> Result<Response> {
        if self.draining.get() {
            return error(503, "host_draining", "the host's daemon is shutting down");
        }
        let Some(ws) = self.socket() else {
            let reason = self.store().ok().and_then(|s| {
                self.check_tunnel(&s);
                s.status().ok()
            });
            let reason = reason.map(|s| s.reason);
            return error(
                503,
                "host_offline",
                format!("the host is offline: {}", reason.unwrap_or_default()),
            );
        };
        let deadline_ms = call.deadline_ms.unwrap_or(10_000).clamp(1, MAX_DEADLINE_MS);
        let (tx, rx) = oneshot::channel();
        let id = match self
            .pending
            .borrow_mut()
            .insert(now_ms() + i64::from(deadline_ms), tx)
        {
            Ok(id) => id,
            Err(full) => return error(429, "overloaded", full.to_string()),
        };
        let frame = Frame::Request {
            id,
            method: call.method,
            deadline_ms,
            body: serde_json::to_vec(&call.body)?,
        };
        if let Err(e) = send(&ws, &frame) {
            self.pending.borrow_mut().take(id);
            return error(503, "host_offline", format!("the tunnel failed: {e}"));
        }
        let delay = Delay::from(Duration::from_millis(u64::from(deadline_ms)));
        match select(rx, delay).await {
            Either::Left((Ok(RpcResult::Ok(body)), _)) => {
                Ok(Response::from_bytes(body)?.with_headers(json_headers()?))
            }
            Either::Left((Ok(RpcResult::Err(e)), _)) => {
                let status = match e.code {
                    RpcErrorCode::NotFound => 404,
                    RpcErrorCode::BadRequest => 400,
                    RpcErrorCode::DeadlineExceeded => 504,
                    RpcErrorCode::Overloaded => 429,
                    RpcErrorCode::Internal => 502,
                    RpcErrorCode::Draining => 503,
                    RpcErrorCode::Conflict => 409,
                };
                error(status, "host_error", e.message)
            }
            Either::Left((Err(_), _)) => error(503, "host_offline", "the tunnel closed"),
            Either::Right(_) => {
                self.pending.borrow_mut().take(id);
                let _ = send(&ws, &Frame::Cancel { id });
                error(
                    504,
                    "deadline_exceeded",
                    format!("the host did not answer within {deadline_ms} ms"),
                )
            }
        }
    }

    /// Has the daemon send `bytes` through one byte channel under credit flow control, and
    /// measures it: `{bytes, elapsed_ms, mb_per_s}`.
    async fn speedtest(&self, bytes: u64) -> Result<Response> {
        if bytes == 0 || bytes > SPEEDTEST_MAX_BYTES {
            return error(
                422,
                "validation_failed",
                format!("bytes: 1 to {SPEEDTEST_MAX_BYTES}"),
            );
        }
        let Some(ws) = self.socket() else {
            return error(503, "host_offline", "the host is offline");
        };
        if self.sinks.borrow().len() >= MAX_SINKS {
            return error(429, "overloaded", "too many channels are open to this host");
        }
        let channel = self.next_channel.get() + 2;
        self.next_channel.set(channel);
        let (tx, rx) = oneshot::channel();
        self.sinks.borrow_mut().insert(
            channel,
            Sink {
                window: RecvWindow::new(CHANNEL_WINDOW),
                received: 0,
                done: Some(tx),
            },
        );
        let started = now_ms();
        let open = Frame::Open {
            channel,
            kind: "source".into(),
            meta: serde_json::to_vec(&serde_json::json!({ "bytes": bytes }))?,
            window: CHANNEL_WINDOW,
        };
        if let Err(e) = send(&ws, &open) {
            self.sinks.borrow_mut().remove(&channel);
            return error(503, "host_offline", format!("the tunnel failed: {e}"));
        }
        let outcome = select(
            rx,
            Delay::from(Duration::from_millis(u64::from(MAX_DEADLINE_MS))),
        )
        .await;
        self.sinks.borrow_mut().remove(&channel);
        match outcome {
            Either::Left((Ok(Ok(received)), _)) if received == bytes => {
                let elapsed_ms = (now_ms() - started).max(1);
                Response::from_json(&serde_json::json!({
                    "bytes": received,
                    "elapsed_ms": elapsed_ms,
                    "mb_per_s": received as f64 / 1e6 / (elapsed_ms as f64 / 1e3),
                }))
            }
            Either::Left((Ok(Ok(received)), _)) => error(
                502,
                "host_error",
                format!("the host sent {received} of {bytes} bytes"),
            ),
            Either::Left((Ok(Err(e)), _)) => error(502, "host_error", e),
            Either::Left((Err(_), _)) => error(503, "host_offline", "the tunnel closed"),
            Either::Right(_) => {
                let _ = send(
                    &ws,
                    &Frame::Close {
                        channel,
                        error: Some("deadline".into()),
                    },
                );
                error(
                    504,
                    "deadline_exceeded",
                    "the transfer did not finish in time",
                )
            }
        }
    }

    /// Data on a channel this object reads: checked against the credit, counted, and credit
    /// given back.
    fn sink_data(&self, ws: &WebSocket, channel: u32, len: usize) -> Result<()> {
        let mut sinks = self.sinks.borrow_mut();
        let Some(sink) = sinks.get_mut(&channel) else {
            return Ok(());
        };
        if let Err(e) = sink.window.received(len) {
            if let Some(done) = sink.done.take() {
                let _ = done.send(Err(e.to_string()));
            }
            return send(
                ws,
                &Frame::Close {
                    channel,
                    error: Some(e.to_string()),
                },
            );
        }
        sink.received += len as u64;
        match sink.window.consumed(len) {
            Some(bytes) => send(ws, &Frame::Credit { channel, bytes }),
            None => Ok(()),
        }
    }

    /// Tells every waiting caller the tunnel is gone.
    fn fail_pending(&self) {
        for (_, mut sink) in std::mem::take(&mut *self.sinks.borrow_mut()) {
            if let Some(done) = sink.done.take() {
                let _ = done.send(Err("the tunnel closed".into()));
            }
        }
        for (_, tx) in self.pending.borrow_mut().drain() {
            let _ = tx.send(RpcResult::Err(RpcError {
                code: RpcErrorCode::Draining,
                message: "the tunnel closed".into(),
            }));
        }
    }

    fn handle(&self, ws: &WebSocket, frame: Frame) -> Result<()> {
        match frame {
            Frame::Ping { nonce } => {
                self.touch();
                send(ws, &Frame::Pong { nonce })
            }
            Frame::Pong { .. } => {
                self.touch();
                Ok(())
            }
            Frame::Response { id, result } => {
                if let Some(tx) = self.pending.borrow_mut().take(id) {
                    let _ = tx.send(result);
                }
                Ok(())
            }
            Frame::Ack { id } => {
                if let Ok(store) = self.store() {
                    let _ = store.ack(&id);
                }
                Ok(())
            }
            Frame::Request { id, method, .. } => {
                let result = match method.as_str() {
                    "edge.ping" => RpcResult::Ok(b"{}".to_vec()),
                    _ => RpcResult::Err(RpcError {
                        code: RpcErrorCode::NotFound,
                        message: format!("the edge has no method {method}"),
                    }),
                };
                send(ws, &Frame::Response { id, result })
            }
            Frame::Open { channel, .. } => send(
                ws,
                &Frame::Close {
                    channel,
                    error: Some("the edge opens no channels from hosts".into()),
                },
            ),
            Frame::Data { channel, bytes } => self.sink_data(ws, channel, bytes.len()),
            Frame::Close { channel, error } => {
                if let Some(mut sink) = self.sinks.borrow_mut().remove(&channel)
                    && let Some(done) = sink.done.take()
                {
                    let _ = done.send(error.map_or(Ok(sink.received), Err));
                }
                Ok(())
            }
            // No new requests; the daemon's close that follows carries the reason.
            Frame::Drain { .. } => {
                self.draining.set(true);
                Ok(())
            }
            Frame::Cancel { .. } | Frame::Credit { .. } | Frame::Command { .. } => Ok(()),
        }
    }
}

fn json_headers() -> Result<worker::Headers> {
    let h = worker::Headers::new();
    h.set("content-type", "application/json")?;
    Ok(h)
}

impl DurableObject for HostObject {
    fn new(state: State, _env: Env) -> Self {
        let sql = DoSql::new(&state);
        Self {
            state,
            sql,
            opened: Cell::new(false),
            pending: RefCell::new(Pending::new(MAX_PENDING_RPCS)),
            sinks: RefCell::new(BTreeMap::new()),
            next_channel: Cell::new(0),
            draining: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let store = match self.open(&req) {
            Ok(s) => s,
            Err(e) => return error(500, "internal", e.to_string()),
        };
        let path = req.path();
        match (req.method(), path.as_str()) {
            (Method::Get, "/connect") => self.accept_tunnel(store).await,
            (Method::Post, "/rpc") => match req.json::<RpcCall>().await {
                Ok(call) => self.rpc(call).await,
                Err(e) => error(400, "bad_request", e.to_string()),
            },
            (Method::Post, "/command") => {
                let call = match req.json::<CommandCall>().await {
                    Ok(c) => c,
                    Err(e) => return error(400, "bad_request", e.to_string()),
                };
                let body = serde_json::to_vec(&call.body)?;
                match store.enqueue(&call.id, &call.kind, &body, now_ms()) {
                    Ok(c) => {
                        if let Some(ws) = self.socket() {
                            let _ = send(
                                &ws,
                                &Frame::Command {
                                    id: c.id.clone(),
                                    seq: c.seq as u64,
                                    kind: c.kind,
                                    body: c.body,
                                },
                            );
                        }
                        Ok(
                            Response::from_json(&serde_json::json!({"id": c.id, "seq": c.seq}))?
                                .with_status(202),
                        )
                    }
                    Err(QueueError::Full) => error(429, "queue_full", QueueError::Full.to_string()),
                    Err(QueueError::TooLarge) => {
                        error(413, "payload_too_large", QueueError::TooLarge.to_string())
                    }
                    Err(e) => error(500, "internal", e.to_string()),
                }
            }
            (Method::Post, "/speedtest") => match req.json::<SpeedtestCall>().await {
                Ok(call) => self.speedtest(call.bytes).await,
                Err(e) => error(400, "bad_request", e.to_string()),
            },
            (Method::Get, "/status") => {
                self.check_tunnel(&store);
                match store.status() {
                    Ok(s) => Response::from_json(&s),
                    Err(e) => error(500, "internal", e.to_string()),
                }
            }
            (Method::Post, "/revoke") => {
                if let Err(e) = store.revoke(now_ms()) {
                    return error(500, "internal", e.to_string());
                }
                for ws in self.state.get_websockets() {
                    let _ = ws.close(
                        Some(CloseCode::Forbidden.code()),
                        Some("this host was revoked"),
                    );
                }
                self.fail_pending();
                Ok(Response::empty()?.with_status(204))
            }
            _ => error(404, "not_found", "no such host route"),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let WebSocketIncomingMessage::Binary(bytes) = message else {
            return ws.close(
                Some(CloseCode::BadFrame.code()),
                Some("the tunnel speaks binary frames"),
            );
        };
        match tunnel::decode(&bytes) {
            Ok(frame) => self.handle(&ws, frame),
            Err(e) => ws.close(Some(CloseCode::BadFrame.code()), Some(e.to_string())),
        }
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        _clean: bool,
    ) -> Result<()> {
        let _ = ws.close(Some(CloseCode::Normal.code()), Some("closed"));
        let conn: Option<String> = ws.deserialize_attachment().ok().flatten();
        let why = if reason.is_empty() {
            format!("disconnected (code {code})")
        } else {
            format!("disconnected: {reason}")
        };
        if let (Some(conn), Ok(store)) = (conn, self.store())
            && store.disconnected(&conn, &why, now_ms()).unwrap_or(false)
        {
            self.fail_pending();
        }
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        DurableObject::websocket_close(self, ws, 1011, error.to_string(), false).await
    }

    async fn alarm(&self) -> Result<Response> {
        let Ok(store) = self.store() else {
            return Response::empty();
        };
        let Some(ws) = self.socket() else {
            self.check_tunnel(&store);
            return Response::empty();
        };
        let now = now_ms();
        let last_seen = store.last_seen_ms().ok().flatten().unwrap_or(0);
        if now - last_seen >= DEAD_AFTER_MS {
            let conn: Option<String> = ws.deserialize_attachment().ok().flatten();
            let _ = ws.close(Some(CloseCode::Stale.code()), Some("no heartbeat"));
            self.fail_pending();
            if let Some(conn) = conn {
                let _ = store.disconnected(&conn, "heartbeat timeout", now);
            }
            return Response::empty();
        }
        let _ = send(&ws, &Frame::Ping { nonce: now as u64 });
        // The next ping, or sooner the moment the silence would become fatal: a half-open socket
        // is noticed DEAD_AFTER_MS after the last heartbeat, not up to a ping period later.
        let next = PING_EVERY_MS.min(last_seen + DEAD_AFTER_MS - now);
        self.state.storage().set_alarm(next).await?;
        Response::empty()
    }
}
