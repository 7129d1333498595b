//! `OrgStore`: one Durable Object per org, the single writer of its projects, statuses, tasks,
//! sessions and automations, and the server of its change log as shapes.
//!
//! Two paths: [`super::ORG_CALL_URL`] carries one [`OrgCall`] (a synchronous transaction);
//! [`super::ORG_SHAPE_URL`] one [`ShapeRead`]. A live shape read that finds nothing new waits
//! here, outside any transaction, until a call appends to the log (the call wakes every
//! waiter once it has committed) or [`LIVE_TIMEOUT_MS`] pass.

use super::SHAPE_META_HEADER;
use super::do_sql::DoSql;
use crate::error::{ErrorBody, StoreError};
use crate::org::store::Store;
use crate::org::{OrgCall, OrgOp};
use crate::sync::{LIVE_TIMEOUT_MS, ShapeChunk, ShapeRead, ShapeStep};
use crate::time::now_ms;
use futures::channel::oneshot;
use futures::future::{Either, select};
use std::cell::{Cell, RefCell};
use std::time::Duration;
use worker::{Delay, DurableObject, Env, Request, Response, Result, State, durable_object};

#[durable_object]
pub struct OrgStore {
    sql: std::result::Result<DoSql, crate::sql::SqlError>,
    /// The schema was checked (and migrated) by this instance; later calls skip the check.
    migrated: Cell<bool>,
    /// Live shape reads waiting for the log to grow.
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// The log's tail when the waiters last looked.
    seen_tail: Cell<i64>,
}

fn error(status: u16, body: &ErrorBody) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

fn store_error(e: &StoreError) -> Result<Response> {
    if let StoreError::Sql(cause) = e {
        worker::console_error!("org store: {cause}");
    }
    let (status, body) = e.to_response();
    error(status, &body)
}

impl OrgStore {
    fn store<'a>(&self, sql: &'a DoSql) -> std::result::Result<Store<'a, DoSql>, StoreError> {
        if self.migrated.get() {
            return Ok(Store::migrated(sql));
        }
        let store = Store::open(sql)?;
        self.migrated.set(true);
        Ok(store)
    }

    fn call(&self, sql: &DoSql, call: OrgCall) -> std::result::Result<Vec<u8>, StoreError> {
        let store = self.store(sql)?;
        let destroys = matches!(call.op, OrgOp::Destroy);
        let answer = store.call(call, now_ms())?;
        if destroys {
            // The next call must find the tombstone.
            self.migrated.set(false);
        }
        self.wake_if_appended(sql);
        Ok(answer)
    }

    /// Wakes the waiting readers when the log has grown since they looked (or cannot be read:
    /// the org was deleted, and they must find out).
    fn wake_if_appended(&self, sql: &DoSql) {
        if self.waiters.borrow().is_empty() {
            return;
        }
        let tail = Store::migrated(sql).log_tail().ok();
        if tail == Some(self.seen_tail.get()) {
            return;
        }
        if let Some(t) = tail {
            self.seen_tail.set(t);
        }
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    /// Reads the shape; a live read with nothing new waits for the log to grow, at most
    /// [`LIVE_TIMEOUT_MS`], then answers up-to-date at the tail.
    async fn shape(
        &self,
        sql: &DoSql,
        read: &ShapeRead,
    ) -> std::result::Result<ShapeChunk, StoreError> {
        let deadline = now_ms() + LIVE_TIMEOUT_MS;
        loop {
            let store = self.store(sql)?;
            let step = store.shape(read, now_ms())?;
            // A read of sessions may have failed overdue ones: other readers should see it.
            self.wake_if_appended(sql);
            let idle = match step {
                ShapeStep::Ready(chunk) => return Ok(chunk),
                ShapeStep::Idle(chunk) => chunk,
            };
            let left = deadline - now_ms();
            if left <= 0 {
                return Ok(idle);
            }
            // Registered before the first await: no write can slip in between the read above
            // and the wait (the object runs one piece of synchronous code at a time).
            self.seen_tail.set(store.log_tail()?);
            let (tx, rx) = oneshot::channel();
            {
                let mut waiters = self.waiters.borrow_mut();
                waiters.retain(|w| !w.is_canceled());
                waiters.push(tx);
            }
            let delay = Delay::from(Duration::from_millis(left.unsigned_abs()));
            if !matches!(select(rx, delay).await, Either::Left((Ok(()), _))) {
                return Ok(idle);
            }
        }
    }
}

impl DurableObject for OrgStore {
    fn new(state: State, _env: Env) -> Self {
        Self {
            sql: DoSql::new(&state),
            migrated: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
            seen_tail: Cell::new(0),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let is_shape = req.path() == "/shape";
        let body = req.bytes().await?;
        let sql = match &self.sql {
            Ok(sql) => sql,
            Err(e) => return error(500, &ErrorBody::new("internal", e.to_string())),
        };
        if is_shape {
            let read: ShapeRead = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        400,
                        &ErrorBody::new("bad_request", format!("not a shape read: {e}")),
                    );
                }
            };
            return match self.shape(sql, &read).await {
                Ok(chunk) => {
                    let headers = worker::Headers::new();
                    headers.set(SHAPE_META_HEADER, &serde_json::to_string(&chunk.meta)?)?;
                    Ok(Response::from_bytes(chunk.body)?.with_headers(headers))
                }
                Err(e) => store_error(&e),
            };
        }
        let call: OrgCall = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => {
                return error(
                    400,
                    &ErrorBody::new("bad_request", format!("not an org call: {e}")),
                );
            }
        };
        match self.call(sql, call) {
            Ok(json) => Response::from_bytes(json),
            Err(e) => store_error(&e),
        }
    }
}
