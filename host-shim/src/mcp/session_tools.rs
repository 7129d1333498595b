//! The two tools of an agent's own session, and the host routes they become:
//!
//! - `session_report_progress` → `POST /v1/hosts/{host}/sessions/{session}/progress`: the
//!   message (and percentage) people see with the session.
//! - `session_update_task` → `PATCH /v1/hosts/{host}/sessions/{session}/task`: the task the
//!   session was started for (409 `no_task` without one).
//!
//! The input types are the request bodies, so the schemas the agent sees (schemars, through
//! rmcp) are the shapes the edge decodes; the edge checks the limits.

use rmcp::model::{JsonObject, Tool};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tether_durable::org::model::Priority;

pub const REPORT_PROGRESS: &str = "session_report_progress";
pub const UPDATE_TASK: &str = "session_update_task";

/// `session_report_progress`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportProgress {
    /// What you did or are doing now, in a sentence or two (1 to 2000 characters).
    #[schemars(length(min = 1, max = 2000))]
    pub message: String,
    /// How far along the work is, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<u8>,
}

/// `session_update_task`'s arguments: the fields to change; the others are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMyTask {
    /// A new title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A new description (Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// A status id from `task_statuses_list` (for example the org's "done" status when the
    /// work is finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_id: Option<String>,
    /// The task's labels: replaces the whole set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

/// A call of one of the session tools, its arguments checked against their type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTool {
    ReportProgress(ReportProgress),
    UpdateTask(UpdateMyTask),
}

impl SessionTool {
    /// The call of tool `name` with `args`: `None` when `name` is not a session tool, an error
    /// when the arguments do not fit its input type.
    pub fn parse(name: &str, args: JsonObject) -> Option<Result<Self, serde_json::Error>> {
        let args = serde_json::Value::Object(args);
        Some(match name {
            REPORT_PROGRESS => serde_json::from_value(args).map(Self::ReportProgress),
            UPDATE_TASK => serde_json::from_value(args).map(Self::UpdateTask),
            _ => return None,
        })
    }

    /// The HTTP method and the last segment of its route under
    /// `/v1/hosts/{host}/sessions/{session}/`.
    pub fn route(&self) -> (reqwest::Method, &'static str) {
        match self {
            Self::ReportProgress(_) => (reqwest::Method::POST, "progress"),
            Self::UpdateTask(_) => (reqwest::Method::PATCH, "task"),
        }
    }

    /// The request body.
    pub fn body(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Self::ReportProgress(r) => serde_json::to_value(r),
            Self::UpdateTask(u) => serde_json::to_value(u),
        }
    }
}

/// Whether `name` is one of the session tools (the org's tools of the same name, if the edge
/// ever had one, are hidden behind them).
pub fn is_session_tool(name: &str) -> bool {
    matches!(name, REPORT_PROGRESS | UPDATE_TASK)
}

/// The session tools, for `tools/list`.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            REPORT_PROGRESS,
            "Report your progress on this session to the people following it: a short message \
             (and optionally a percentage), shown with the session in Tether. Call it at each \
             milestone.",
            input_schema::<ReportProgress>(),
        ),
        Tool::new(
            UPDATE_TASK,
            "Update the task this session was started for: title, description, priority, \
             status (a status_id from task_statuses_list) or labels (replaces the set). Fails \
             with no_task when the session was started without a task.",
            input_schema::<UpdateMyTask>(),
        ),
    ]
}

/// The JSON Schema of `T` as rmcp makes tool input schemas (draft 2020-12, an object at the
/// root); an empty object schema if it is not one, which cannot happen for these types.
fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>()
        .unwrap_or_else(|_| rmcp::handler::server::common::schema_for_empty_input())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn object(v: serde_json::Value) -> JsonObject {
        match v {
            serde_json::Value::Object(m) => m,
            _ => JsonObject::new(),
        }
    }

    #[test]
    fn the_schemas_describe_the_arguments() {
        let tools = tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, [REPORT_PROGRESS, UPDATE_TASK]);
        let progress = tools[0].schema_as_json_value();
        assert_eq!(progress["type"], "object");
        assert_eq!(progress["required"], json!(["message"]));
        assert_eq!(progress["properties"]["message"]["type"], "string");
        assert_eq!(progress["properties"]["message"]["minLength"], 1);
        assert_eq!(progress["properties"]["message"]["maxLength"], 2000);
        assert_eq!(progress["properties"]["percent"]["maximum"], 100);
        assert_eq!(progress["properties"]["percent"]["minimum"], 0);
        assert_eq!(progress["additionalProperties"], false);
        assert!(progress.get("title").is_none(), "{progress}");

        let task = tools[1].schema_as_json_value();
        assert_eq!(task["type"], "object");
        assert!(
            task.get("required").is_none_or(|r| r == &json!([])),
            "{task}"
        );
        let props = task["properties"].as_object().unwrap();
        let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["description", "labels", "priority", "status_id", "title"]
        );
        // The priorities are the API's.
        let text = task.to_string();
        for p in ["urgent", "high", "medium", "low", "none"] {
            assert!(text.contains(&format!("\"{p}\"")), "{text}");
        }
    }

    #[test]
    fn calls_become_the_host_routes_bodies() {
        let call = SessionTool::parse(
            REPORT_PROGRESS,
            object(json!({"message": "tests pass", "percent": 80})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(call.route(), (reqwest::Method::POST, "progress"));
        assert_eq!(
            call.body().unwrap(),
            json!({"message": "tests pass", "percent": 80})
        );
        let call = SessionTool::parse(REPORT_PROGRESS, object(json!({"message": "m"})))
            .unwrap()
            .unwrap();
        assert_eq!(call.body().unwrap(), json!({"message": "m"}));

        let call = SessionTool::parse(
            UPDATE_TASK,
            object(json!({"status_id": "sts_1", "priority": "high", "labels": ["a"]})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(call.route(), (reqwest::Method::PATCH, "task"));
        assert_eq!(
            call.body().unwrap(),
            json!({"status_id": "sts_1", "priority": "high", "labels": ["a"]})
        );

        // Wrong shapes are refused before anything is sent.
        for bad in [
            json!({}),
            json!({"message": 3}),
            json!({"message": "m", "percent": 300}),
            json!({"message": "m", "session": "ses_other"}),
        ] {
            assert!(
                SessionTool::parse(REPORT_PROGRESS, object(bad.clone()))
                    .unwrap()
                    .is_err(),
                "{bad}"
            );
        }
        assert!(
            SessionTool::parse(UPDATE_TASK, object(json!({"priority": "soon"})))
                .unwrap()
                .is_err()
        );
        assert!(SessionTool::parse("tasks_list", JsonObject::new()).is_none());
        assert!(is_session_tool(UPDATE_TASK) && !is_session_tool("tasks_update"));
    }
}
