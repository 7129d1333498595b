//! The MCP server's audit trail: one record per tool call (who, which tool, a digest of the
//! arguments, the outcome and how long it took), kept by the org's object and read back by
//! admins, newest first.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// Calls kept per org; past this the oldest go.
pub const MAX_CALLS: i64 = 100_000;
/// The most characters of a tool name or an outcome that are recorded.
pub const NAME_MAX: usize = 64;

/// One tool call as the Worker reports it; the member is the call's actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallReport {
    pub tool: String,
    /// SHA-256 (lowercase hex) of the call's arguments as canonical JSON.
    pub args_sha256: String,
    /// `ok`, or the error code the call answered.
    pub outcome: String,
    pub duration_ms: u64,
}

/// A recorded tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ToolCall {
    /// The member who called the tool.
    pub member_id: String,
    pub tool: String,
    /// SHA-256 (lowercase hex) of the arguments as canonical JSON (keys sorted, no spaces).
    pub args_sha256: String,
    /// `ok`, or the error code the call answered (such as `validation_failed`).
    pub outcome: String,
    pub duration_ms: u64,
    pub at: String,
}

/// Paging for the audit trail (newest first).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ToolCallQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
}

/// One page of the audit trail: follow `next_cursor` until it is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ToolCallPage {
    pub calls: Vec<ToolCall>,
    pub next_cursor: Option<String>,
}
