//! The agents' local MCP server: every agent the daemon launches gets a stdio MCP server,
//! `tether mcp`, with the org's tools (the edge's `/mcp` catalogue, scoped to this host's org)
//! and two tools for the agent's own session: report progress, update my task.
//!
//! Three parts, in three processes:
//!
//! - [`server`]: `tether mcp` itself, started by the agent over stdio (rmcp's server side). It
//!   holds no credential: it knows its session (`TETHER_SESSION_ID`) and where the daemon's
//!   control socket is (the state folder), and forwards `tools/list` and `tools/call` there as a
//!   [`crate::control::Request::Mcp`].
//! - [`relay`]: the daemon's side. It answers only for sessions it runs now, and calls the
//!   edge with its host token: `POST /mcp` for the org's tools, the host's session routes for
//!   the session tools ([`session_tools`]). With the daemon's mirror of the org, the read tools
//!   ([`mirror_tools`]) are answered locally, offline too.
//! - [`config`]: how an agent learns the command: the per-session file in Claude Code's
//!   `--mcp-config` format that the daemon writes (`TETHER_MCP_CONFIG`), and the values the
//!   presets' `mcp_args` placeholders take.
//!
//! A session id is never a tool argument: it is the session the `tether mcp` process belongs
//! to, and the daemon checks that it runs that session before it speaks for it.

pub mod config;
pub mod mirror_tools;
pub mod relay;
pub mod server;
pub mod session_tools;

use rmcp::model::ErrorData;
use serde::{Deserialize, Serialize};

/// The methods a [`crate::control::Request::Mcp`] may carry.
pub const LIST_TOOLS: &str = "tools/list";
pub const CALL_TOOL: &str = "tools/call";

/// The daemon's answer to an MCP request over the control socket: what the JSON-RPC
/// response's `result` or `error` member would hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpAnswer {
    /// A `ListToolsResult` or a `CallToolResult` (a failed tool call included: `isError`).
    Result(serde_json::Value),
    /// A protocol error: an unknown tool or method, bad parameters, a session the daemon
    /// does not run.
    Error(ErrorData),
}
