//! `/v1/hosts`: the org's machines for members, and the two credential-free routes a machine
//! uses to connect (a nonce, then a token for the signed nonce).
//!
//! Live state (online, why not, last seen, queued commands) belongs to each host's Durable
//! Object ([`Tunnels`]), which also answers `info` through the tunnel and holds the command
//! queue. Revocation is effective in D1 first (no more nonces or tokens), then the object
//! closes the open tunnel with the code that makes the daemon stop.

use super::auth_routes::Token;
use crate::auth::{self, HostPrincipal, Principal, Role};
use crate::backend::{Backend, HostRef, Tunnels};
use crate::directory::hosts::{self, Host, HostNonce, RedeemNonce};
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::time::now_ms;

/// The host with its tunnel's live status (revoked hosts have no tunnel to ask).
async fn live(app: &impl Backend, mut host: Host) -> Result<Host, ApiError> {
    if host.revoked_at.is_none() {
        host.status = app.tunnels().status(&host_ref(&host)).await?;
    }
    Ok(host)
}

fn host_ref(host: &Host) -> HostRef<'_> {
    HostRef {
        host_id: &host.id,
        org_id: &host.org_id,
    }
}

#[utoipa::path(get, path = "/v1/hosts", tag = "hosts",
    responses((status = 200, body = Vec<Host>)), security(("api_key" = []), ("bearer" = [])))]
pub async fn list(app: &impl Backend, p: &Principal) -> Result<Response, ApiError> {
    Ok(h::json(StatusCode::OK, &live_hosts(app, p).await?))
}

/// The org's hosts, each with its tunnel's live status (`GET /v1/hosts`, the MCP tool).
pub(super) async fn live_hosts(app: &impl Backend, p: &Principal) -> Result<Vec<Host>, ApiError> {
    let hosts = hosts::hosts(app.db(), &p.org_id).await?;
    futures_util::future::try_join_all(hosts.into_iter().map(|h| live(app, h))).await
}

#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path)),
    responses((status = 200, body = Host), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    let host = live(app, hosts::host(app.db(), &p.org_id, id).await?).await?;
    Ok(h::json(StatusCode::OK, &host))
}

/// A live question to the machine, answered by its daemon through the tunnel: hostname,
/// uptime, load and the agent CLIs it has.
#[utoipa::path(get, path = "/v1/hosts/{id}/info", tag = "hosts", params(("id" = String, Path)),
    responses((status = 200, description = "the daemon's answer"), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "the host is offline (with the reason)"),
              (status = 504, body = ErrorBody, description = "the host did not answer in time")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn info(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    let host = live_host(app, &p.org_id, id).await?;
    let body = app
        .tunnels()
        .rpc(
            &host_ref(&host),
            "host.info",
            &serde_json::json!({}),
            INFO_DEADLINE_MS,
        )
        .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

const INFO_DEADLINE_MS: u32 = 10_000;

/// A command for the machine: persisted, delivered in order when it is (or comes back)
/// online, handled once.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCommand {
    /// What to do, e.g. `host.ping`.
    pub kind: String,
    /// Its arguments (JSON).
    #[serde(default)]
    pub body: serde_json::Value,
}

#[utoipa::path(post, path = "/v1/hosts/{id}/commands", tag = "hosts", params(("id" = String, Path)),
    request_body = NewCommand,
    responses((status = 202, description = "queued: {id, seq}"), (status = 404, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "the host's queue is full")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn command(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: NewCommand = h::body(req)?;
    let kind =
        tether_durable::validate::line("kind", &input.kind, tether_durable::tunnel::MAX_NAME)?;
    let host = live_host(app, &p.org_id, id).await?;
    let command_id = tether_durable::ids::new("cmd");
    let body = app
        .tunnels()
        .command(&host_ref(&host), &command_id, &kind, &input.body)
        .await?;
    Ok(h::json_bytes(StatusCode::ACCEPTED, body))
}

/// A speed test of the host's tunnel.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Speedtest {
    /// How many bytes the daemon sends, 1 to 268435456 (256 MiB).
    pub bytes: u64,
}

/// Measures the tunnel: the daemon sends `bytes` through one byte channel under credit flow
/// control, and the answer says how fast it arrived.
#[utoipa::path(post, path = "/v1/hosts/{id}/speedtest", tag = "hosts", params(("id" = String, Path)),
    request_body = Speedtest,
    responses((status = 200, description = "{bytes, elapsed_ms, mb_per_s}"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn speedtest(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: Speedtest = h::body(req)?;
    if !(1..=tether_durable::host::SPEEDTEST_MAX_BYTES).contains(&input.bytes) {
        return Err(ApiError::invalid(
            "bytes",
            format!("1 to {}", tether_durable::host::SPEEDTEST_MAX_BYTES),
        ));
    }
    let host = live_host(app, &p.org_id, id).await?;
    let body = app
        .tunnels()
        .speedtest(&host_ref(&host), input.bytes)
        .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

/// A host of the caller's org that is not revoked.
pub(super) async fn live_host(
    app: &impl Backend,
    org_id: &str,
    id: &str,
) -> Result<Host, ApiError> {
    let host = hosts::host(app.db(), org_id, id).await?;
    if host.revoked_at.is_some() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "host_revoked",
            "this host was revoked",
        ));
    }
    Ok(host)
}

/// Revokes a host (admin; idempotent): it gets no more nonces or tokens, its open tunnel is
/// closed and its daemon stops retrying. Pairing it again needs a new approval.
#[utoipa::path(delete, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn revoke(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let host = hosts::revoke_host(app.db(), &p.org_id, id, now_ms()).await?;
    mirror(app, &host.org_id, &host.id).await;
    app.tunnels().revoke(&host_ref(&host)).await?;
    Ok(h::no_content())
}

/// Copies a host's directory row into its org's object, which serves the `hosts` shape. The
/// directory is the truth and already changed: a failure is logged, not answered, and the
/// next initial read of the shape reconciles the mirror anyway.
pub(super) async fn mirror(app: &impl Backend, org_id: &str, host_id: &str) {
    let put = async {
        let host = hosts::mirror_host(app.db(), org_id, host_id).await?;
        super::org_call_as(app, org_id, host_id, OrgOp::PutHost(host)).await
    };
    if let Err(e) = put.await {
        tracing::warn!(host = host_id, error = %e, "mirroring a host into its org failed");
    }
}

/// A nonce for the host to sign (no credential). Unknown and revoked hosts: 404, which tells a
/// daemon to stop and pair again.
#[utoipa::path(post, path = "/v1/hosts/{id}/nonce", tag = "hosts", params(("id" = String, Path)),
    responses((status = 201, body = HostNonce), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn nonce(app: &impl Backend, id: &str) -> Result<Response, ApiError> {
    Ok(h::json(
        StatusCode::CREATED,
        &hosts::issue_nonce(app.db(), id, now_ms()).await?,
    ))
}

/// Redeems a signed nonce for a host token (a JWT for the tunnel, 15 minutes). A wrong
/// signature, a reused or expired nonce and a revoked host are all 401.
#[utoipa::path(post, path = "/v1/hosts/{id}/token", tag = "hosts", params(("id" = String, Path)),
    request_body = RedeemNonce,
    responses((status = 200, body = Token), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn token(app: &impl Backend, req: &Request, id: &str) -> Result<Response, ApiError> {
    let input: RedeemNonce = h::body(req)?;
    let now = now_ms();
    let host = hosts::redeem_nonce(app.db(), id, &input, now).await?;
    let now = now / 1000;
    let (token, exp) = auth::host::issue_host_token(app.config(), &host, now)?;
    Ok(Token::answer(token, exp, now))
}

/// Resolves the host behind a request's host token (`Authorization: Bearer`), for the
/// Worker's tunnel route: the token must verify and the host must still be registered and
/// unrevoked (a token outlives a revocation by up to 15 minutes otherwise). 401 for anything
/// else; `host_revoked` tells the daemon to stop retrying.
pub async fn identify_host(app: &impl Backend, req: &Request) -> Result<HostPrincipal, ApiError> {
    let cred = h::credential(req)
        .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <host token>`"))?;
    let host = auth::verify_host_token(app.config(), cred)?;
    still_registered(app, host).await
}

/// A verified host token's host, if it is still registered in its org and unrevoked (401
/// `host_revoked` otherwise).
pub(super) async fn still_registered(
    app: &impl Backend,
    host: HostPrincipal,
) -> Result<HostPrincipal, ApiError> {
    match hosts::live_host_org(app.db(), &host.host_id).await? {
        Some(org) if org == host.org_id => Ok(host),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "host_revoked",
            "this host was revoked; pair the machine again",
        )),
    }
}
