//! `tether mcp`: the stdio MCP server an agent starts for its session (rmcp's server side over
//! newline-delimited JSON-RPC on stdin/stdout).
//!
//! It answers `initialize` itself (server `tether-local`, tools only) and forwards `tools/list`
//! and `tools/call` to the daemon's control socket as [`Request::Mcp`], blocking calls run off
//! the async threads. It holds no credential and keeps no state: the daemon checks that the
//! session runs there and calls the edge with the host's token. When the daemon cannot be
//! reached, the list holds the session tools and every call answers a tool error saying so;
//! the server itself never fails a request for it.

use super::session_tools;
use super::{CALL_TOOL, LIST_TOOLS, McpAnswer};
use crate::control::{self, ClientError, Request};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, ServerInitializeError};
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tether_durable::error::ErrorBody;
use tracing::warn;

/// The server's name in `initialize`.
pub const SERVER_NAME: &str = "tether-local";
/// How long the daemon may take to answer: it may fetch a host token and then call the edge,
/// each with its own timeout.
const WAIT: Duration = Duration::from_secs(120);

const INSTRUCTIONS: &str = "Tether, for the coding agent it launched on this machine: your \
    org's tasks, projects, members, machines and agent sessions, and two tools for this \
    session: session_report_progress (tell the people following it how far you got) and \
    session_update_task (change the task you were started for, e.g. its status when done).";

/// Why the server stopped before its client went away.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// (Boxed: rmcp's error carries a whole message.)
    #[error("the MCP handshake failed")]
    Initialize(#[source] Box<ServerInitializeError>),
    #[error("the MCP server stopped")]
    Stopped(#[source] tokio::task::JoinError),
}

/// The MCP server of one session.
#[derive(Debug, Clone)]
pub struct LocalServer {
    session: String,
    socket: PathBuf,
}

impl LocalServer {
    /// The server of session `session`, asking the daemon at `socket` (its control socket).
    pub fn new(session: impl Into<String>, socket: impl Into<PathBuf>) -> Self {
        Self {
            session: session.into(),
            socket: socket.into(),
        }
    }

    /// Serves MCP on stdin/stdout until the client closes them.
    pub async fn serve_stdio(self) -> Result<(), ServeError> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| ServeError::Initialize(Box::new(e)))?;
        running.waiting().await.map_err(ServeError::Stopped)?;
        Ok(())
    }

    /// Asks the daemon (a blocking socket call, on the blocking pool).
    async fn ask(&self, method: &str, params: Value) -> Result<McpAnswer, ClientError> {
        let socket = self.socket.clone();
        let request = Request::Mcp {
            session: self.session.clone(),
            method: method.to_owned(),
            params,
        };
        tokio::task::spawn_blocking(move || control::call::<McpAnswer>(&socket, &request, WAIT))
            .await
            .unwrap_or_else(|e| Err(ClientError::Io(std::io::Error::other(e))))
    }
}

fn not_understood(e: &serde_json::Error) -> ErrorData {
    ErrorData::internal_error(format!("the daemon's answer is not understood: {e}"), None)
}

/// The tool error an agent gets when the daemon cannot be asked.
fn daemon_unavailable(e: &ClientError) -> CallToolResult {
    let body = ErrorBody::new(
        "daemon_unavailable",
        format!(
            "{e}: Tether's tools go through the tether daemon on this machine; it must run \
             (`tether up`, or `tether service install`)"
        ),
    );
    let text = serde_json::to_string(&body).unwrap_or_else(|_| e.to_string());
    CallToolResult::error(vec![ContentBlock::text(text)])
}

impl ServerHandler for LocalServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        match self.ask(LIST_TOOLS, Value::Null).await {
            Ok(McpAnswer::Result(v)) => serde_json::from_value(v).map_err(|e| not_understood(&e)),
            Ok(McpAnswer::Error(e)) => Err(e),
            Err(e) => {
                warn!(error = %e, "the daemon cannot be asked; listing the session tools only");
                Ok(ListToolsResult::with_all_items(session_tools::tools()))
            }
        }
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let params = serde_json::to_value(&request).map_err(|e| not_understood(&e))?;
        match self.ask(CALL_TOOL, params).await {
            Ok(McpAnswer::Result(v)) => serde_json::from_value::<CallToolResult>(v)
                .map(Into::into)
                .map_err(|e| not_understood(&e)),
            Ok(McpAnswer::Error(e)) => Err(e),
            Err(e) => Ok(daemon_unavailable(&e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// Speaks to the server as an agent does: one JSON-RPC message per line.
    struct Client {
        to: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        from: tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    }

    impl Client {
        async fn send(&mut self, message: Value) {
            let line = format!("{message}\n");
            self.to.write_all(line.as_bytes()).await.unwrap();
        }

        async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
            self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
                .await;
            loop {
                let line = self.from.next_line().await.unwrap().expect("an answer");
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
        }
    }

    impl Client {
        /// The handshake: `initialize`, then `notifications/initialized`.
        async fn initialize(&mut self) -> Value {
            let init = self
                .request(
                    0,
                    "initialize",
                    json!({"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "claude-code", "version": "2.0.0"}}),
                )
                .await;
            self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                .await;
            init
        }
    }

    fn start(server: LocalServer) -> Client {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            if let Ok(running) = server.serve(theirs).await {
                let _ = running.waiting().await;
            }
        });
        let (read, write) = tokio::io::split(ours);
        Client {
            to: write,
            from: BufReader::new(read).lines(),
        }
    }

    #[tokio::test]
    async fn without_a_daemon_it_lists_the_session_tools_and_calls_fail_as_tool_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut client = start(LocalServer::new("ses_1", dir.path().join("control.sock")));
        let init = client.initialize().await;
        let result = &init["result"];
        assert_eq!(result["serverInfo"]["name"], SERVER_NAME, "{init}");
        assert_eq!(result["protocolVersion"], "2025-06-18");
        assert!(result["capabilities"]["tools"].is_object(), "{init}");

        let list = client.request(2, "tools/list", json!({})).await;
        let names: Vec<&str> = list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["session_report_progress", "session_update_task"]);
        assert_eq!(
            list["result"]["tools"][0]["inputSchema"]["required"],
            json!(["message"])
        );

        let call = client
            .request(
                3,
                "tools/call",
                json!({"name": "tasks_list", "arguments": {}}),
            )
            .await;
        assert_eq!(call["result"]["isError"], true, "{call}");
        let text = call["result"]["content"][0]["text"].as_str().unwrap();
        let body: ErrorBody = serde_json::from_str(text).unwrap();
        assert_eq!(body.error.code, "daemon_unavailable");
        assert!(
            body.error.message.contains("daemon is not running"),
            "{text}"
        );
    }

    /// The whole local path: the server asks a real control socket, whose daemon answers only
    /// for the sessions it runs (`ses_live`) and cannot reach its edge here.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn it_asks_the_daemon_which_answers_for_its_own_sessions_only() {
        use crate::control::tests::{Gate, offline_relay};
        use crate::guardrails::Guardrails;
        use crate::paths::Paths;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("config"), dir.path().join("state"));
        let state = Arc::new(crate::state::State::open_in_memory().await.unwrap());
        let guardrails = Arc::new(
            Guardrails::load(paths.clone(), state, crate::policy::Limits::default())
                .await
                .unwrap(),
        );
        crate::paths::ensure_private_dir(&paths.state_dir).unwrap();
        let socket = paths.control_socket();
        let daemon = tokio::spawn(control::serve(
            control::bind(&socket).unwrap(),
            guardrails,
            Arc::new(Gate(std::sync::Mutex::new(false))),
            offline_relay(),
        ));

        let mut live = start(LocalServer::new("ses_live", socket.clone()));
        live.initialize().await;
        let list = live.request(1, "tools/list", json!({})).await;
        assert_eq!(
            list["result"]["tools"].as_array().unwrap().len(),
            2,
            "{list}"
        );
        let call = live
            .request(
                2,
                "tools/call",
                json!({"name": "session_update_task", "arguments": {"status_id": "sts_1"}}),
            )
            .await;
        assert_eq!(call["result"]["isError"], true, "{call}");
        let text = call["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("edge_unreachable"), "{text}");

        // Not a session of this daemon: refused, as a protocol error the agent sees.
        let mut other = start(LocalServer::new("ses_other", socket.clone()));
        other.initialize().await;
        let list = other.request(1, "tools/list", json!({})).await;
        assert!(
            list["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not running on this machine"),
            "{list}"
        );
        daemon.abort();
    }
}
