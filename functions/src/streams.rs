//! The edge's half of session streams: which stream a request names and whether the caller may
//! do that to it. The protocol itself is served by the stream's Durable Object
//! (`tether_durable::stream`); the Worker forwards the request there once this says yes.
//!
//! Permissions by role: every member may read, create, append to and close the org's streams;
//! deleting one (which destroys a session's record) needs an admin. A host (its host token)
//! reads and writes only its own sessions' streams. Another org's stream is never reachable:
//! the object a request goes to is named by the caller's own org.

use crate::auth::{self, Principal, Role};
use crate::backend::Backend;
use crate::error::ApiError;
use crate::http::{self as h, Request};
use http::Method;
use tether_durable::session::host_stream_prefix;
use tether_durable::stream::{PATH_PREFIX, valid_path};

/// Who is calling a stream route: a member (API key or token), or a host with its host token,
/// which reads and writes only the streams under `hosts/<its id>/` (its sessions' terminals).
pub use auth::Bearer as StreamCaller;

/// Resolves a member's key or either kind of token. A token is checked by signature and expiry
/// only, with one verification (no database read on the hot path of every append), so a host
/// token, like a member token, outlives a revocation by at most its 15 minutes.
pub async fn identify(app: &impl Backend, req: &Request) -> Result<StreamCaller, ApiError> {
    match h::credential(req) {
        Some(token) if !token.starts_with(auth::KEY_PREFIX) => {
            auth::verify_bearer(app.config(), token)
        }
        _ => crate::api::identify(app, req)
            .await
            .map(StreamCaller::Member),
    }
}

/// The stream a request is for, in the caller's org.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRoute {
    pub org_id: String,
    /// The path under `/v1/stream/`.
    pub path: String,
    /// The member acting.
    pub actor: String,
}

/// True for every path the streams protocol owns.
pub fn is_stream_path(path: &str) -> bool {
    path.starts_with(PATH_PREFIX) || path == PATH_PREFIX.trim_end_matches('/')
}

/// Checks the path and the caller's permission for `method`.
pub fn authorize(
    caller: &StreamCaller,
    method: &Method,
    path: &str,
) -> Result<StreamRoute, ApiError> {
    match caller {
        StreamCaller::Member(p) => authorize_member(p, method, path),
        StreamCaller::Host(host) => {
            let name = stream_name(path)?;
            if !name.starts_with(&host_stream_prefix(&host.host_id)) {
                return Err(ApiError::forbidden(
                    "a host reads and writes only its own sessions' streams",
                ));
            }
            if !matches!(
                *method,
                Method::GET | Method::HEAD | Method::PUT | Method::POST
            ) {
                return Err(ApiError::forbidden("a host cannot delete streams"));
            }
            Ok(StreamRoute {
                org_id: host.org_id.clone(),
                path: name.to_owned(),
                actor: host.host_id.clone(),
            })
        }
    }
}

fn stream_name(path: &str) -> Result<&str, ApiError> {
    path.strip_prefix(PATH_PREFIX)
        .filter(|n| valid_path(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_stream_path",
                format!(
                    "a stream path is {PATH_PREFIX} and 1 to {} bytes of URL-safe segments",
                    tether_durable::stream::MAX_PATH
                ),
            )
        })
}

fn authorize_member(p: &Principal, method: &Method, path: &str) -> Result<StreamRoute, ApiError> {
    let name = stream_name(path)?;
    if method == Method::DELETE {
        p.require(Role::Admin)?;
    }
    Ok(StreamRoute {
        org_id: p.org_id.clone(),
        path: name.to_owned(),
        actor: p.member_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;

    fn principal(role: Role) -> StreamCaller {
        StreamCaller::Member(Principal {
            org_id: "org_a".into(),
            member_id: "mem_a".into(),
            user_id: "usr_a".into(),
            role,
            key_id: "key_a".into(),
            credential: Credential::Token,
        })
    }

    #[test]
    fn a_host_reaches_only_its_own_streams_and_deletes_none() {
        let host = StreamCaller::Host(crate::auth::HostPrincipal {
            host_id: "hst_a".into(),
            org_id: "org_a".into(),
        });
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::POST] {
            let r = authorize(&host, &m, "/v1/stream/hosts/hst_a/sessions/s/terminal").unwrap();
            assert_eq!((r.org_id.as_str(), r.actor.as_str()), ("org_a", "hst_a"));
        }
        for other in [
            "/v1/stream/hosts/hst_b/sessions/s",
            "/v1/stream/hosts/hst_ab/x",
            "/v1/stream/x",
        ] {
            assert_eq!(
                authorize(&host, &Method::POST, other)
                    .unwrap_err()
                    .status
                    .as_u16(),
                403,
                "{other}"
            );
        }
        let e = authorize(&host, &Method::DELETE, "/v1/stream/hosts/hst_a/x").unwrap_err();
        assert_eq!(e.status.as_u16(), 403);
    }

    #[test]
    fn members_read_and_write_admins_delete() {
        let member = principal(Role::Member);
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::POST] {
            let r = authorize(&member, &m, "/v1/stream/sessions/s1").unwrap();
            assert_eq!(
                (r.org_id.as_str(), r.path.as_str()),
                ("org_a", "sessions/s1")
            );
        }
        let e = authorize(&member, &Method::DELETE, "/v1/stream/s").unwrap_err();
        assert_eq!(e.status.as_u16(), 403);
        assert!(authorize(&principal(Role::Admin), &Method::DELETE, "/v1/stream/s").is_ok());
    }

    #[test]
    fn malformed_paths_are_400() {
        let p = principal(Role::Owner);
        for bad in [
            "/v1/stream/",
            "/v1/stream/a//b",
            "/v1/stream/../x",
            "/v1/streamx",
        ] {
            assert_eq!(
                authorize(&p, &Method::GET, bad)
                    .unwrap_err()
                    .status
                    .as_u16(),
                400,
                "{bad}"
            );
        }
        assert!(is_stream_path("/v1/stream") && is_stream_path("/v1/stream/x"));
        assert!(!is_stream_path("/v1/streams"));
    }
}
