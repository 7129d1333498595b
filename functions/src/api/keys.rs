//! `/v1/api-keys`: members manage their own keys; admins manage everyone's but an owner's.

use crate::auth::{Principal, Role};
use crate::backend::Backend;
use crate::directory::{self, ApiKey, CreateApiKey, NewApiKey};
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use serde::Deserialize;
use tether_durable::error::ErrorBody;
use tether_durable::time::now_ms;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// Only this member's keys. Members always see only their own.
    pub member_id: Option<String>,
}

/// May `p` manage keys of `member_id`?
async fn may_manage(app: &impl Backend, p: &Principal, member_id: &str) -> Result<(), ApiError> {
    if member_id == p.member_id {
        return Ok(());
    }
    p.require(Role::Admin)?;
    let target = directory::member(app.db(), &p.org_id, member_id).await?;
    p.require_over(target.role)
}

/// A key of the org as the caller may see it: members see only their own keys; others' are
/// "not found" to them.
async fn visible_key(app: &impl Backend, p: &Principal, id: &str) -> Result<ApiKey, ApiError> {
    let key = directory::api_key(app.db(), &p.org_id, id).await?;
    if key.member_id != p.member_id && p.role < Role::Admin {
        return Err(ApiError::not_found("api key"));
    }
    Ok(key)
}

#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(KeyQuery),
    responses((status = 200, body = Vec<ApiKey>)), security(("api_key" = []), ("bearer" = [])))]
pub async fn list(app: &impl Backend, p: &Principal, req: &Request) -> Result<Response, ApiError> {
    let q: KeyQuery = h::query(req)?;
    let member = if p.role >= Role::Admin {
        q.member_id
    } else {
        Some(p.member_id.clone())
    };
    if let Some(m) = &member {
        tether_durable::ids::check(tether_durable::ids::MEMBER, "member_id", m)?;
    }
    Ok(h::json(
        StatusCode::OK,
        &directory::api_keys(app.db(), &p.org_id, member.as_deref()).await?,
    ))
}

/// Creates a key; the answer is the only time its secret is shown.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = NewApiKey), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: CreateApiKey = h::body(req)?;
    let member_id = input.member_id.unwrap_or_else(|| p.member_id.clone());
    may_manage(app, p, &member_id).await?;
    let key =
        directory::create_api_key(app.db(), &p.org_id, &member_id, &input.name, now_ms()).await?;
    Ok(h::json(StatusCode::CREATED, &key))
}

#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    Ok(h::json(StatusCode::OK, &visible_key(app, p, id).await?))
}

/// Revokes a key at once. Tokens minted from it stay valid until they expire (at most the
/// token lifetime, 15 minutes by default).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn revoke(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    let key = visible_key(app, p, id).await?;
    may_manage(app, p, &key.member_id).await?;
    directory::revoke_api_key(app.db(), &p.org_id, id, now_ms()).await?;
    Ok(h::no_content())
}
