//! The daemon's side of the agents' MCP servers: it answers their `tools/list` and `tools/call`
//! (over the control socket, for sessions it runs) by calling the edge with the host token.
//!
//! - The org's tools: JSON-RPC to the edge's `POST /mcp`, whose `result` or `error` passes
//!   through as is. The edge lists the same tools for a host as for a member.
//! - The session tools ([`session_tools`]): the host's own session routes.
//! - The org's read tools, when the daemon mirrors the org ([`mirror_tools`]): answered from
//!   the mirror, with how stale it is; the edge answers what the mirror cannot.
//!
//! The agent is told what went wrong in the API's error shape (`{"error": {"code",
//! "message"}}`) as a tool result with `isError`, whether the edge refused (its own body) or
//! could not be reached. When the edge cannot list its tools, the list is the one it gave last
//! (kept in the state database), or the session tools alone before it ever gave one, so an
//! agent that starts while the network is down still gets a working server whose read tools
//! answer from the mirror.

use super::mirror_tools;
use super::session_tools::{self, SessionTool};
use super::{CALL_TOOL, LIST_TOOLS, McpAnswer};
use crate::host_auth::{HostAuth, TokenError};
use crate::mirror::Mirror;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorCode, ErrorData, ListToolsResult,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tether_durable::error::ErrorBody;
use tracing::{debug, warn};

/// The MCP version the relay speaks to the edge (stateless HTTP, no `initialize` needed).
const PROTOCOL_VERSION: &str = "2025-06-18";
/// How much of a non-JSON error body goes into the message.
const ERROR_BODY_CHARS: usize = 300;
/// The `kv` key of the org's tool list as the edge last gave it (JSON), for offline starts.
const TOOLS_KEY: &str = "mcp_tools";
/// A tool list bigger than this is not kept (the edge's is about 30 KB).
const TOOLS_MAX_BYTES: usize = 1 << 20;

/// Why the edge gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum EdgeError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the Tether server did not answer: {0}")]
    Transport(#[source] reqwest::Error),
    /// An error status, with the body the edge sent (the API's JSON error, normally).
    #[error("HTTP {status}")]
    Status { status: u16, body: String },
    #[error("the Tether server's answer is not a JSON-RPC response: {0}")]
    Answer(#[source] serde_json::Error),
}

impl EdgeError {
    /// What the agent is told, in the API's error shape.
    fn body(&self) -> String {
        let body = match self {
            Self::Status { body, .. } if serde_json::from_str::<ErrorBody>(body).is_ok() => {
                return body.clone();
            }
            Self::Status { status, body } => ErrorBody::new(
                "edge_error",
                format!(
                    "the Tether server answered HTTP {status}: {}",
                    body.chars().take(ERROR_BODY_CHARS).collect::<String>()
                ),
            ),
            Self::Token(TokenError::Unreachable(_)) | Self::Transport(_) => {
                ErrorBody::new("edge_unreachable", self.to_string())
            }
            Self::Token(e) => ErrorBody::new("host_token", e.to_string()),
            Self::Answer(_) => ErrorBody::new("edge_error", self.to_string()),
        };
        serde_json::to_string(&body).unwrap_or_else(|_| self.to_string())
    }
}

/// A JSON-RPC response from the edge.
#[derive(Deserialize)]
struct RpcResponse {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<ErrorData>,
}

/// Answers the agents' MCP requests with the edge's help.
pub struct Relay {
    auth: Arc<HostAuth>,
    http: reqwest::Client,
    mirror: Option<Arc<Mirror>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// `http` is the daemon's client for the edge's API.
    pub fn new(auth: Arc<HostAuth>, http: reqwest::Client) -> Self {
        Self {
            auth,
            http,
            mirror: None,
        }
    }

    /// Answers the org's read tools from `mirror` (and keeps the tool list for offline starts
    /// in its database).
    pub fn with_mirror(mut self, mirror: Option<Arc<Mirror>>) -> Self {
        self.mirror = mirror;
        self
    }

    /// The answer to `method` with `params` for session `session`, which the caller has
    /// checked runs on this daemon.
    #[tracing::instrument(name = "mcp", skip(self, params), fields(session = %session))]
    pub async fn answer(&self, session: &str, method: &str, params: Value) -> McpAnswer {
        match method {
            LIST_TOOLS => self.list_tools().await,
            CALL_TOOL => self.call_tool(session, params).await,
            _ => McpAnswer::Error(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("no method {method:?} (the daemon relays tools/list and tools/call)"),
                None,
            )),
        }
    }

    /// The org's tools, then the session's.
    async fn list_tools(&self) -> McpAnswer {
        let edge = match self.rpc(LIST_TOOLS, None).await {
            Ok(Ok(result)) => match serde_json::from_value::<ListToolsResult>(result) {
                Ok(list) => {
                    self.keep_tools(&list.tools).await;
                    Some(list.tools)
                }
                Err(e) => {
                    warn!(error = %e, "the edge's tool list is not understood");
                    None
                }
            },
            Ok(Err(e)) => {
                warn!(code = e.code.0, message = %e.message, "the edge refused to list its tools");
                None
            }
            Err(e) => {
                warn!(error = %e, "the org's MCP tools are unavailable");
                None
            }
        };
        let mut tools = match edge {
            Some(tools) => tools,
            None => self.kept_tools().await.unwrap_or_default(),
        };
        tools.retain(|t| !session_tools::is_session_tool(&t.name));
        tools.extend(session_tools::tools());
        result(&ListToolsResult::with_all_items(tools))
    }

    /// Keeps the edge's tool list for when it cannot be asked.
    async fn keep_tools(&self, tools: &[rmcp::model::Tool]) {
        let Some(mirror) = &self.mirror else { return };
        let Ok(text) = serde_json::to_string(tools) else {
            return;
        };
        if text.len() > TOOLS_MAX_BYTES {
            return;
        }
        let state = mirror.state();
        if state.get(TOOLS_KEY).await.ok().flatten().as_deref() != Some(text.as_str())
            && let Err(e) = state.set(TOOLS_KEY, &text).await
        {
            warn!(error = %e, "keeping the org's tool list failed");
        }
    }

    /// The tool list the edge gave last, if the daemon kept one.
    async fn kept_tools(&self) -> Option<Vec<rmcp::model::Tool>> {
        let text = self.mirror.as_ref()?.state().get(TOOLS_KEY).await.ok()??;
        let tools = serde_json::from_str(&text).ok()?;
        debug!("listing the org's tools as the edge gave them last");
        Some(tools)
    }

    async fn call_tool(&self, session: &str, params: Value) -> McpAnswer {
        let call: CallToolRequestParams = match serde_json::from_value(params) {
            Ok(call) => call,
            Err(e) => {
                return McpAnswer::Error(ErrorData::invalid_params(
                    format!("tools/call: {e}"),
                    None,
                ));
            }
        };
        let args = call.arguments.clone().unwrap_or_default();
        let mut from_mirror = false;
        let answer = match SessionTool::parse(&call.name, args.clone()) {
            Some(Ok(tool)) => result(&self.session_tool(session, &tool).await),
            Some(Err(e)) => result(&tool_error(&ErrorBody::new(
                "invalid_arguments",
                format!("{}: {e}", call.name),
            ))),
            None => match self.mirror_answer(&call.name, &args).await {
                Some(answer) => {
                    from_mirror = true;
                    answer
                }
                None => self.org_tool(&call).await,
            },
        };
        let failed = match &answer {
            McpAnswer::Result(v) => v.get("isError") == Some(&Value::Bool(true)),
            McpAnswer::Error(_) => true,
        };
        debug!(tool = %call.name, failed, from_mirror, "MCP tool call");
        answer
    }

    /// A read tool answered from the mirror, if the daemon has one and it can.
    async fn mirror_answer(
        &self,
        tool: &str,
        args: &serde_json::Map<String, Value>,
    ) -> Option<McpAnswer> {
        let answer = mirror_tools::answer(self.mirror.as_ref()?, tool, args).await?;
        Some(result(&CallToolResult::success(vec![ContentBlock::text(
            answer.to_string(),
        )])))
    }

    /// A tool of the org's, called at the edge.
    async fn org_tool(&self, call: &CallToolRequestParams) -> McpAnswer {
        let params = json!({
            "name": call.name,
            "arguments": call.arguments.clone().unwrap_or_default(),
        });
        match self.rpc(CALL_TOOL, Some(params)).await {
            Ok(Ok(result)) => McpAnswer::Result(result),
            Ok(Err(error)) => McpAnswer::Error(error),
            Err(e) => result(&tool_error_text(e.body())),
        }
    }

    /// A session tool: the host's route for this session.
    async fn session_tool(&self, session: &str, tool: &SessionTool) -> CallToolResult {
        let body = match tool.body() {
            Ok(body) => body,
            Err(e) => return tool_error(&ErrorBody::new("invalid_arguments", e.to_string())),
        };
        let (method, last) = tool.route();
        let url = format!(
            "{}/v1/hosts/{}/sessions/{session}/{last}",
            self.auth.server, self.auth.host_id
        );
        let sent = self
            .send(|token| {
                self.http
                    .request(method.clone(), &url)
                    .bearer_auth(token)
                    .json(&body)
            })
            .await;
        match sent {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(e) => tool_error_text(e.body()),
        }
    }

    /// One JSON-RPC request to the edge's `/mcp`: its `result`, or its `error`.
    async fn rpc(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Result<Value, ErrorData>, EdgeError> {
        let mut message = json!({"jsonrpc": "2.0", "id": 1, "method": method});
        if let (Some(params), Some(m)) = (params, message.as_object_mut()) {
            m.insert("params".into(), params);
        }
        let url = format!("{}/mcp", self.auth.server);
        let text = self
            .send(|token| {
                self.http
                    .post(&url)
                    .bearer_auth(token)
                    .header(CONTENT_TYPE, "application/json")
                    .header(ACCEPT, "application/json")
                    .header("mcp-protocol-version", PROTOCOL_VERSION)
                    .body(message.to_string())
            })
            .await?;
        let response: RpcResponse = serde_json::from_str(&text).map_err(EdgeError::Answer)?;
        match (response.result, response.error) {
            (_, Some(error)) => Ok(Err(error)),
            (Some(result), None) => Ok(Ok(result)),
            (None, None) => Err(EdgeError::Answer(serde::de::Error::custom(
                "neither result nor error",
            ))),
        }
    }

    /// Sends the request `build` makes with a host token, and answers the body of a success.
    /// A refused token (401) is dropped and the request sent once more with a fresh one.
    async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<String, EdgeError> {
        let mut retried = false;
        loop {
            let token = self.auth.token().await?;
            let res = build(&token).send().await.map_err(EdgeError::Transport)?;
            let status = res.status();
            let body = res.text().await.map_err(EdgeError::Transport)?;
            if status.is_success() {
                return Ok(body);
            }
            if status == reqwest::StatusCode::UNAUTHORIZED && !retried {
                self.auth.invalidate();
                retried = true;
                continue;
            }
            return Err(EdgeError::Status {
                status: status.as_u16(),
                body,
            });
        }
    }
}

/// A failed tool call whose text is the API's error JSON, so the model sees what went wrong.
fn tool_error(body: &ErrorBody) -> CallToolResult {
    tool_error_text(serde_json::to_string(body).unwrap_or_else(|_| body.error.message.clone()))
}

fn tool_error_text(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn result(value: &impl serde::Serialize) -> McpAnswer {
    match serde_json::to_value(value) {
        Ok(v) => McpAnswer::Result(v),
        Err(e) => McpAnswer::Error(ErrorData::internal_error(e.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::identity::Identity;

    /// A relay whose edge is not there (nothing listens on the discard port).
    fn offline() -> Relay {
        let http = reqwest::Client::new();
        let auth = HostAuth::new(
            "http://127.0.0.1:9",
            "hst_1",
            Identity::generate().unwrap(),
            http.clone(),
        );
        Relay::new(Arc::new(auth), http)
    }

    fn tool_text(answer: &McpAnswer) -> (bool, String) {
        let McpAnswer::Result(v) = answer else {
            panic!("{answer:?}");
        };
        let r: CallToolResult = serde_json::from_value(v.clone()).unwrap();
        let text = r
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        (r.is_error == Some(true), text)
    }

    #[tokio::test]
    async fn without_the_edge_the_session_tools_are_listed_and_calls_fail_as_tool_errors() {
        let relay = offline();
        let McpAnswer::Result(list) = relay.answer("ses_1", LIST_TOOLS, Value::Null).await else {
            panic!("no list");
        };
        let list: ListToolsResult = serde_json::from_value(list).unwrap();
        let names: Vec<&str> = list.tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [session_tools::REPORT_PROGRESS, session_tools::UPDATE_TASK]
        );

        // The org's tools and the session's: the agent reads why in the API's error shape.
        for (name, args) in [
            ("tasks_list", json!({})),
            (
                session_tools::REPORT_PROGRESS,
                json!({"message": "half way"}),
            ),
        ] {
            let answer = relay
                .answer("ses_1", CALL_TOOL, json!({"name": name, "arguments": args}))
                .await;
            let (failed, text) = tool_text(&answer);
            assert!(failed, "{text}");
            let body: ErrorBody = serde_json::from_str(&text).unwrap();
            assert_eq!(body.error.code, "edge_unreachable", "{text}");
        }

        // Arguments that do not fit are refused before anything is sent.
        let answer = relay
            .answer(
                "ses_1",
                CALL_TOOL,
                json!({"name": session_tools::UPDATE_TASK, "arguments": {"priority": "soon"}}),
            )
            .await;
        let (failed, text) = tool_text(&answer);
        assert!(failed && text.contains("invalid_arguments"), "{text}");

        // Protocol errors stay protocol errors.
        let answer = relay.answer("ses_1", "resources/list", Value::Null).await;
        assert!(
            matches!(&answer, McpAnswer::Error(e) if e.code == ErrorCode::METHOD_NOT_FOUND),
            "{answer:?}"
        );
        let answer = relay.answer("ses_1", CALL_TOOL, json!({"nom": 1})).await;
        assert!(
            matches!(&answer, McpAnswer::Error(e) if e.code == ErrorCode::INVALID_PARAMS),
            "{answer:?}"
        );
    }

    #[tokio::test]
    async fn offline_the_read_tools_answer_from_the_mirror_and_the_kept_list_is_offered() {
        use crate::mirror::protocol::Message;
        use crate::mirror::store::Batch;
        let dir = tempfile::tempdir().unwrap();
        let mirror = Arc::new(Mirror::open(&dir.path().join("state.db")).await.unwrap());
        let relay = offline().with_mirror(Some(mirror.clone()));
        for (table, row) in [
            (
                "task_statuses",
                json!({"id": "sts_1", "name": "Todo", "category": "unstarted"}),
            ),
            (
                "tasks",
                json!({"id": "tsk_1", "number": "1", "slug": "T-1", "status_id": "sts_1"}),
            ),
        ] {
            let batch = Batch {
                handle: "h".into(),
                offset: "1_0".into(),
                messages: vec![
                    Message::Insert {
                        key: "k".into(),
                        value: row.as_object().unwrap().clone(),
                    },
                    Message::UpToDate,
                ],
                ..Batch::default()
            };
            mirror.apply(table, &batch).await.unwrap();
        }
        let answer = relay
            .answer(
                "ses_1",
                CALL_TOOL,
                json!({"name": "tasks_list", "arguments": {}}),
            )
            .await;
        let (failed, text) = tool_text(&answer);
        assert!(!failed, "{text}");
        let list: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(list["data"][0]["slug"], "T-1", "{list}");
        assert_eq!(list["mirror"]["live"], true, "{list}");
        // A write still needs the edge.
        let answer = relay
            .answer(
                "ses_1",
                CALL_TOOL,
                json!({"name": "tasks_create", "arguments": {"title": "x"}}),
            )
            .await;
        let (failed, text) = tool_text(&answer);
        assert!(failed && text.contains("edge_unreachable"), "{text}");

        // The list the edge gave last is offered while it cannot be asked.
        let kept = vec![rmcp::model::Tool::new(
            "tasks_list",
            "List tasks",
            Arc::new(serde_json::Map::new()),
        )];
        mirror
            .state()
            .set(TOOLS_KEY, &serde_json::to_string(&kept).unwrap())
            .await
            .unwrap();
        let McpAnswer::Result(list) = relay.answer("ses_1", LIST_TOOLS, Value::Null).await else {
            panic!("no list");
        };
        let list: ListToolsResult = serde_json::from_value(list).unwrap();
        let names: Vec<&str> = list.tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "tasks_list",
                session_tools::REPORT_PROGRESS,
                session_tools::UPDATE_TASK
            ]
        );
    }

    #[test]
    fn the_edges_error_bodies_reach_the_agent_as_they_are() {
        let api =
            r#"{"error":{"code":"no_task","message":"this session was started without a task"}}"#;
        let e = EdgeError::Status {
            status: 409,
            body: api.into(),
        };
        assert_eq!(e.body(), api);
        let e = EdgeError::Status {
            status: 502,
            body: "<html>bad gateway</html>".into(),
        };
        let body: ErrorBody = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(body.error.code, "edge_error");
        assert!(body.error.message.contains("HTTP 502: <html>bad gateway"));
    }
}
