//! `GET /v1/orgs/{org}/shape`: the org's rows as Electric shapes, so `@electric-sql/client`
//! (ShapeStream, Shape) and the daemon's mirror sync them and follow them live; and the admin's
//! `POST /v1/orgs/{org}/sync/compact`.
//!
//! Here the request is authenticated (a member, or one of the org's machines with its host
//! token), its query parsed strictly into a [`ShapeRead`] (every malformed parameter a 400),
//! and the response dressed in the protocol's headers. The org's object reads the change log
//! and holds live requests ([`tether_durable::sync`]). Hosts live in the directory: an
//! initial read of the `hosts` shape first reconciles the object's mirror with D1.

use super::{org_call_as, own_org};
use crate::auth::{Bearer, Principal, Role};
use crate::backend::{Backend, OrgStore};
use crate::directory::hosts;
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use std::collections::BTreeMap;
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::sync::filter::{Filter, MAX_PARAMS};
use tether_durable::sync::offset::{Handle, Offset};
use tether_durable::sync::table::Table;
use tether_durable::sync::{Compacted, MAX_CHANGES, ShapeRead, cursor, header};
use tether_durable::time::now_ms;

/// The longest value of any shape parameter other than `where` and `params[n]` (which have
/// their own caps).
const PARAM_VALUE_MAX: usize = 200;

/// A parsed shape request: what the object reads, and the client's cursor.
#[derive(Debug)]
struct ShapeQuery {
    read: ShapeRead,
    cursor: Option<String>,
}

fn bad(code: &str, param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message).with_details(serde_json::json!({ "param": param }))
}

/// Parses the query string. Parameters the client sends that change nothing here (`log`,
/// `replica`, `columns`: rows are always whole; the cache busters; the SSE switches: live
/// reads are long-polls) are ignored; any other unknown one is a 400.
fn parse(query: &str) -> Result<ShapeQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut params: BTreeMap<u32, String> = BTreeMap::new();
    for (name, value) in pairs {
        if let Some(n) = name
            .strip_prefix("params[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            let n = n
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PARAMS as u32).contains(n))
                .ok_or_else(|| {
                    bad(
                        "invalid_where",
                        &name,
                        format!("params are params[1] to params[{MAX_PARAMS}]"),
                    )
                })?;
            if params.insert(n, value).is_some() {
                return Err(bad(
                    "invalid_query",
                    &name,
                    format!("{name} is given twice"),
                ));
            }
            continue;
        }
        match name.as_str() {
            "table" | "where" | "offset" | "handle" | "live" | "cursor" => {
                if name != "where" && value.len() > PARAM_VALUE_MAX {
                    return Err(bad(
                        "invalid_query",
                        &name,
                        format!("{name} is at most {PARAM_VALUE_MAX} bytes"),
                    ));
                }
                if seen.contains_key(&name) {
                    return Err(bad(
                        "invalid_query",
                        &name,
                        format!("{name} is given twice"),
                    ));
                }
                seen.insert(name, value);
            }
            "log"
            | "replica"
            | "columns"
            | "cache-buster"
            | "expired_handle"
            | "live_sse"
            | "experimental_live_sse" => {}
            _ => {
                return Err(bad(
                    "invalid_query",
                    &name,
                    format!(
                        "unknown parameter `{name}`: a shape takes table, where, params[n], \
                         offset, handle, live and cursor"
                    ),
                ));
            }
        }
    }
    let tables = || {
        Table::ALL
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let table = match seen.get("table") {
        None => {
            return Err(bad(
                "invalid_table",
                "table",
                format!("table is required: one of {}", tables()),
            ));
        }
        Some(t) => Table::parse(t).ok_or_else(|| {
            bad(
                "invalid_table",
                "table",
                format!("no table `{t}` to sync: one of {}", tables()),
            )
        })?,
    };
    let filter = Filter::parse(table, seen.get("where").map(String::as_str), &params)
        .map_err(|e| bad("invalid_where", "where", e.message))?;
    let offset = match seen.get("offset") {
        None => Offset::Start,
        Some(o) => Offset::parse(o).ok_or_else(|| {
            bad(
                "invalid_offset",
                "offset",
                "offset is -1, now, or an electric-offset this server sent (<int>_<int>)",
            )
        })?,
    };
    let handle = seen
        .get("handle")
        .filter(|h| !h.is_empty())
        .map(|h| {
            Handle::parse(h).ok_or_else(|| {
                bad(
                    "invalid_handle",
                    "handle",
                    "handle is an electric-handle this server sent",
                )
            })
        })
        .transpose()?;
    if handle.is_none() && !matches!(offset, Offset::Start | Offset::Now) {
        return Err(bad(
            "invalid_handle",
            "handle",
            "a handle is required with an offset other than -1 or now",
        ));
    }
    let live = match seen.get("live").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("invalid_live", "live", "live is true or false")),
    };
    if live && !matches!(offset, Offset::Log(_)) {
        return Err(bad(
            "invalid_live",
            "live",
            "live=true needs the offset and handle of a response that was up to date",
        ));
    }
    Ok(ShapeQuery {
        read: ShapeRead {
            table,
            filter,
            offset,
            handle,
            live,
        },
        cursor: seen.remove("cursor"),
    })
}

fn set(res: &mut Response, name: &'static str, value: &str) -> Result<(), ApiError> {
    let value = HeaderValue::from_str(value).map_err(|e| ApiError::internal(&e))?;
    res.headers_mut()
        .insert(HeaderName::from_static(name), value);
    Ok(())
}

/// The org's rows of one table, then their changes: the Electric shape protocol
/// (long-poll live mode; `where` limited to `column = value` joined by AND).
#[utoipa::path(get, path = "/v1/orgs/{id}/shape", tag = "sync",
    params(
        ("id" = String, Path, description = "the caller's org"),
        ("table" = String, Query, description = "tasks, task_statuses, projects, hosts, sessions or automations (`public.` allowed)"),
        ("where" = Option<String>, Query, description = "`column = 'value'` or `column = $1` joined by AND, on id and the indexed references (tasks: status_id, project_id, assignee_id; sessions: host_id, project_id, status, task_id; automations: project_id); at most 1000 bytes"),
        ("offset" = Option<String>, Query, description = "-1 (default: a snapshot), now, or the last electric-offset"),
        ("handle" = Option<String>, Query, description = "the last electric-handle; required with an offset other than -1 and now"),
        ("live" = Option<bool>, Query, description = "wait (up to 20 s) for a change after an up-to-date offset"),
        ("cursor" = Option<String>, Query, description = "the last electric-cursor"),
    ),
    responses(
        (status = 200, description = "a JSON array of change and control messages, with the electric-handle, electric-offset, electric-schema (not live), electric-cursor (live) and electric-up-to-date headers"),
        (status = 400, body = ErrorBody, description = "a malformed table, where, params, offset, handle or live"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`[{\"headers\":{\"control\":\"must-refetch\"}}]`: the handle or offset is no longer served; restart at offset -1 with the new electric-handle"),
    ),
    security(("api_key" = []), ("bearer" = []), ("host_token" = [])))]
pub async fn shape(
    app: &impl Backend,
    caller: &Bearer,
    org_id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    if caller.org_id() != org_id {
        return Err(ApiError::not_found("org"));
    }
    let q = parse(req.uri().query().unwrap_or(""))?;
    if q.read.table == Table::Hosts && q.read.offset == Offset::Start {
        let hosts = hosts::mirror_hosts(app.db(), org_id).await?;
        org_call_as(app, org_id, caller.actor(), OrgOp::SyncHosts { hosts }).await?;
    }
    let chunk = app.orgs().shape(org_id, &q.read).await?;
    let meta = chunk.meta;
    let status = if meta.must_refetch {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    let mut res = h::json_bytes(status, chunk.body);
    set(&mut res, "access-control-expose-headers", header::EXPOSE)?;
    set(&mut res, header::HANDLE, &meta.handle)?;
    if meta.must_refetch {
        return Ok(res);
    }
    set(&mut res, header::OFFSET, &meta.offset)?;
    if q.read.live {
        set(
            &mut res,
            header::CURSOR,
            &cursor(now_ms(), q.cursor.as_deref()),
        )?;
    } else {
        set(&mut res, header::SCHEMA, &q.read.table.schema())?;
    }
    if meta.up_to_date {
        set(&mut res, header::UP_TO_DATE, "")?;
    }
    Ok(res)
}

/// What to keep of the change log.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompactRequest {
    /// Keep only the newest this many entries (0 allowed: readers behind the tail must then
    /// resync). Without it the usual rules apply: at most 100 000 entries, none older than 30
    /// days.
    pub keep: Option<i64>,
}

/// Compacts the org's change log now (admin). Shape readers whose offset needs a removed
/// entry get 409 must-refetch and resync.
#[utoipa::path(post, path = "/v1/orgs/{id}/sync/compact", tag = "sync",
    params(("id" = String, Path)), request_body(content = Option<CompactRequest>),
    responses((status = 200, body = Compacted), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn compact(
    app: &impl Backend,
    p: &Principal,
    org_id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    own_org(p, org_id)?;
    p.require(Role::Admin)?;
    let input: CompactRequest = if req.body().iter().all(u8::is_ascii_whitespace) {
        CompactRequest::default()
    } else {
        h::body(req)?
    };
    if let Some(keep) = input.keep
        && !(0..=MAX_CHANGES).contains(&keep)
    {
        return Err(ApiError::invalid("keep", format!("0 to {MAX_CHANGES}")));
    }
    let body = org_call_as(
        app,
        &p.org_id,
        &p.member_id,
        OrgOp::CompactChanges { keep: input.keep },
    )
    .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(q: &str) -> String {
        parse(q).unwrap_err().body.error.code
    }

    #[test]
    fn queries_parse_strictly() {
        let q = parse(
            "table=public.tasks&where=status_id%20%3D%20%241&params%5B1%5D=sts_1&offset=4_0\
             &handle=0123456789abcdef-2&live=true&cursor=7&log=full&columns=%22id%22\
             &cache-buster=x&expired_handle=y&replica=full",
        )
        .unwrap();
        assert_eq!(q.read.table, Table::Tasks);
        assert_eq!(
            q.read.filter.conditions(),
            [("status_id".into(), "sts_1".into())]
        );
        assert_eq!(q.read.offset, Offset::Log(4));
        assert!(q.read.live);
        assert_eq!(q.cursor.as_deref(), Some("7"));
        let q = parse("table=hosts").unwrap();
        assert_eq!((q.read.offset, q.read.live), (Offset::Start, false));
        assert!(parse("table=tasks&offset=now").is_ok());
        assert!(
            parse("table=tasks&offset=-1&handle=").is_ok(),
            "an empty handle is none"
        );

        assert_eq!(code(""), "invalid_table");
        assert_eq!(code("table=users"), "invalid_table");
        assert_eq!(code("table=tasks&where=title%3D%27x%27"), "invalid_where");
        assert_eq!(code("table=tasks&params%5B1%5D=x"), "invalid_where");
        assert_eq!(code("table=tasks&params%5B0%5D=x"), "invalid_where");
        assert_eq!(code("table=tasks&offset=abc"), "invalid_offset");
        assert_eq!(code("table=tasks&offset=3_0"), "invalid_handle");
        assert_eq!(code("table=tasks&offset=3_0&handle=nope"), "invalid_handle");
        assert_eq!(code("table=tasks&live=yes"), "invalid_live");
        assert_eq!(code("table=tasks&live=true"), "invalid_live");
        assert_eq!(
            code("table=tasks&live=true&offset=3_2&handle=0123456789abcdef-3"),
            "invalid_live"
        );
        assert_eq!(code("table=tasks&table=projects"), "invalid_query");
        assert_eq!(code("table=tasks&subset__limit=3"), "invalid_query");
        assert_eq!(code("table=tasks&bogus=1"), "invalid_query");
        assert_eq!(
            code(&format!("table=tasks&cursor={}", "1".repeat(300))),
            "invalid_query"
        );
    }
}
