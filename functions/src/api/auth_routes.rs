//! Bootstrap, token exchange and "who am I".

use super::key_principal;
use crate::auth::{self, Credential, Principal, Role};
use crate::backend::Backend;
use crate::directory::{self, Bootstrap, CreatedOrg, Org};
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tether_durable::error::ErrorBody;
use tether_durable::time::{now_ms, rfc3339};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// A JWT for `Authorization: Bearer`.
    pub token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub expires_at: String,
}

impl Token {
    /// The answer for a freshly signed JWT expiring at `exp` (seconds), issued at `now`.
    pub fn answer(token: String, exp: i64, now: i64) -> Response {
        h::json(
            StatusCode::OK,
            &Self {
                token,
                token_type: "Bearer".into(),
                expires_in: exp - now,
                expires_at: rfc3339(exp * 1000),
            },
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user_id: String,
    pub member_id: String,
    pub role: Role,
    pub org: Org,
    /// `api_key` or `token`.
    pub auth: String,
    pub key_id: String,
}

/// Creates the first org, its owner and the owner's first API key. Authenticated by the
/// deployment's `BOOTSTRAP_TOKEN`; works once.
#[utoipa::path(post, path = "/v1/bootstrap", tag = "auth", request_body = Bootstrap,
    responses((status = 201, body = CreatedOrg), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "bootstrap is not enabled"),
              (status = 409, body = ErrorBody, description = "already bootstrapped")),
    security(("bootstrap" = [])))]
pub async fn bootstrap(app: &impl Backend, req: &Request) -> Result<Response, ApiError> {
    let Some(expected) = app.config().bootstrap_token.as_deref() else {
        return Err(ApiError::not_found("route"));
    };
    let given = h::credential(req).unwrap_or("");
    // Hash both sides so the comparison is constant-time regardless of length.
    let ok: bool = Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into();
    if !ok || given.is_empty() {
        return Err(ApiError::unauthorized("invalid bootstrap token"));
    }
    let input: Bootstrap = h::body(req)?;
    let created = directory::bootstrap(app.db(), input, now_ms()).await?;
    Ok(h::json(StatusCode::CREATED, &created))
}

/// Exchanges an API key (not a token) for a short-lived JWT.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth",
    responses((status = 200, body = Token), (status = 401, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn token(app: &impl Backend, req: &Request) -> Result<Response, ApiError> {
    let cred = h::credential(req).ok_or_else(|| ApiError::unauthorized("send an API key"))?;
    if !cred.starts_with(auth::KEY_PREFIX) {
        return Err(ApiError::unauthorized(
            "only an API key can be exchanged for a token",
        ));
    }
    let p = key_principal(app, cred).await?;
    let now = now_ms() / 1000;
    let (token, exp) = auth::issue_token(app.config(), &p, now)?;
    Ok(Token::answer(token, exp, now))
}

#[utoipa::path(get, path = "/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn me(app: &impl Backend, p: &Principal) -> Result<Response, ApiError> {
    let org = directory::org(app.db(), &p.org_id).await?;
    Ok(h::json(
        StatusCode::OK,
        &Me {
            user_id: p.user_id.clone(),
            member_id: p.member_id.clone(),
            role: p.role,
            org,
            auth: match p.credential {
                Credential::ApiKey { .. } => "api_key",
                Credential::Token => "token",
            }
            .into(),
            key_id: p.key_id.clone(),
        },
    ))
}
