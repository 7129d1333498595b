//! `/v1/members`: who belongs to the org, with which role.

use super::org_call;
use crate::auth::{Principal, Role};
use crate::backend::Backend;
use crate::directory::{self, CreateMember, CreatedMember, Member, UpdateMember};
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::time::now_ms;

#[utoipa::path(get, path = "/v1/members", tag = "members",
    responses((status = 200, body = Vec<Member>)), security(("api_key" = []), ("bearer" = [])))]
pub async fn list(app: &impl Backend, p: &Principal) -> Result<Response, ApiError> {
    Ok(h::json(
        StatusCode::OK,
        &directory::members(app.db(), &p.org_id).await?,
    ))
}

/// Adds a person (admin; adding an owner needs an owner). Answers a first API key for them.
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = CreateMember,
    responses((status = 201, body = CreatedMember), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let input: CreateMember = h::body(req)?;
    p.require_over(input.role)?;
    Ok(h::json(
        StatusCode::CREATED,
        &directory::create_member(app.db(), &p.org_id, input, now_ms()).await?,
    ))
}

#[utoipa::path(get, path = "/v1/members/{id}", tag = "members", params(("id" = String, Path)),
    responses((status = 200, body = Member), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    Ok(h::json(
        StatusCode::OK,
        &directory::member(app.db(), &p.org_id, id).await?,
    ))
}

/// Changes a role (admin; anything touching the owner role needs an owner).
#[utoipa::path(patch, path = "/v1/members/{id}", tag = "members", params(("id" = String, Path)),
    request_body = UpdateMember,
    responses((status = 200, body = Member), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let input: UpdateMember = h::body(req)?;
    let target = directory::member(app.db(), &p.org_id, id).await?;
    p.require_over(target.role.max(input.role))?;
    Ok(h::json(
        StatusCode::OK,
        &directory::set_role(app.db(), &p.org_id, id, input.role).await?,
    ))
}

/// Removes a member (admin, or the member themself); their keys stop working and their tasks
/// become unassigned. The last owner cannot leave.
#[utoipa::path(delete, path = "/v1/members/{id}", tag = "members", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    let target = directory::member(app.db(), &p.org_id, id).await?;
    if target.id != p.member_id {
        p.require_over(target.role)?;
    }
    directory::remove_member(app.db(), &p.org_id, id).await?;
    org_call(
        app,
        p,
        OrgOp::UnassignMember {
            member_id: target.id,
        },
    )
    .await?;
    Ok(h::no_content())
}
