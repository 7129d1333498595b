//! The REST API: routing, authentication, rate limiting, and the handlers in [`api`](self)'s
//! submodules (one per resource).

mod auth_routes;
pub mod automations;
mod chat;
mod hosts;
mod keys;
mod mcp;
mod members;
mod org_data;
mod orgs;
mod pairing;
mod policies;
mod policy_decisions;
mod sessions;
mod shape;
mod webhooks;

use crate::auth::{self, Bearer, Credential, Principal};
use crate::backend::{Backend, OrgStore, RateLimiter};
use crate::directory;
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use crate::public;
use http::Method;
use tether_durable::org::{OrgCall, OrgOp};
use tether_durable::time::now_ms;

pub use auth_routes::{Me, Token};
pub use hosts::identify_host;

/// Serves one request. Never panics on input; every failure is a JSON error response.
pub async fn handle(app: &impl Backend, req: Request, runtime: &str) -> Response {
    if let Some(res) = public::handle(&req, runtime) {
        return res;
    }
    match route(app, &req).await {
        Ok(res) => res,
        Err(e) => h::error(&e),
    }
}

fn method_not_allowed(allowed: &str) -> Result<Response, ApiError> {
    Err(ApiError::new(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allowed}"),
    ))
}

async fn route(app: &impl Backend, req: &Request) -> Result<Response, ApiError> {
    let path = req.uri().path();
    // Segments are split first, then percent-decoded: `/v1/automations/Nightly%20triage`
    // names "Nightly triage", and an encoded `/` stays inside its segment.
    let decoded = path
        .strip_prefix('/')
        .unwrap_or(path)
        .trim_end_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            ApiError::bad_request("bad_path", "the path is not UTF-8 once percent-decoded")
        })?;
    let segs: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
    let m = req.method();

    // Routes that authenticate by other means than a member's credential.
    match segs.as_slice() {
        ["v1", "bootstrap"] => {
            return if m == Method::POST {
                auth_routes::bootstrap(app, req).await
            } else {
                method_not_allowed("POST")
            };
        }
        ["v1", "auth", "token"] => {
            return if m == Method::POST {
                auth_routes::token(app, req).await
            } else {
                method_not_allowed("POST")
            };
        }
        // A machine pairing or connecting has no member credential.
        ["v1", "pairing"] => {
            return if m == Method::POST {
                limit_anonymous(app, req).await?;
                pairing::create(app, req).await
            } else {
                method_not_allowed("POST")
            };
        }
        ["v1", "pairing", code] => {
            return if m == Method::GET {
                limit_anonymous(app, req).await?;
                pairing::status(app, req, code).await
            } else {
                method_not_allowed("GET")
            };
        }
        ["v1", "hosts", id, "nonce"] => {
            return if m == Method::POST {
                limit_anonymous(app, req).await?;
                hosts::nonce(app, id).await
            } else {
                method_not_allowed("POST")
            };
        }
        // Providers' deliveries: authenticated by their signature, charged to their address.
        ["webhooks", provider, id] => {
            return if m == Method::POST {
                limit_anonymous(app, req).await?;
                webhooks::deliver(app, req, provider, id).await
            } else {
                method_not_allowed("POST")
            };
        }
        ["v1", "hosts", id, "token"] => {
            return if m == Method::POST {
                limit_anonymous(app, req).await?;
                hosts::token(app, req, id).await
            } else {
                method_not_allowed("POST")
            };
        }
        _ => {}
    }

    // The MCP server authenticates members itself and answers JSON-RPC.
    if let ["mcp"] = segs.as_slice() {
        return mcp::serve(app, req).await;
    }

    // Routes for a host's own token: its project links, its sessions' status reports and its
    // guardrail decisions.
    let host_route = match (segs.as_slice(), m) {
        (["v1", "hosts", _, "links"], &Method::POST)
        | (["v1", "hosts", _, "links", _], &Method::DELETE)
        | (["v1", "hosts", _, "sessions", _, "status" | "progress"], &Method::POST)
        | (["v1", "hosts", _, "sessions", _, "task"], &Method::PATCH)
        | (["v1", "hosts", _, "sessions", _, "title"], &Method::PUT)
        | (["v1", "hosts", _, "policy-decisions"], &Method::POST) => true,
        (
            ["v1", "hosts", _, "links", _]
            | [
                "v1",
                "hosts",
                _,
                "sessions",
                _,
                "status" | "progress" | "task" | "title",
            ]
            | ["v1", "hosts", _, "policy-decisions"],
            _,
        ) => {
            return method_not_allowed("POST, PUT, PATCH or DELETE with a host token");
        }
        _ => false,
    };
    if host_route {
        let host = hosts::identify_host(app, req).await?;
        if !app.limiter().allow(&host.host_id).await {
            return Err(ApiError::too_many_requests(60));
        }
        return match segs.as_slice() {
            ["v1", "hosts", id, "links"] => sessions::link(app, &host, id, req).await,
            ["v1", "hosts", id, "links", project] => {
                sessions::unlink(app, &host, id, project).await
            }
            ["v1", "hosts", id, "sessions", sid, "status"] => {
                sessions::report(app, &host, id, sid, req).await
            }
            ["v1", "hosts", id, "sessions", sid, "progress"] => {
                sessions::progress(app, &host, id, sid, req).await
            }
            ["v1", "hosts", id, "sessions", sid, "task"] => {
                sessions::update_own_task(app, &host, id, sid, req).await
            }
            ["v1", "hosts", id, "sessions", sid, "title"] => {
                sessions::title(app, &host, id, sid, req).await
            }
            ["v1", "hosts", id, "policy-decisions"] => {
                policy_decisions::report(app, &host, id, req).await
            }
            _ => method_not_allowed("POST"),
        };
    }

    // The org's guardrail policies are read by its members and by its machines (host tokens).
    if m == Method::GET
        && matches!(
            segs.as_slice(),
            ["v1", "policies"] | ["v1", "policies", _] | ["v1", "policies", _, "wasm"]
        )
    {
        let caller = authenticate_member_or_host(app, req).await?;
        return match segs.as_slice() {
            ["v1", "policies", name] => policies::get(app, &caller, name).await,
            ["v1", "policies", name, "wasm"] => policies::wasm(app, &caller, name, req).await,
            _ => policies::list(app, &caller).await,
        };
    }

    // The org's shapes are read by its members and by its machines (host tokens).
    if let ["v1", "orgs", id, "shape"] = segs.as_slice() {
        if m != Method::GET {
            return method_not_allowed("GET");
        }
        let caller = authenticate_member_or_host(app, req).await?;
        return shape::shape(app, &caller, id, req).await;
    }

    let p = authenticate(app, req).await?;
    let p = &p;
    match (segs.as_slice(), m.clone()) {
        (["v1", "me"], Method::GET) => auth_routes::me(app, p).await,

        (["v1", "orgs"], Method::GET) => orgs::list(app, p).await,
        (["v1", "orgs"], Method::POST) => orgs::create(app, p, req).await,
        (["v1", "orgs", id], Method::GET) => orgs::get(app, p, id).await,
        (["v1", "orgs", id], Method::PATCH) => orgs::update(app, p, id, req).await,
        (["v1", "orgs", id], Method::DELETE) => orgs::delete(app, p, id).await,
        (["v1", "orgs", id, "sync", "compact"], Method::POST) => {
            shape::compact(app, p, id, req).await
        }

        (["v1", "members"], Method::GET) => members::list(app, p).await,
        (["v1", "members"], Method::POST) => members::create(app, p, req).await,
        (["v1", "members", id], Method::GET) => members::get(app, p, id).await,
        (["v1", "members", id], Method::PATCH) => members::update(app, p, id, req).await,
        (["v1", "members", id], Method::DELETE) => members::delete(app, p, id).await,

        (["v1", "api-keys"], Method::GET) => keys::list(app, p, req).await,
        (["v1", "api-keys"], Method::POST) => keys::create(app, p, req).await,
        (["v1", "api-keys", id], Method::GET) => keys::get(app, p, id).await,
        (["v1", "api-keys", id], Method::DELETE) => keys::revoke(app, p, id).await,

        (["v1", "projects"], Method::GET) => org_data::list_projects(app, p, req).await,
        (["v1", "projects"], Method::POST) => org_data::create_project(app, p, req).await,
        (["v1", "projects", id], Method::GET) => org_data::get_project(app, p, id).await,
        (["v1", "projects", id], Method::PATCH) => org_data::update_project(app, p, id, req).await,
        (["v1", "projects", id], Method::DELETE) => org_data::delete_project(app, p, id).await,

        (["v1", "task-statuses"], Method::GET) => org_data::list_statuses(app, p).await,
        (["v1", "task-statuses"], Method::POST) => org_data::create_status(app, p, req).await,
        (["v1", "task-statuses", id], Method::PATCH) => {
            org_data::update_status(app, p, id, req).await
        }
        (["v1", "task-statuses", id], Method::DELETE) => {
            org_data::delete_status(app, p, id, req).await
        }

        (["v1", "tasks"], Method::GET) => org_data::list_tasks(app, p, req).await,
        (["v1", "tasks"], Method::POST) => org_data::create_task(app, p, req).await,
        (["v1", "tasks", key], Method::GET) => org_data::get_task(app, p, key).await,
        (["v1", "tasks", key], Method::PATCH) => org_data::update_task(app, p, key, req).await,
        (["v1", "tasks", key], Method::DELETE) => org_data::delete_task(app, p, key).await,

        (["v1", "pairing", code, "approve"], Method::POST) => pairing::approve(app, p, code).await,
        (["v1", "hosts"], Method::GET) => hosts::list(app, p).await,
        (["v1", "hosts", id], Method::GET) => hosts::get(app, p, id).await,
        (["v1", "hosts", id], Method::DELETE) => hosts::revoke(app, p, id).await,
        (["v1", "hosts", id, "info"], Method::GET) => hosts::info(app, p, id).await,
        (["v1", "hosts", id, "commands"], Method::POST) => hosts::command(app, p, id, req).await,
        (["v1", "hosts", id, "speedtest"], Method::POST) => hosts::speedtest(app, p, id, req).await,
        (["v1", "hosts", id, "links"], Method::GET) => sessions::links(app, p, id).await,
        (["v1", "hosts", id, "worktrees"], Method::GET) => sessions::worktrees(app, p, id).await,

        (["v1", "sessions"], Method::GET) => sessions::list(app, p, req).await,
        (["v1", "sessions"], Method::POST) => sessions::create(app, p, req).await,
        (["v1", "sessions", id], Method::GET) => sessions::get(app, p, id).await,
        (["v1", "sessions", id, "input"], Method::POST) => sessions::input(app, p, id, req).await,
        (["v1", "sessions", id, "resize"], Method::POST) => sessions::resize(app, p, id, req).await,
        (["v1", "sessions", id, "stop"], Method::POST) => sessions::stop(app, p, id, req).await,
        (["v1", "sessions", id, "messages"], Method::POST) => chat::message(app, p, id, req).await,
        (["v1", "sessions", id, "approvals"], Method::GET) => chat::approvals(app, p, id).await,
        (["v1", "sessions", id, "approvals", request], Method::POST) => {
            chat::approve(app, p, id, request, req).await
        }

        (["v1", "policies", name], Method::PUT) => policies::put(app, p, name, req).await,
        (["v1", "policies", name], Method::PATCH) => policies::update(app, p, name, req).await,
        (["v1", "policies", name], Method::DELETE) => policies::delete(app, p, name).await,
        (["v1", "policy-decisions"], Method::GET) => policy_decisions::list(app, p, req).await,
        (["v1", "mcp", "audit"], Method::GET) => mcp::audit(app, p, req).await,

        (["v1", "automations"], Method::GET) => automations::list(app, p, req).await,
        (["v1", "automations"], Method::POST) => automations::create(app, p, req).await,
        (["v1", "automations", key], Method::GET) => automations::get(app, p, key).await,
        (["v1", "automations", key], Method::PATCH) => automations::update(app, p, key, req).await,
        (["v1", "automations", key], Method::DELETE) => automations::delete(app, p, key).await,
        (["v1", "automations", key, "pause"], Method::POST) => {
            automations::pause(app, p, key).await
        }
        (["v1", "automations", key, "resume"], Method::POST) => {
            automations::resume(app, p, key).await
        }
        (["v1", "automations", key, "run"], Method::POST) => automations::run(app, p, key).await,
        (["v1", "automations", key, "runs"], Method::GET) => {
            automations::runs(app, p, key, req).await
        }
        (["v1", "automations", key, "prompt"], Method::GET) => {
            automations::prompt(app, p, key, req).await
        }
        (["v1", "automations", key, "prompt"], Method::PUT) => {
            automations::set_prompt(app, p, key, req).await
        }
        (["v1", "automations", key, "prompts"], Method::GET) => {
            automations::prompts(app, p, key).await
        }
        (["v1", "automations", key, "prompt", "rollback"], Method::POST) => {
            automations::rollback(app, p, key, req).await
        }

        (["v1", "webhooks"], Method::GET) => webhooks::list(app, p).await,
        (["v1", "webhooks"], Method::POST) => webhooks::create(app, p, req).await,
        (["v1", "webhooks", id], Method::GET) => webhooks::get(app, p, id).await,
        (["v1", "webhooks", id], Method::PATCH) => webhooks::update(app, p, id, req).await,
        (["v1", "webhooks", id], Method::DELETE) => webhooks::delete(app, p, id).await,
        (["v1", "webhooks", id, "rotate"], Method::POST) => webhooks::rotate(app, p, id, req).await,

        (
            [
                "v1",
                "me" | "orgs" | "members" | "api-keys" | "projects" | "task-statuses" | "tasks"
                | "hosts" | "sessions" | "policies" | "policy-decisions" | "webhooks"
                | "automations",
            ],
            _,
        )
        | (
            [
                "v1",
                "orgs" | "members" | "api-keys" | "projects" | "task-statuses" | "tasks" | "hosts"
                | "sessions" | "policies" | "webhooks" | "automations",
                _,
            ],
            _,
        )
        | (
            ["v1", "pairing", _, "approve"]
            | [
                "v1",
                "hosts",
                _,
                "info" | "commands" | "speedtest" | "links" | "worktrees",
            ]
            | [
                "v1",
                "sessions",
                _,
                "input" | "resize" | "stop" | "messages" | "approvals",
            ]
            | ["v1", "sessions", _, "approvals", _]
            | ["v1", "policies", _, "wasm"]
            | ["v1", "webhooks", _, "rotate"]
            | [
                "v1",
                "automations",
                _,
                "pause" | "resume" | "run" | "runs" | "prompt" | "prompts",
            ]
            | ["v1", "automations", _, "prompt", "rollback"]
            | ["v1", "mcp", "audit"]
            | ["v1", "orgs", _, "sync", "compact"],
            _,
        ) => method_not_allowed("a method this resource supports (see /v1/openapi.json)"),
        _ => Err(ApiError::new(
            http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )),
    }
}

/// Resolves the caller from an API key or a token, then applies the per-key rate limit.
async fn authenticate(app: &impl Backend, req: &Request) -> Result<Principal, ApiError> {
    let p = identify(app, req).await?;
    if !app.limiter().allow(&p.key_id).await {
        return Err(ApiError::too_many_requests(60));
    }
    Ok(p)
}

/// Resolves a member (API key or token) or one of the org's machines (a host token whose host
/// is still registered and unrevoked), then applies the caller's rate limit.
async fn authenticate_member_or_host(
    app: &impl Backend,
    req: &Request,
) -> Result<Bearer, ApiError> {
    let caller = match h::credential(req) {
        Some(token) if !token.starts_with(auth::KEY_PREFIX) => {
            match auth::verify_bearer(app.config(), token)? {
                Bearer::Host(host) => Bearer::Host(hosts::still_registered(app, host).await?),
                member => member,
            }
        }
        _ => Bearer::Member(identify(app, req).await?),
    };
    if !app.limiter().allow(caller.rate_key()).await {
        return Err(ApiError::too_many_requests(60));
    }
    Ok(caller)
}

/// The routes a machine calls without a credential are charged to the client's address
/// (`CF-Connecting-IP`, which Cloudflare sets and clients cannot) in the same limiter as keys.
/// Without that header (other runtimes, tests) nothing is charged.
async fn limit_anonymous(app: &impl Backend, req: &Request) -> Result<(), ApiError> {
    let ip = req
        .headers()
        .get("cf-connecting-ip")
        .and_then(|v| v.to_str().ok());
    match ip {
        Some(ip) if !app.limiter().allow(&format!("ip:{ip}")).await => {
            Err(ApiError::too_many_requests(60))
        }
        _ => Ok(()),
    }
}

/// Resolves the caller from an API key or a token (no rate limit: callers with their own
/// budget, such as the streams, apply it).
pub async fn identify(app: &impl Backend, req: &Request) -> Result<Principal, ApiError> {
    let cred = h::credential(req).ok_or_else(|| {
        ApiError::unauthorized(
            "send `Authorization: Bearer <api key or token>` or `X-API-Key: <api key>`",
        )
    })?;
    if cred.starts_with(auth::KEY_PREFIX) {
        key_principal(app, cred).await
    } else {
        auth::verify_token(app.config(), cred)
    }
}

async fn key_principal(app: &impl Backend, secret: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::unauthorized("invalid or revoked API key");
    if !auth::looks_like_key(secret) {
        return Err(invalid());
    }
    let k = directory::key_principal(app.db(), secret, now_ms())
        .await?
        .ok_or_else(invalid)?;
    Ok(Principal {
        org_id: k.org_id,
        member_id: k.member_id,
        user_id: k.user_id,
        role: k.role,
        key_id: k.key_id,
        credential: Credential::ApiKey {
            task_prefix: k.task_prefix,
        },
    })
}

/// Sends one operation to the caller's org object.
async fn org_call(app: &impl Backend, p: &Principal, op: OrgOp) -> Result<Vec<u8>, ApiError> {
    org_call_as(app, &p.org_id, &p.member_id, op).await
}

/// A call to the org's object on behalf of `actor` (a member, or a host).
async fn org_call_as(
    app: &impl Backend,
    org_id: &str,
    actor: &str,
    op: OrgOp,
) -> Result<Vec<u8>, ApiError> {
    app.orgs()
        .call(&OrgCall {
            org_id: org_id.to_owned(),
            actor: actor.to_owned(),
            op,
        })
        .await
}

/// An answer of the org's object (JSON we wrote): one that does not parse is our bug, a 500.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::internal(&e))
}

/// [`org_call`], its answer decoded.
async fn org_answer<T: serde::de::DeserializeOwned>(
    app: &impl Backend,
    p: &Principal,
    op: OrgOp,
) -> Result<T, ApiError> {
    decode(&org_call(app, p, op).await?)
}

/// [`org_call_as`], its answer decoded.
async fn org_answer_as<T: serde::de::DeserializeOwned>(
    app: &impl Backend,
    org_id: &str,
    actor: &str,
    op: OrgOp,
) -> Result<T, ApiError> {
    decode(&org_call_as(app, org_id, actor, op).await?)
}

/// The caller's org id in a path: any other org is "not found", never "forbidden".
fn own_org(p: &Principal, id: &str) -> Result<(), ApiError> {
    if id == p.org_id {
        Ok(())
    } else {
        Err(ApiError::not_found("org"))
    }
}

mod doc {
    use super::{
        auth_routes, automations, chat, hosts, keys, mcp, members, org_data, orgs, pairing,
        policies, policy_decisions, sessions, shape, webhooks,
    };
    use crate::public;
    use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
    use utoipa::{Modify, OpenApi};

    struct Security;

    impl Modify for Security {
        fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
            let c = openapi.components.get_or_insert_with(Default::default);
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("tk_ key or JWT")
                        .build(),
                ),
            );
            c.add_security_scheme(
                "api_key",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
            );
            c.add_security_scheme(
                "poll_token",
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("poll_token from POST /v1/pairing")
                        .build(),
                ),
            );
            c.add_security_scheme(
                "host_token",
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("host token from POST /v1/hosts/{id}/token")
                        .build(),
                ),
            );
            c.add_security_scheme(
                "bootstrap",
                SecurityScheme::Http(
                    Http::builder()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("BOOTSTRAP_TOKEN")
                        .build(),
                ),
            );
        }
    }

    #[derive(OpenApi)]
    #[openapi(
        info(
            title = "Tether API",
            description = "Start coding agents on your machines from anywhere. Every error answers \
                           `{\"error\": {\"code\", \"message\", \"details\"}}`.",
        ),
        paths(
            public::health, public::version, public::openapi,
            auth_routes::bootstrap, auth_routes::token, auth_routes::me,
            orgs::list, orgs::create, orgs::get, orgs::update, orgs::delete,
            members::list, members::create, members::get, members::update, members::delete,
            keys::list, keys::create, keys::get, keys::revoke,
            org_data::list_projects, org_data::create_project, org_data::get_project,
            org_data::update_project, org_data::delete_project,
            org_data::list_statuses, org_data::create_status, org_data::update_status, org_data::delete_status,
            org_data::list_tasks, org_data::create_task, org_data::get_task, org_data::update_task,
            org_data::delete_task,
            pairing::create, pairing::status, pairing::approve,
            hosts::list, hosts::get, hosts::info, hosts::command, hosts::speedtest, hosts::revoke, hosts::nonce, hosts::token,
            sessions::create, sessions::list, sessions::get, sessions::input, sessions::resize, sessions::stop,
            sessions::link, sessions::unlink, sessions::links, sessions::report, sessions::progress,
            sessions::update_own_task, sessions::worktrees, sessions::title,
            chat::message, chat::approve, chat::approvals,
            policies::list, policies::get, policies::wasm, policies::put, policies::update, policies::delete,
            policy_decisions::report, policy_decisions::list,
            mcp::audit,
            webhooks::list, webhooks::get, webhooks::create, webhooks::update, webhooks::delete,
            webhooks::rotate, webhooks::deliver,
            automations::list, automations::create, automations::get, automations::update,
            automations::delete, automations::pause, automations::resume, automations::run,
            automations::runs, automations::prompt, automations::set_prompt, automations::prompts,
            automations::rollback,
            shape::shape, shape::compact,
        ),
        modifiers(&Security),
    )]
    pub struct ApiDoc;
}

/// The OpenAPI document as JSON.
pub fn openapi_document() -> String {
    use utoipa::OpenApi;
    doc::ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests;
