//! Guardrail decisions: each machine reports what its policies decided (its host token, its
//! own id only), and members read them back, newest first.
//!
//! A machine numbers its decisions itself (`seq`) and reports them until the edge answers;
//! the org's object records each `(host, seq)` once, so a report retried after a lost answer
//! counts nothing twice. The object keeps the newest 100 000 per org.

use super::sessions::own_host;
use super::{org_call, org_call_as};
use crate::auth::{HostPrincipal, Principal};
use crate::backend::Backend;
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::policy::{Accepted, DecisionBatch, DecisionPage, DecisionQuery};

/// The host reports its policies' decisions (host token): 1 to 500 per call. `accepted` counts
/// the ones recorded now; repeats of recorded ones are ignored.
#[utoipa::path(post, path = "/v1/hosts/{id}/policy-decisions", tag = "policy-decisions",
    params(("id" = String, Path)), request_body = DecisionBatch,
    responses((status = 200, body = Accepted), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "the token is another host's"),
              (status = 422, body = ErrorBody)),
    security(("host_token" = [])))]
pub async fn report(
    app: &impl Backend,
    host: &HostPrincipal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    own_host(host, id)?;
    let batch: DecisionBatch = h::body(req)?;
    let op = OrgOp::RecordDecisions {
        host_id: host.host_id.clone(),
        decisions: batch.decisions,
    };
    let body = org_call_as(app, &host.org_id, &host.host_id, op).await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

/// The org's recorded decisions, newest first (by the machine's time), filtered and paged.
#[utoipa::path(get, path = "/v1/policy-decisions", tag = "policy-decisions", params(DecisionQuery),
    responses((status = 200, body = DecisionPage), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(app: &impl Backend, p: &Principal, req: &Request) -> Result<Response, ApiError> {
    let q: DecisionQuery = h::query(req)?;
    Ok(h::json_bytes(
        StatusCode::OK,
        org_call(app, p, OrgOp::ListDecisions(q)).await?,
    ))
}
