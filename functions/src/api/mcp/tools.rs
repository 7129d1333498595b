//! The MCP tools: each one's input type (its JSON Schema comes from the type), and its call,
//! which goes through the same function as the REST route it mirrors, so the caps, checks and
//! answers are the API's own.

use super::super::automations::{self, CreateAutomation, UpdateAutomation};
use super::super::chat::{self, ApprovalRequest, MessageRequest};
use super::super::sessions::{self, InputRequest, StartRequest, StopRequest};
use super::super::{hosts, org_call, org_data};
use crate::auth::Principal;
use crate::backend::Backend;
use crate::directory;
use crate::error::ApiError;
use rmcp::model::{CallToolResult, ContentBlock, ErrorCode, ErrorData, JsonObject, Tool};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::sync::Arc;
use tether_durable::chat::{AttachmentFile, Decision};
use tether_durable::org::OrgOp;
use tether_durable::org::model::{CreateTask, PageQuery, TaskQuery, UpdateTask};
use tether_durable::session::SessionQuery;

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Nothing {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TaskKey {
    /// A task id (`tsk_...`) or slug (`TET-12`).
    id_or_slug: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct TaskPatch {
    /// A task id (`tsk_...`) or slug (`TET-12`).
    id_or_slug: String,
    /// The fields to change; the others stay as they are.
    #[serde(flatten)]
    patch: UpdateTask,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HostId {
    /// A host id (`hst_...`).
    host_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionId {
    /// A session id (`ses_...`).
    session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionStop {
    /// A session id (`ses_...`).
    session_id: String,
    /// Recorded as the reason (default "stopped by <member>").
    reason: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionInput {
    /// A running session's id (`ses_...`).
    session_id: String,
    /// Text typed into the terminal (at most 64 KiB); end a line with "\r" to submit it.
    data: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionMessage {
    /// A running chat session's id (`ses_...`).
    session_id: String,
    /// The message, 1 to 100 000 characters.
    text: String,
    /// Files for the agent (at most 8, 256 KiB each and 512 KiB together, decoded), landing
    /// in the worktree under `.tether/attachments/<message id>/`.
    #[serde(default)]
    attachments: Vec<AttachmentFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionApproval {
    /// A chat session's id (`ses_...`).
    session_id: String,
    /// The approval request's id (`apr_...`), from the session's `approval_requested` event.
    request_id: String,
    /// `allow` or `deny`.
    decision: Decision,
    /// Why, one line of at most 1000 characters.
    reason: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TerminalRead {
    /// A session id (`ses_...`).
    session_id: String,
    /// The byte offset to read from: 0 (the default) for the start, or the `next_offset` of
    /// the previous read.
    offset: Option<u64>,
    /// At most this many bytes, 1 to 65536 (the default).
    max_bytes: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AutomationKey {
    /// An automation id (`aut_...`) or name.
    automation: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct AutomationChange {
    /// An automation id (`aut_...`) or name.
    automation: String,
    /// The fields to change; the others stay as they are.
    #[serde(flatten)]
    patch: UpdateAutomation,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AutomationLogs {
    /// An automation id (`aut_...`) or name.
    automation: String,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 200, default 50.
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PromptGet {
    /// An automation id (`aut_...`) or name.
    automation: String,
    /// A version number (default: the active one).
    version: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PromptSet {
    /// An automation id (`aut_...`) or name.
    automation: String,
    /// A new prompt (at most 20 000 characters): saved as the next version, made active.
    prompt: Option<String>,
    /// Or: an earlier version to make active again (a rollback).
    rollback_to: Option<i64>,
}

/// One tool: its name, what it does, and its input type's schema.
struct Spec {
    name: &'static str,
    description: &'static str,
    schema: fn() -> JsonObject,
}

fn schema<T: JsonSchema>() -> JsonObject {
    match serde_json::to_value(schemars::schema_for!(T)) {
        Ok(Value::Object(mut m)) => {
            m.remove("$schema");
            m.remove("title");
            m
        }
        _ => Map::new(),
    }
}

const TOOLS: &[Spec] = &[
    Spec {
        name: "tasks_create",
        description: "Create a task (title up to 200 characters, Markdown description, priority, status, project, assignee, labels). Answers the task with its slug.",
        schema: schema::<CreateTask>,
    },
    Spec {
        name: "tasks_list",
        description: "List tasks, newest first, filtered by status, category, assignee (`none` for unassigned), project, label or priority; page with `cursor`.",
        schema: schema::<TaskQuery>,
    },
    Spec {
        name: "tasks_get",
        description: "Get a task by id or slug (such as TET-12).",
        schema: schema::<TaskKey>,
    },
    Spec {
        name: "tasks_update",
        description: "Change a task's fields; `null` clears project_id or assignee_id, `labels` replaces the set.",
        schema: schema::<TaskPatch>,
    },
    Spec {
        name: "tasks_delete",
        description: "Delete a task by id or slug.",
        schema: schema::<TaskKey>,
    },
    Spec {
        name: "task_statuses_list",
        description: "The org's task statuses in board order (ids for tasks' status_id).",
        schema: schema::<Nothing>,
    },
    Spec {
        name: "projects_list",
        description: "The org's projects; page with `cursor`.",
        schema: schema::<PageQuery>,
    },
    Spec {
        name: "members_list",
        description: "The org's members and their roles (ids for tasks' assignee_id).",
        schema: schema::<Nothing>,
    },
    Spec {
        name: "hosts_list",
        description: "The org's machines, each with whether it is online and, if not, why.",
        schema: schema::<Nothing>,
    },
    Spec {
        name: "worktrees_list",
        description: "The git worktrees on a machine, as its daemon reports them (the machine must be online).",
        schema: schema::<HostId>,
    },
    Spec {
        name: "sessions_start",
        description: "Start a coding agent (claude, codex, gemini, ...) on a machine with the project checked out, in a fresh worktree, with a prompt and/or a task.",
        schema: schema::<StartRequest>,
    },
    Spec {
        name: "sessions_list",
        description: "List agent sessions, newest first, by status, host or project; page with `cursor`.",
        schema: schema::<SessionQuery>,
    },
    Spec {
        name: "sessions_get",
        description: "Get an agent session: status, reason, branch, worktree, terminal stream.",
        schema: schema::<SessionId>,
    },
    Spec {
        name: "sessions_stop",
        description: "Stop an agent session (a queued one at once, a running one through its machine).",
        schema: schema::<SessionStop>,
    },
    Spec {
        name: "sessions_send_message",
        description: "Send a follow-up message (and optionally files, base64) to a running chat session's agent. Answers the message id and where the files landed.",
        schema: schema::<SessionMessage>,
    },
    Spec {
        name: "sessions_answer_approval",
        description: "Allow or deny a chat session's pending approval request (a tool call the agent waits on), with an optional reason. Members only.",
        schema: schema::<SessionApproval>,
    },
    Spec {
        name: "terminals_read",
        description: "Read a session's terminal output from a byte offset (at most 64 KiB per call): the text and the offset to read from next.",
        schema: schema::<TerminalRead>,
    },
    Spec {
        name: "terminals_send_input",
        description: "Type text into a running session's terminal.",
        schema: schema::<SessionInput>,
    },
    Spec {
        name: "automations_create",
        description: "Schedule an agent: an RRULE (e.g. FREQ=WEEKLY;BYDAY=MO;BYHOUR=9) read in an IANA time zone, a project, a host (or any), an agent preset and a prompt. Answers the automation with its next run.",
        schema: schema::<CreateAutomation>,
    },
    Spec {
        name: "automations_list",
        description: "The org's automations with their rules, next runs and active prompts; page with `cursor`.",
        schema: schema::<PageQuery>,
    },
    Spec {
        name: "automations_get",
        description: "Get an automation by id or name.",
        schema: schema::<AutomationKey>,
    },
    Spec {
        name: "automations_update",
        description: "Change an automation's name, rule, time zone, start, project, host, agent or base branch (the prompt changes with automations_set_prompt).",
        schema: schema::<AutomationChange>,
    },
    Spec {
        name: "automations_delete",
        description: "Delete an automation with its prompt versions and run log.",
        schema: schema::<AutomationKey>,
    },
    Spec {
        name: "automations_pause",
        description: "Pause an automation: no runs until it is resumed.",
        schema: schema::<AutomationKey>,
    },
    Spec {
        name: "automations_resume",
        description: "Resume an automation at its next occurrence (missed ones are not run).",
        schema: schema::<AutomationKey>,
    },
    Spec {
        name: "automations_run",
        description: "Run an automation now: starts its session and answers the run (with the session id, or why it failed).",
        schema: schema::<AutomationKey>,
    },
    Spec {
        name: "automations_logs",
        description: "An automation's runs, newest first: when, scheduled or manual, the session started or the error.",
        schema: schema::<AutomationLogs>,
    },
    Spec {
        name: "automations_get_prompt",
        description: "An automation's prompt: the active version, or the version asked for.",
        schema: schema::<PromptGet>,
    },
    Spec {
        name: "automations_set_prompt",
        description: "Give an automation a new prompt (saved as a new version) or roll back to an earlier version with `rollback_to`.",
        schema: schema::<PromptSet>,
    },
];

/// Every tool, for `tools/list`.
pub(super) fn catalogue() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|t| Tool::new(t.name, t.description, Arc::new((t.schema)())))
        .collect()
}

/// The tool's arguments as its input type; a wrong shape is refused like a REST body is (422).
fn args<T: DeserializeOwned>(args: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(args)).map_err(|e| {
        ApiError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_arguments",
            e.to_string(),
        )
    })
}

fn json(v: &impl serde::Serialize) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(&e))
}

/// Calls tool `name`: the API's JSON answer, or its error. Unknown tools are a protocol
/// error (invalid params), not a tool error.
pub(super) async fn call(
    app: &impl Backend,
    p: &Principal,
    name: &str,
    a: Map<String, Value>,
) -> Result<Result<Vec<u8>, ApiError>, ErrorData> {
    if !TOOLS.iter().any(|t| t.name == name) {
        return Err(ErrorData::new(
            ErrorCode::INVALID_PARAMS,
            format!("no tool {name:?}"),
            None,
        ));
    }
    Ok(run(app, p, name, a).await)
}

async fn run(
    app: &impl Backend,
    p: &Principal,
    name: &str,
    a: Map<String, Value>,
) -> Result<Vec<u8>, ApiError> {
    match name {
        "tasks_create" => org_data::create_task_with(app, p, args(a)?).await,
        "tasks_list" => org_call(app, p, OrgOp::ListTasks(args(a)?)).await,
        "tasks_get" => {
            let k: TaskKey = args(a)?;
            org_call(app, p, OrgOp::GetTask { key: k.id_or_slug }).await
        }
        "tasks_update" => {
            let t: TaskPatch = args(a)?;
            org_data::update_task_with(app, p, &t.id_or_slug, t.patch).await
        }
        "tasks_delete" => {
            let k: TaskKey = args(a)?;
            org_call(
                app,
                p,
                OrgOp::DeleteTask {
                    key: k.id_or_slug.clone(),
                },
            )
            .await?;
            json(&serde_json::json!({ "deleted": k.id_or_slug }))
        }
        "task_statuses_list" => {
            args::<Nothing>(a)?;
            org_call(app, p, OrgOp::ListStatuses).await
        }
        "projects_list" => org_call(app, p, OrgOp::ListProjects(args(a)?)).await,
        "members_list" => {
            args::<Nothing>(a)?;
            json(&directory::members(app.db(), &p.org_id).await?)
        }
        "hosts_list" => {
            args::<Nothing>(a)?;
            json(&hosts::live_hosts(app, p).await?)
        }
        "worktrees_list" => {
            let h: HostId = args(a)?;
            sessions::worktrees_of(app, p, &h.host_id).await
        }
        "sessions_start" => {
            let input: StartRequest = args(a)?;
            json(&sessions::start(app, &p.org_id, &p.member_id, input).await?)
        }
        "sessions_list" => {
            let q: SessionQuery = args(a)?;
            org_call(app, p, OrgOp::ListSessions(q)).await
        }
        "sessions_get" => {
            let s: SessionId = args(a)?;
            org_call(app, p, OrgOp::GetSession { id: s.session_id }).await
        }
        "sessions_stop" => {
            let s: SessionStop = args(a)?;
            let input = StopRequest { reason: s.reason };
            json(&sessions::stop_session(app, p, &s.session_id, input).await?)
        }
        "sessions_send_message" => {
            let m: SessionMessage = args(a)?;
            let input = MessageRequest {
                text: m.text,
                attachments: m.attachments,
            };
            chat::send_message(app, p, &m.session_id, input).await
        }
        "sessions_answer_approval" => {
            let a: SessionApproval = args(a)?;
            let input = ApprovalRequest {
                decision: a.decision,
                reason: a.reason,
            };
            json(&chat::answer_approval(app, p, &a.session_id, &a.request_id, input).await?)
        }
        "terminals_read" => {
            let r: TerminalRead = args(a)?;
            let max = r.max_bytes.unwrap_or(sessions::TERMINAL_READ_MAX);
            let text =
                sessions::read_terminal(app, p, &r.session_id, r.offset.unwrap_or(0), max).await?;
            json(&text)
        }
        "terminals_send_input" => {
            let s: SessionInput = args(a)?;
            let input = InputRequest {
                data: Some(s.data),
                data_base64: None,
            };
            sessions::send_input(app, p, &s.session_id, input).await
        }
        "automations_create" => json(&automations::create_with(app, p, args(a)?).await?),
        "automations_list" => org_call(app, p, OrgOp::ListAutomations(args(a)?)).await,
        "automations_get" => {
            let k: AutomationKey = args(a)?;
            org_call(app, p, OrgOp::GetAutomation { key: k.automation }).await
        }
        "automations_update" => {
            let c: AutomationChange = args(a)?;
            json(&automations::update_with(app, p, &c.automation, c.patch).await?)
        }
        "automations_delete" => {
            let k: AutomationKey = args(a)?;
            automations::delete_with(app, p, &k.automation).await?;
            json(&serde_json::json!({ "deleted": k.automation }))
        }
        "automations_pause" | "automations_resume" => {
            let k: AutomationKey = args(a)?;
            let paused = name == "automations_pause";
            json(&automations::set_paused(app, p, &k.automation, paused).await?)
        }
        "automations_run" => {
            let k: AutomationKey = args(a)?;
            json(&automations::run_now(app, p, &k.automation).await?)
        }
        "automations_logs" => {
            let l: AutomationLogs = args(a)?;
            let page = PageQuery {
                cursor: l.cursor,
                limit: l.limit,
            };
            org_call(
                app,
                p,
                OrgOp::ListRuns {
                    key: l.automation,
                    page,
                },
            )
            .await
        }
        "automations_get_prompt" => {
            let g: PromptGet = args(a)?;
            let op = OrgOp::GetPromptVersion {
                key: g.automation,
                version: g.version,
            };
            org_call(app, p, op).await
        }
        "automations_set_prompt" => {
            let s: PromptSet = args(a)?;
            let op = match (s.prompt, s.rollback_to) {
                (Some(prompt), None) => OrgOp::SetPrompt {
                    key: s.automation,
                    prompt,
                },
                (None, Some(version)) => OrgOp::RollbackPrompt {
                    key: s.automation,
                    version,
                },
                _ => {
                    return Err(ApiError::invalid(
                        "prompt",
                        "give either `prompt` (a new version) or `rollback_to` (an earlier one)",
                    ));
                }
            };
            org_call(app, p, op).await
        }
        _ => Err(ApiError::internal(&format!("tool {name} has no call"))),
    }
}

/// A tool's answer as MCP content: the API's JSON as text; an API error as the JSON error
/// body with `isError`, so the model sees what went wrong.
pub(super) fn result(answer: Result<Vec<u8>, ApiError>) -> CallToolResult {
    let mut result = match answer {
        Ok(body) => CallToolResult::success(vec![ContentBlock::text(
            String::from_utf8_lossy(&body).into_owned(),
        )]),
        Err(e) => {
            let text = serde_json::to_string(&e.body).unwrap_or_else(|_| e.to_string());
            CallToolResult::error(vec![ContentBlock::text(text)])
        }
    };
    // A field of protocol versions newer than the ones spoken here.
    result.result_type = None;
    result
}
