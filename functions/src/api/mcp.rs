//! The MCP server at `/mcp`: streamable HTTP (MCP 2025-06-18), stateless, JSON answers only.
//!
//! A POST carries one JSON-RPC message or a batch; requests are answered in the response body,
//! notifications and responses alone get 202. There is no SSE stream (GET is 405) and no
//! session: every request authenticates like the REST API (`X-API-Key` or `Authorization:
//! Bearer`, an API key or a token), or with a machine's host token: the daemon's local MCP
//! server for the agents it runs calls these tools with member rights, recorded as the host. The protocol types are rmcp's; the dispatch is ours, since
//! rmcp's HTTP transport does not run on Workers.
//!
//! The tools ([`tools`]) call the REST handlers' own functions in process, so they answer
//! exactly what the API would, and every call passes [`audited`]: one row per call in the org's
//! audit trail (`GET /v1/mcp/audit`, admins).

mod tools;

use super::{authenticate_member_or_host, org_call};
use crate::auth::{Bearer, Principal, Role};
use crate::backend::Backend;
use crate::error::ApiError;
use crate::http::{self as h, MAX_BODY, Request, Response};
use http::{HeaderValue, Method, StatusCode, header};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ErrorCode, ErrorData, Implementation, InitializeResult,
    ListToolsResult, ProtocolVersion, ServerCapabilities, ToolsCapability,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tether_durable::error::ErrorBody;
use tether_durable::mcp::{ToolCallPage, ToolCallQuery, ToolCallReport};
use tether_durable::org::OrgOp;
use tether_durable::time::now_ms;

/// The protocol versions this server speaks: the newest first, then the older ones it also
/// answers (their messages differ from it in nothing this server uses).
const NEWEST: ProtocolVersion = ProtocolVersion::V_2025_06_18;
const OLDER: [ProtocolVersion; 2] = [ProtocolVersion::V_2025_03_26, ProtocolVersion::V_2024_11_05];

fn supported(version: &str) -> Option<ProtocolVersion> {
    std::iter::once(NEWEST)
        .chain(OLDER)
        .find(|v| v.to_string() == version)
}

/// The most messages one batch may carry.
const MAX_BATCH: usize = 50;

/// `POST /mcp` (and the answers to the other methods).
pub async fn serve(app: &impl Backend, req: &Request) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        let mut res = h::error(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST JSON-RPC messages: this server is stateless and offers no SSE stream",
        ));
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(res);
    }
    check_origin(req)?;
    let p = match authenticate_member_or_host(app, req).await? {
        Bearer::Member(p) => p,
        Bearer::Host(host) => Principal::for_host(&host),
    };
    check_headers(req)?;
    if req.body().len() > MAX_BODY {
        return Err(h::too_large(MAX_BODY));
    }
    let message: Value = match serde_json::from_slice(req.body()) {
        Ok(v) => v,
        Err(e) => {
            let error = rpc_error(
                Value::Null,
                ErrorData::new(ErrorCode::PARSE_ERROR, format!("malformed JSON: {e}"), None),
            );
            return Ok(h::json(StatusCode::BAD_REQUEST, &error));
        }
    };
    let answer = match message {
        Value::Array(batch) if batch.is_empty() || batch.len() > MAX_BATCH => {
            let error = ErrorData::new(
                ErrorCode::INVALID_REQUEST,
                format!("a batch holds 1 to {MAX_BATCH} messages"),
                None,
            );
            return Ok(h::json(
                StatusCode::BAD_REQUEST,
                &rpc_error(Value::Null, error),
            ));
        }
        Value::Array(batch) => {
            let mut answers = Vec::new();
            for m in batch {
                answers.extend(answer(app, &p, m).await);
            }
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        single => answer(app, &p, single).await,
    };
    Ok(match answer {
        Some(body) => h::json(StatusCode::OK, &body),
        None => accepted(),
    })
}

fn accepted() -> Response {
    let mut res = http::Response::new(Vec::new());
    *res.status_mut() = StatusCode::ACCEPTED;
    res
}

/// `Accept` must allow JSON (a missing one does), a body must be JSON, and a protocol version
/// header must name one this server speaks.
/// The host of a `scheme://host[:port]` origin or of a `Host` header, without the port.
fn host_of(value: &str) -> &str {
    let authority = value.split_once("://").map_or(value, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or("");
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "::1"
}

/// DNS-rebinding protection (the transport spec's MUST): a browser's request carries an
/// `Origin`, and only the server's own origin may send one, or, when the server itself is
/// reached on a loopback address (a local run), another local page such as the MCP
/// inspector. Programs that send no `Origin` are not browsers and pass.
fn check_origin(req: &Request) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let own = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str))
        .unwrap_or("");
    let (origin_host, own_host) = (host_of(origin), host_of(own));
    let same = !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(own_host);
    if same || (is_loopback(own_host) && is_loopback(origin_host)) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        format!("requests from the web origin {origin:?} are not accepted"),
    ))
}

fn check_headers(req: &Request) -> Result<(), ApiError> {
    if let Some(accept) = req.headers().get(header::ACCEPT) {
        let ok = accept.to_str().unwrap_or("").split(',').any(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t.eq_ignore_ascii_case("application/json")
                || t.eq_ignore_ascii_case("application/*")
                || t == "*/*"
        });
        if !ok {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                "this server answers application/json: accept it",
            ));
        }
    }
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let essence = ct.to_str().unwrap_or("").split(';').next().unwrap_or("");
        if !essence.trim().eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "JSON-RPC messages must be application/json",
            ));
        }
    }
    if let Some(v) = req.headers().get("mcp-protocol-version") {
        let v = v.to_str().unwrap_or("");
        if supported(v).is_none() {
            let known: Vec<String> = std::iter::once(NEWEST)
                .chain(OLDER)
                .map(|v| v.to_string())
                .collect();
            return Err(ApiError::bad_request(
                "unsupported_protocol_version",
                format!(
                    "MCP-Protocol-Version {v:?} is not supported; use one of {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn rpc_error(id: Value, error: ErrorData) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// The answer to one message: `None` for notifications and for responses (this server sends
/// no requests, so there is nothing to match them with).
async fn answer(app: &impl Backend, p: &Principal, message: Value) -> Option<Value> {
    let invalid = |id: Value, why: &str| {
        Some(rpc_error(
            id,
            ErrorData::new(ErrorCode::INVALID_REQUEST, why.to_owned(), None),
        ))
    };
    let Value::Object(mut m) = message else {
        return invalid(Value::Null, "a JSON-RPC message is an object");
    };
    let id = m.remove("id");
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(id.unwrap_or(Value::Null), "jsonrpc must be \"2.0\"");
    }
    let method = match m.remove("method") {
        Some(Value::String(method)) => method,
        None if id.is_some() && (m.contains_key("result") || m.contains_key("error")) => {
            return None;
        }
        _ => return invalid(id.unwrap_or(Value::Null), "method must be a string"),
    };
    let Some(id) = id else {
        // Notifications (initialized, cancelled, progress): nothing to do, nothing to say.
        return None;
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return invalid(Value::Null, "id must be a string or an integer");
    }
    let params = m.remove("params");
    Some(match dispatch(app, p, &method, params).await {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => rpc_error(id, error),
    })
}

fn invalid_params(message: impl Into<String>) -> ErrorData {
    ErrorData::new(ErrorCode::INVALID_PARAMS, message.into(), None)
}

fn to_value(v: impl serde::Serialize) -> Result<Value, ErrorData> {
    serde_json::to_value(v)
        .map_err(|e| ErrorData::new(ErrorCode::INTERNAL_ERROR, e.to_string(), None))
}

async fn dispatch(
    app: &impl Backend,
    p: &Principal,
    method: &str,
    params: Option<Value>,
) -> Result<Value, ErrorData> {
    match method {
        "initialize" => {
            let asked = params
                .as_ref()
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_params("initialize needs protocolVersion"))?;
            to_value(initialize(asked))
        }
        "ping" => Ok(json!({})),
        "tools/list" => {
            let mut list = ListToolsResult::with_all_items(tools::catalogue());
            // A field of protocol versions newer than the ones spoken here.
            list.result_type = None;
            to_value(list)
        }
        "tools/call" => {
            let call: CallToolRequestParams = serde_json::from_value(params.unwrap_or(Value::Null))
                .map_err(|e| invalid_params(format!("tools/call: {e}")))?;
            let args = call.arguments.unwrap_or_default();
            to_value(audited(app, p, &call.name, args).await?)
        }
        _ => Err(ErrorData::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!("no method {method:?}"),
            None,
        )),
    }
}

/// The client's version when this server speaks it, else the newest this server does.
fn initialize(asked: &str) -> InitializeResult {
    let mut capabilities = ServerCapabilities::default();
    // The tool list is fixed: it never changes under a client.
    let mut tools = ToolsCapability::default();
    tools.list_changed = Some(false);
    capabilities.tools = Some(tools);
    InitializeResult::new(capabilities)
        .with_protocol_version(supported(asked).unwrap_or(NEWEST))
        .with_server_info(Implementation::new("tether", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Tether: your org's tasks, projects and members, its machines (hosts) with their \
             worktrees, and the coding-agent sessions running on them.",
        )
}

/// The one audit hook every tool call passes: the call runs, then its record (member, tool,
/// argument digest, outcome, duration) goes to the org's trail. A failed record is logged and
/// never fails the call.
async fn audited(
    app: &impl Backend,
    p: &Principal,
    name: &str,
    args: Map<String, Value>,
) -> Result<CallToolResult, ErrorData> {
    let args_sha256 = hex::encode(Sha256::digest(canonical_json(&Value::Object(args.clone()))));
    let started = now_ms();
    let result = tools::call(app, p, name, args).await;
    let outcome = match &result {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => e.body.error.code.clone(),
        Err(_) => "unknown_tool".to_owned(),
    };
    let report = ToolCallReport {
        tool: name.to_owned(),
        args_sha256,
        outcome,
        duration_ms: u64::try_from(now_ms() - started).unwrap_or(0),
    };
    if let Err(e) = org_call(app, p, OrgOp::RecordToolCall(report)).await {
        tracing::warn!(tool = name, error = %e, "recording an MCP tool call failed");
    }
    Ok(tools::result(result?))
}

/// JSON with object keys sorted and no insignificant whitespace, so equal arguments always
/// hash alike.
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(v) = m.get(k) {
                        write(v, out);
                    }
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The org's MCP tool calls, newest first (admin).
#[utoipa::path(get, path = "/v1/mcp/audit", tag = "mcp", params(ToolCallQuery),
    responses((status = 200, body = ToolCallPage), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn audit(app: &impl Backend, p: &Principal, req: &Request) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let q: ToolCallQuery = h::query(req)?;
    Ok(h::json_bytes(
        StatusCode::OK,
        org_call(app, p, OrgOp::ListToolCalls(q)).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(host: &str, origin: Option<&str>) -> Request {
        let mut b = http::Request::builder()
            .method("POST")
            .uri("/mcp")
            .header(header::HOST, host);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(Vec::new()).unwrap_or_default()
    }

    #[test]
    fn only_the_servers_own_or_a_local_origin_is_accepted() {
        let ok = |host: &str, origin: Option<&str>| check_origin(&from(host, origin)).is_ok();
        assert!(ok("tether.example.com", None), "not a browser");
        assert!(ok("tether.example.com", Some("https://tether.example.com")));
        assert!(!ok("tether.example.com", Some("https://evil.example")));
        assert!(!ok("tether.example.com", Some("http://localhost:6274")));
        assert!(ok("127.0.0.1:8787", Some("http://localhost:6274")));
        assert!(ok("[::1]:8787", Some("http://127.0.0.1:3000")));
        assert!(!ok("127.0.0.1:8787", Some("http://evil.example")));
        assert!(!ok("127.0.0.1:8787", Some("null")));
        assert_eq!(
            check_origin(&from("127.0.0.1", Some("http://evil.example")))
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": "x"}], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"c":"x","d":2}]},"b":1}"#
        );
    }

    #[test]
    fn versions_are_negotiated() {
        assert_eq!(
            initialize("2025-03-26").protocol_version.to_string(),
            "2025-03-26"
        );
        assert_eq!(initialize("1999-01-01").protocol_version, NEWEST);
    }
}
