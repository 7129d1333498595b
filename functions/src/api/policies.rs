//! `/v1/policies`: the org's guardrail policies, WebAssembly components every paired machine
//! of the org runs on its agents' events. Admins upload, change and delete them; members and
//! the org's machines (with their host tokens) read them, and a machine downloads the
//! binaries whose SHA-256 it does not have yet.
//!
//! The binary is checked here (base64, size, component preamble, the caller's hash) and hashed;
//! the org's object stores it with its settings and serves it back as base64 in JSON, which
//! the download turns into raw bytes again.

use super::{decode, org_answer, org_call, org_call_as};
use crate::auth::{Bearer, Principal, Role};
use crate::backend::Backend;
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::policy::{
    self, BinaryError, NewPolicy, PolicyList, PolicyMeta, PolicyWasm, PutAnswer, PutPolicy,
    UpdatePolicy, WasmQuery,
};

fn binary_error(e: BinaryError) -> ApiError {
    match e {
        BinaryError::TooLarge { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
        ),
        _ => ApiError::bad_request("not_a_component", e.to_string()),
    }
}

async fn read(app: &impl Backend, caller: &Bearer, op: OrgOp) -> Result<Vec<u8>, ApiError> {
    org_call_as(app, caller.org_id(), caller.actor(), op).await
}

/// The org's policies in the order machines run them (by `position`, then name).
#[utoipa::path(get, path = "/v1/policies", tag = "policies",
    responses((status = 200, body = PolicyList), (status = 401, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []), ("host_token" = [])))]
pub async fn list(app: &impl Backend, caller: &Bearer) -> Result<Response, ApiError> {
    Ok(h::json_bytes(
        StatusCode::OK,
        read(app, caller, OrgOp::ListPolicies).await?,
    ))
}

#[utoipa::path(get, path = "/v1/policies/{name}", tag = "policies", params(("name" = String, Path)),
    responses((status = 200, body = PolicyMeta), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []), ("host_token" = [])))]
pub async fn get(app: &impl Backend, caller: &Bearer, name: &str) -> Result<Response, ApiError> {
    let op = OrgOp::GetPolicy {
        name: name.to_owned(),
    };
    Ok(h::json_bytes(StatusCode::OK, read(app, caller, op).await?))
}

/// The policy's binary, as uploaded, with its SHA-256 in `x-tether-sha256`. With `sha256`, a
/// policy replaced since the caller read the list answers 409 `policy_changed` instead.
#[utoipa::path(get, path = "/v1/policies/{name}/wasm", tag = "policies",
    params(("name" = String, Path), WasmQuery),
    responses((status = 200, content_type = "application/wasm", body = Vec<u8>,
               headers(("x-tether-sha256" = String, description = "lowercase hex SHA-256 of the body"))),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "policy_changed: read the list again")),
    security(("api_key" = []), ("bearer" = []), ("host_token" = [])))]
pub async fn wasm(
    app: &impl Backend,
    caller: &Bearer,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let q: WasmQuery = h::query(req)?;
    let op = OrgOp::PolicyWasm {
        name: name.to_owned(),
        sha256: q.sha256,
    };
    let w: PolicyWasm = decode(&read(app, caller, op).await?)?;
    let bytes = STANDARD
        .decode(w.wasm_base64.as_bytes())
        .map_err(|e| ApiError::internal(&e))?;
    let sha256 = HeaderValue::from_str(&w.sha256).map_err(|e| ApiError::internal(&e))?;
    let mut res = h::bytes(StatusCode::OK, "application/wasm", bytes);
    res.headers_mut().insert(policy::SHA256_HEADER, sha256);
    Ok(res)
}

/// Uploads a policy (admin): 201 when the name is new, 200 when it replaces one. The binary
/// must be a WebAssembly component of at most 768 KiB.
#[utoipa::path(put, path = "/v1/policies/{name}", tag = "policies", params(("name" = String, Path)),
    request_body = PutPolicy,
    responses((status = 201, body = PolicyMeta), (status = 200, body = PolicyMeta, description = "replaced"),
              (status = 400, body = ErrorBody, description = "not_a_component, sha256_mismatch, malformed JSON"),
              (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "limit_exceeded: at most 32 policies"),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn put(
    app: &impl Backend,
    p: &Principal,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    if !policy::valid_name(name) {
        return Err(ApiError::invalid(
            "name",
            "1 to 63 of a-z, 0-9 and '-', starting with a letter or digit",
        ));
    }
    let input: PutPolicy = h::body_up_to(req, h::MAX_UPLOAD)?;
    let wasm = STANDARD
        .decode(input.wasm_base64.as_bytes())
        .map_err(|_| ApiError::invalid("wasm_base64", "is not standard base64"))?;
    policy::check_binary(&wasm).map_err(binary_error)?;
    let sha256 = format!("{:x}", Sha256::digest(&wasm));
    if let Some(claimed) = &input.sha256
        && !claimed.eq_ignore_ascii_case(&sha256)
    {
        return Err(ApiError::bad_request(
            "sha256_mismatch",
            format!(
                "the decoded binary's SHA-256 is {sha256}, not the `sha256` given: \
                 it did not arrive whole, or the hash is another file's"
            ),
        )
        .with_details(serde_json::json!({ "field": "sha256", "actual": sha256 })));
    }
    let op = OrgOp::PutPolicy(NewPolicy {
        name: name.to_owned(),
        wasm_base64: input.wasm_base64,
        sha256,
        config: input.config.unwrap_or_default(),
        failure: input.failure.unwrap_or_default(),
        position: input.position,
    });
    let answer: PutAnswer = org_answer(app, p, op).await?;
    let status = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(h::json(status, &answer.policy))
}

/// Changes a policy's config, failure mode or position (admin); the binary stays.
#[utoipa::path(patch, path = "/v1/policies/{name}", tag = "policies", params(("name" = String, Path)),
    request_body = UpdatePolicy,
    responses((status = 200, body = PolicyMeta), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    app: &impl Backend,
    p: &Principal,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let patch: UpdatePolicy = h::body(req)?;
    let op = OrgOp::UpdatePolicy {
        name: name.to_owned(),
        patch,
    };
    Ok(h::json_bytes(StatusCode::OK, org_call(app, p, op).await?))
}

/// Deletes a policy (admin); machines drop it when they next read the list.
#[utoipa::path(delete, path = "/v1/policies/{name}", tag = "policies", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(app: &impl Backend, p: &Principal, name: &str) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let op = OrgOp::DeletePolicy {
        name: name.to_owned(),
    };
    org_call(app, p, op).await?;
    Ok(h::no_content())
}
