//! `OrgStore`: one Durable Object per org, the single writer of its projects, statuses and tasks.

use super::do_sql::DoSql;
use crate::error::{ErrorBody, StoreError};
use crate::org::store::Store;
use crate::org::{OrgCall, OrgOp};
use crate::time::now_ms;
use std::cell::Cell;
use worker::{DurableObject, Env, Request, Response, Result, State, durable_object};

#[durable_object]
pub struct OrgStore {
    sql: std::result::Result<DoSql, crate::sql::SqlError>,
    /// The schema was checked (and migrated) by this instance; later calls skip the check.
    migrated: Cell<bool>,
}

fn error(status: u16, body: &ErrorBody) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

impl OrgStore {
    fn call(&self, sql: &DoSql, call: OrgCall) -> std::result::Result<Vec<u8>, StoreError> {
        let store = if self.migrated.get() {
            Store::migrated(sql)
        } else {
            let store = Store::open(sql)?;
            self.migrated.set(true);
            store
        };
        let destroys = matches!(call.op, OrgOp::Destroy);
        let answer = store.call(call, now_ms())?;
        if destroys {
            // The next call must find the tombstone.
            self.migrated.set(false);
        }
        Ok(answer)
    }
}

impl DurableObject for OrgStore {
    fn new(state: State, _env: Env) -> Self {
        Self {
            sql: DoSql::new(&state),
            migrated: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: OrgCall = match req.json().await {
            Ok(c) => c,
            Err(e) => {
                return error(
                    400,
                    &ErrorBody::new("bad_request", format!("not an org call: {e}")),
                );
            }
        };
        let sql = match &self.sql {
            Ok(sql) => sql,
            Err(e) => return error(500, &ErrorBody::new("internal", e.to_string())),
        };
        match self.call(sql, call) {
            Ok(json) => Response::from_bytes(json),
            Err(e) => {
                if let StoreError::Sql(cause) = &e {
                    worker::console_error!("org store: {cause}");
                }
                let (status, body) = e.to_response();
                error(status, &body)
            }
        }
    }
}
