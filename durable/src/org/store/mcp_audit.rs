//! The MCP audit trail: one row per tool call, the newest `mcp::MAX_CALLS` kept.

use super::sessions::clip;
use super::{Store, decode_cursor, page_limit, paginate};
use crate::error::StoreError;
use crate::mcp::{NAME_MAX, ToolCall, ToolCallPage, ToolCallQuery, ToolCallReport};
use crate::sql::Sql;
use crate::time::rfc3339;
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Deserialize)]
struct CallRow {
    id: i64,
    member_id: String,
    tool: String,
    args_sha256: String,
    outcome: String,
    duration_ms: i64,
    at: i64,
}

impl From<CallRow> for ToolCall {
    fn from(r: CallRow) -> Self {
        Self {
            member_id: r.member_id,
            tool: r.tool,
            args_sha256: r.args_sha256,
            outcome: r.outcome,
            duration_ms: u64::try_from(r.duration_ms).unwrap_or(0),
            at: rfc3339(r.at),
        }
    }
}

fn is_sha256(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl<S: Sql> Store<'_, S> {
    /// Records one call by `member_id`, then drops the oldest past `keep`.
    pub(super) fn record_tool_call(
        &self,
        member_id: &str,
        call: ToolCallReport,
        now: i64,
        keep: i64,
    ) -> Result<(), StoreError> {
        if !is_sha256(&call.args_sha256) {
            return Err(StoreError::invalid(
                "args_sha256",
                "must be a lowercase hex SHA-256",
            ));
        }
        let tool = clip(Some(call.tool), NAME_MAX).unwrap_or_default();
        let outcome = clip(Some(call.outcome), NAME_MAX).unwrap_or_default();
        if tool.is_empty() || outcome.is_empty() {
            return Err(StoreError::invalid(
                "tool",
                "tool and outcome must not be empty",
            ));
        }
        self.sql.execute(
            "INSERT INTO mcp_calls (member_id, tool, args_sha256, outcome, duration_ms, at)
             VALUES (?, ?, ?, ?, ?, ?)",
            &[
                member_id.into(),
                tool.into(),
                call.args_sha256.into(),
                outcome.into(),
                i64::try_from(call.duration_ms).unwrap_or(i64::MAX).into(),
                now.into(),
            ],
        )?;
        self.sql.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'mcp_call_count'",
            &[],
        )?;
        let kept = self.count(
            "SELECT value AS n FROM counters WHERE name = 'mcp_call_count'",
            &[],
        )?;
        if kept > keep {
            // RETURNING counts the rows deleted (the engine's write counter includes indexes).
            let gone: Vec<IgnoredAny> = self.sql.query(
                "DELETE FROM mcp_calls WHERE id IN
                     (SELECT id FROM mcp_calls ORDER BY id LIMIT ?)
                 RETURNING id",
                &[(kept - keep).into()],
            )?;
            self.sql.execute(
                "UPDATE counters SET value = value - ? WHERE name = 'mcp_call_count'",
                &[i64::try_from(gone.len()).unwrap_or(0).into()],
            )?;
        }
        Ok(())
    }

    /// The calls, newest first. Rows are numbered in the order they were recorded, so the id
    /// alone orders them.
    pub(super) fn list_tool_calls(&self, q: &ToolCallQuery) -> Result<ToolCallPage, StoreError> {
        let limit = page_limit(q.limit)?;
        let rows: Vec<CallRow> = match &q.cursor {
            Some(c) => {
                let before: i64 =
                    decode_cursor(c)?
                        .parse()
                        .map_err(|_| StoreError::BadRequest {
                            field: "cursor".into(),
                            message: "is not a cursor this API issued".into(),
                        })?;
                self.sql.query(
                    "SELECT * FROM mcp_calls WHERE id < ? ORDER BY id DESC LIMIT ?",
                    &[before.into(), (limit + 1).into()],
                )?
            }
            None => self.sql.query(
                "SELECT * FROM mcp_calls ORDER BY id DESC LIMIT ?",
                &[(limit + 1).into()],
            )?,
        };
        let page = paginate(rows, limit, |r: &CallRow| r.id.to_string());
        Ok(ToolCallPage {
            calls: page.data,
            next_cursor: page.next_cursor,
        })
    }
}
