//! The MCP audit trail: records checked, listed newest first with paging, trimmed to a cap.

use super::{MEMBER, call};
use crate::error::StoreError;
use crate::mcp::{ToolCallPage, ToolCallQuery, ToolCallReport};
use crate::org::OrgOp;
use crate::org::store::Store;
use crate::sql::{NativeSql, Sql};

fn report(tool: &str, outcome: &str) -> ToolCallReport {
    ToolCallReport {
        tool: tool.into(),
        args_sha256: "ab".repeat(32),
        outcome: outcome.into(),
        duration_ms: 3,
    }
}

fn list(sql: &NativeSql, cursor: Option<String>, limit: u32) -> ToolCallPage {
    call(
        sql,
        OrgOp::ListToolCalls(ToolCallQuery {
            cursor,
            limit: Some(limit),
        }),
    )
    .unwrap()
}

#[test]
fn tool_calls_are_recorded_checked_and_listed_newest_first() {
    let sql = NativeSql::open_in_memory().unwrap();
    for (tool, outcome) in [
        ("tasks_create", "ok"),
        ("tasks_get", "not_found"),
        ("hosts_list", "ok"),
    ] {
        call::<serde_json::Value>(&sql, OrgOp::RecordToolCall(report(tool, outcome))).unwrap();
    }
    let first = list(&sql, None, 2);
    let tools: Vec<&str> = first.calls.iter().map(|c| c.tool.as_str()).collect();
    assert_eq!(tools, ["hosts_list", "tasks_get"]);
    assert_eq!(first.calls[1].outcome, "not_found");
    assert_eq!(first.calls[0].member_id, MEMBER);
    let rest = list(&sql, first.next_cursor, 2);
    assert_eq!(rest.calls.len(), 1);
    assert_eq!(rest.calls[0].tool, "tasks_create");
    assert_eq!(rest.next_cursor, None);

    let bad = |r: ToolCallReport| call::<serde_json::Value>(&sql, OrgOp::RecordToolCall(r));
    let mut r = report("x", "ok");
    r.args_sha256 = "AB".repeat(32);
    assert!(bad(r).is_err(), "uppercase digest");
    assert!(bad(report("", "ok")).is_err(), "no tool");
    assert!(matches!(
        call::<ToolCallPage>(
            &sql,
            OrgOp::ListToolCalls(ToolCallQuery {
                cursor: Some("!!".into()),
                limit: None
            })
        ),
        Err(StoreError::BadRequest { .. })
    ));
}

#[test]
fn the_oldest_tool_calls_go_past_the_cap() {
    let sql = NativeSql::open_in_memory().unwrap();
    let store = Store::open(&sql).unwrap();
    for i in 0..5 {
        sql.transaction(|| {
            store.record_tool_call(MEMBER, report(&format!("t{i}"), "ok"), 1_000, 3)
        })
        .unwrap();
    }
    let tools: Vec<String> = list(&sql, None, 10)
        .calls
        .into_iter()
        .map(|c| c.tool)
        .collect();
    assert_eq!(tools, ["t4", "t3", "t2"]);
}
