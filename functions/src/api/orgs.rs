//! `/v1/orgs`: the caller's orgs. A key acts in exactly one org; other orgs are not found.

use super::{org_call, own_org};
use crate::auth::{Principal, Role};
use crate::backend::Backend;
use crate::directory::{self, CreateOrg, CreatedOrg, Org, UpdateOrg};
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::time::now_ms;

/// The orgs the calling user belongs to.
#[utoipa::path(get, path = "/v1/orgs", tag = "orgs",
    responses((status = 200, body = Vec<Org>)), security(("api_key" = []), ("bearer" = [])))]
pub async fn list(app: &impl Backend, p: &Principal) -> Result<Response, ApiError> {
    Ok(h::json(
        StatusCode::OK,
        &directory::orgs_of_user(app.db(), &p.user_id).await?,
    ))
}

/// Creates an org owned by the calling user, with a first key for it (shown once).
#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", request_body = CreateOrg,
    responses((status = 201, body = CreatedOrg), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: CreateOrg = h::body(req)?;
    Ok(h::json(
        StatusCode::CREATED,
        &directory::create_org(app.db(), &p.user_id, input, now_ms()).await?,
    ))
}

#[utoipa::path(get, path = "/v1/orgs/{id}", tag = "orgs", params(("id" = String, Path)),
    responses((status = 200, body = Org), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    own_org(p, id)?;
    Ok(h::json(
        StatusCode::OK,
        &directory::org(app.db(), id).await?,
    ))
}

/// Renames the org or changes its task prefix (admin).
#[utoipa::path(patch, path = "/v1/orgs/{id}", tag = "orgs", params(("id" = String, Path)),
    request_body = UpdateOrg,
    responses((status = 200, body = Org), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    own_org(p, id)?;
    p.require(Role::Admin)?;
    let patch: UpdateOrg = h::body(req)?;
    Ok(h::json(
        StatusCode::OK,
        &directory::update_org(app.db(), id, patch, now_ms()).await?,
    ))
}

/// Deletes the org, its data, members and keys (owner).
#[utoipa::path(delete, path = "/v1/orgs/{id}", tag = "orgs", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    own_org(p, id)?;
    p.require(Role::Owner)?;
    // Data first: if the directory delete then fails, a retry finds the object already gone.
    match org_call(app, p, OrgOp::Destroy).await {
        Ok(_) => {}
        Err(e) if e.status == StatusCode::NOT_FOUND => {}
        Err(e) => return Err(e),
    }
    directory::delete_org(app.db(), id).await?;
    Ok(h::no_content())
}
