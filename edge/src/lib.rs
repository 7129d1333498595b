//! The Cloudflare Worker: turns workers-rs requests into `http` ones, hands them to
//! `tether_functions::api::handle` with the Worker's bindings behind the backend traits, and
//! exports the Durable Object classes. Thin by design: logic lives in `functions` and `durable`.
//!
//! - [`bindings`]: D1, the org objects and the rate limiter behind `tether_functions::backend`.
//! - `fetch` / `scheduled`: the entry points.

mod bindings;

use bindings::Edge;
use tether_durable::stream::COMMON_HEADERS;
use tether_functions::backend::{Backend, HostRef, RateLimiter};
use tether_functions::error::ApiError;
use tether_functions::http::{self as h, MAX_BODY, MAX_UPLOAD};
use tether_functions::streams;
use worker::{
    Context, Env, Method, Request, RequestInit, Response, Result, ScheduleContext, ScheduledEvent,
    event,
};

pub use tether_durable::objects::{HostObject, OrgStore, StreamObject};

/// How long revoked keys stay listed before the cron purges them.
const REVOKED_KEY_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    if streams::is_stream_path(&path) {
        return stream(req, &env).await;
    }
    if let Some(host_id) = path
        .strip_prefix("/v1/hosts/")
        .and_then(|rest| rest.strip_suffix("/tunnel"))
    {
        let host_id = host_id.to_owned();
        return tunnel(req, &env, &host_id).await;
    }
    // The API's largest body (a policy upload); each route applies its own limit.
    let http_req = match to_http(&mut req, MAX_UPLOAD).await {
        Ok(r) => r,
        Err(e) => return from_http(h::error(&e)),
    };
    let res = match Edge::from_env(&env) {
        Ok(edge) => tether_functions::api::handle(&edge, http_req, "workers").await,
        // Misconfiguration still lets health and version answer, so it can be diagnosed.
        Err(e) => {
            tether_functions::public::handle(&http_req, "workers").unwrap_or_else(|| h::error(&e))
        }
    };
    from_http(res)
}

/// The cron trigger that also purges what has expired (wrangler.toml); the every-minute one
/// runs the automations that are due.
const PURGE_CRON: &str = "*/5 * * * *";

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let Ok(edge) = Edge::from_env(&env) else {
        worker::console_error!("scheduled: the Worker is misconfigured");
        return;
    };
    if event.cron() == PURGE_CRON {
        purge(&edge).await;
        return;
    }
    // The tick's own time, not the clock: a retried tick claims what was due then.
    let at = event.schedule() as i64;
    match tether_functions::api::automations::tick(&edge, at).await {
        Ok(t) => {
            if t.orgs > 0 {
                worker::console_log!(
                    "scheduled: automations in {} orgs: {} sessions started, {} runs failed",
                    t.orgs,
                    t.dispatched,
                    t.failed
                );
            }
            for e in t.errors {
                worker::console_error!("scheduled: automations: {e}");
            }
        }
        Err(e) => worker::console_error!("scheduled: automations failed: {e}"),
    }
}

/// Drops revoked keys and hosts past their retention, expired pairing codes and old webhook
/// delivery ids.
async fn purge(edge: &Edge) {
    let now = tether_durable::time::now_ms();
    let cutoff = now - REVOKED_KEY_RETENTION_MS;
    match tether_functions::directory::purge_revoked_keys(edge.db(), cutoff).await {
        Ok(n) => worker::console_log!("scheduled: purged {n} revoked keys"),
        Err(e) => worker::console_error!("scheduled: purging revoked keys failed: {e}"),
    }
    let hosts = tether_functions::directory::hosts::purge_expired(edge.db(), now).await;
    let revoked = tether_functions::directory::hosts::purge_revoked_hosts(edge.db(), cutoff).await;
    match (hosts, revoked) {
        (Ok(codes), Ok(gone)) => {
            worker::console_log!(
                "scheduled: purged {codes} pairing codes/nonces, {gone} revoked hosts"
            )
        }
        (Err(e), _) | (_, Err(e)) => worker::console_error!("scheduled: purging hosts failed: {e}"),
    }
    let deliveries_cutoff = now - tether_functions::directory::webhooks::DELIVERY_RETENTION_MS;
    match tether_functions::directory::webhooks::purge_deliveries(edge.db(), deliveries_cutoff)
        .await
    {
        Ok(n) => worker::console_log!("scheduled: purged {n} webhook delivery ids"),
        Err(e) => worker::console_error!("scheduled: purging webhook deliveries failed: {e}"),
    }
}

/// `GET /v1/hosts/{id}/tunnel` (WebSocket): a daemon with a host token for that host opens
/// its tunnel, held by the host's object.
async fn tunnel(mut req: Request, env: &Env, host_id: &str) -> Result<Response> {
    let opened = async {
        let http_req = to_http(&mut req, MAX_BODY).await?;
        let edge = Edge::from_env(env)?;
        let host = tether_functions::api::identify_host(&edge, &http_req).await?;
        if host.host_id != host_id {
            return Err(ApiError::forbidden("this token is for another host"));
        }
        let upgrade = req
            .headers()
            .get("upgrade")
            .ok()
            .flatten()
            .unwrap_or_default();
        if !upgrade.eq_ignore_ascii_case("websocket") {
            return Err(ApiError::new(
                http::StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                "open the tunnel with a WebSocket upgrade",
            ));
        }
        let target = HostRef {
            host_id: &host.host_id,
            org_id: &host.org_id,
        };
        let (stub, inner) = edge
            .tunnels()
            .request(&target, Method::Get, "/connect", None)
            .and_then(|(stub, inner)| {
                inner.headers().set("upgrade", "websocket")?;
                Ok((stub, inner))
            })
            .map_err(|e| ApiError::internal(&e))?;
        stub.fetch_with_request(inner)
            .await
            .map_err(|e| ApiError::internal(&e))
    };
    match opened.await {
        Ok(res) => Ok(res),
        Err(e) => from_http(h::error(&e)),
    }
}

/// `/v1/stream/...`: authenticates, authorises and forwards to the stream's object, whose
/// answer (a live SSE body included) passes through untouched.
async fn stream(mut req: Request, env: &Env) -> Result<Response> {
    if req.method() == Method::Options {
        // A CORS preflight carries no credentials.
        return with_stream_headers(Response::empty()?.with_status(204));
    }
    let forwarded = async {
        // One append is at most MAX_BODY (a stream row's limit).
        let http_req = to_http(&mut req, MAX_BODY).await?;
        let edge = Edge::from_env(env)?;
        let caller = streams::identify(&edge, &http_req).await?;
        if !edge.stream_limiter().allow(caller.rate_key()).await {
            return Err(ApiError::too_many_requests(10));
        }
        let route = streams::authorize(&caller, http_req.method(), http_req.uri().path())?;
        forward(&edge, &req, http_req.into_body(), &route)
            .await
            .map_err(|e| ApiError::internal(&e))
    };
    match forwarded.await {
        Ok(res) => Ok(res),
        Err(e) => with_stream_headers(from_http(h::error(&e))?),
    }
}

async fn forward(
    edge: &Edge,
    req: &Request,
    body: Vec<u8>,
    route: &streams::StreamRoute,
) -> Result<Response> {
    let headers = worker::Headers::new();
    for (name, value) in req.headers() {
        // Only the Worker names the org, path and actor.
        if !name.starts_with("x-tether-") {
            headers.append(&name, &value)?;
        }
    }
    bindings::Streams::route_headers(&headers, &route.org_id, &route.path, &route.actor)?;
    let mut init = RequestInit::new();
    init.with_method(req.method()).with_headers(headers);
    // A body on GET or HEAD is ignored (the runtime refuses to forward one).
    if !body.is_empty() && !matches!(req.method(), Method::Get | Method::Head) {
        init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    let inner = Request::new_with_init(req.url()?.as_str(), &init)?;
    let stub = edge.streams().stub(&route.org_id, &route.path)?;
    stub.fetch_with_request(inner).await
}

fn with_stream_headers(res: Response) -> Result<Response> {
    let headers = res.headers().clone();
    for (k, v) in COMMON_HEADERS {
        headers.set(k, v)?;
    }
    Ok(res.with_headers(headers))
}

/// Past the limit, how much more of a body is read and thrown away so the client gets to
/// read the 413 instead of a reset connection.
const MAX_DRAIN: usize = 32 * 1024 * 1024;

/// Reads the request, refusing bodies over `max` bytes without keeping them in memory.
async fn to_http(req: &mut Request, max: usize) -> std::result::Result<h::Request, ApiError> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    if req.inner().body().is_some() {
        let declared = req
            .headers()
            .get("content-length")
            .ok()
            .flatten()
            .and_then(|v| v.parse::<usize>().ok());
        let mut stream = req
            .stream()
            .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
        let mut seen = 0usize;
        let mut too_large = declared.is_some_and(|n| n > max);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
            seen += chunk.len();
            too_large |= seen > max;
            if too_large {
                body = Vec::new();
                if seen > max + MAX_DRAIN {
                    break;
                }
            } else {
                body.extend_from_slice(&chunk);
            }
        }
        if too_large {
            return Err(h::too_large(max));
        }
    }
    let url = req
        .url()
        .map_err(|e| ApiError::bad_request("bad_url", e.to_string()))?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut builder = http::Request::builder()
        .method(req.method().as_ref())
        .uri(path_and_query);
    for (name, value) in req.headers() {
        builder = builder.header(name, value);
    }
    builder
        .body(body)
        .map_err(|e| ApiError::bad_request("bad_request", e.to_string()))
}

fn from_http(res: h::Response) -> Result<Response> {
    let (parts, body) = res.into_parts();
    let headers = worker::Headers::new();
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            headers.set(name.as_str(), v)?;
        }
    }
    let res = if body.is_empty() {
        Response::empty()?
    } else {
        Response::from_bytes(body)?
    };
    Ok(res.with_status(parts.status.as_u16()).with_headers(headers))
}
