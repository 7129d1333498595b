//! `OrgStore`: one Durable Object per org, the single writer of its projects, statuses and tasks.

use super::do_sql::DoSql;
use crate::error::ErrorBody;
use crate::org::OrgCall;
use crate::org::store::Store;
use crate::time::now_ms;
use worker::{DurableObject, Env, Request, Response, Result, State, durable_object};

#[durable_object]
pub struct OrgStore {
    sql: Result<DoSql, crate::sql::SqlError>,
}

fn error(status: u16, body: &ErrorBody) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

impl DurableObject for OrgStore {
    fn new(state: State, _env: Env) -> Self {
        Self {
            sql: DoSql::new(&state),
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
        match Store::open(sql).and_then(|s| s.call(call, now_ms())) {
            Ok(v) => Response::from_json(&v),
            Err(e) => {
                if let crate::error::StoreError::Sql(cause) = &e {
                    worker::console_error!("org store: {cause}");
                }
                let (status, body) = e.to_response();
                error(status, &body)
            }
        }
    }
}
