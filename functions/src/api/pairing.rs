//! `/v1/pairing`: a machine asks to join (no credential: it has none yet), a member approves
//! its code, the machine polls for the answer with the token only it was given.

use crate::auth::Principal;
use crate::auth::host::{CODE_LEN, normalize_code};
use crate::backend::Backend;
use crate::directory::hosts::{self, CreatePairing, Host, Pairing, PairingStatus};
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use tether_durable::error::ErrorBody;
use tether_durable::time::now_ms;

/// A code from a path, in its stored form; 400 when it cannot be a code.
fn code(raw: &str) -> Result<String, ApiError> {
    normalize_code(raw).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_code",
            format!(
                "a pairing code is {CODE_LEN} letters and digits like ABCD-EFGH (no 0, O, 1, I or L)"
            ),
        )
    })
}

/// Starts pairing a machine. The daemon shows the code to its user, who has a member approve
/// it within 10 minutes; meanwhile the daemon polls with the token.
#[utoipa::path(post, path = "/v1/pairing", tag = "hosts", request_body = CreatePairing,
    responses((status = 201, body = Pairing),
              (status = 409, body = ErrorBody, description = "the key belongs to a paired host"),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "too many pending codes; retry later")))]
pub async fn create(app: &impl Backend, req: &Request) -> Result<Response, ApiError> {
    let input: CreatePairing = h::body(req)?;
    Ok(h::json(
        StatusCode::CREATED,
        &hosts::create_pairing(app.db(), input, now_ms()).await?,
    ))
}

/// The daemon's poll, authenticated by the poll token from `POST /v1/pairing`. Unknown and
/// expired codes and wrong tokens are all 404.
#[utoipa::path(get, path = "/v1/pairing/{code}", tag = "hosts", params(("code" = String, Path)),
    responses((status = 200, body = PairingStatus), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody)),
    security(("poll_token" = [])))]
pub async fn status(app: &impl Backend, req: &Request, raw: &str) -> Result<Response, ApiError> {
    let code = code(raw)?;
    let token = h::credential(req).ok_or_else(|| {
        ApiError::unauthorized("send `Authorization: Bearer <poll_token from POST /v1/pairing>`")
    })?;
    Ok(h::json(
        StatusCode::OK,
        &hosts::pairing_status(app.db(), &code, token, now_ms()).await?,
    ))
}

/// Approves a pairing code: the machine becomes a host of the caller's org. Unknown, expired
/// and used codes are 404 and count against the key: after 10 in 10 minutes, 429.
#[utoipa::path(post, path = "/v1/pairing/{code}/approve", tag = "hosts",
    params(("code" = String, Path)),
    responses((status = 201, body = Host), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "host cap reached, or the key belongs to a paired host"),
              (status = 429, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn approve(app: &impl Backend, p: &Principal, raw: &str) -> Result<Response, ApiError> {
    let code = code(raw)?;
    let host = hosts::approve_pairing(app.db(), p, &code, now_ms()).await?;
    super::hosts::mirror(app, &host.org_id, &host.id).await;
    Ok(h::json(StatusCode::CREATED, &host))
}
