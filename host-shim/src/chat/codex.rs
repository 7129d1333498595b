//! `codex exec --json`: Codex CLI's JSONL events, one process per turn.
//!
//! The runner starts each turn as
//! `codex exec <preset args> --json [<mcp args>] [resume <thread id>] -- <prompt>`:
//! [`resume_args`] makes the `resume` part (every turn after the first, with the id from
//! [`Normalizer::thread_id`]) and [`prompt_args`] the prompt's (after `--`, so a prompt that
//! starts with `-` or reads `resume` stays a prompt). One [`Normalizer`] serves every turn of
//! a session, so `session_started` comes once.
//!
//! How the events map:
//! - `thread.started` (first time only) is `session_started`; `turn.started` is nothing.
//! - Items, by type: `agent_message` and `reasoning` are `message` and `thinking` when they
//!   complete. Tool-like items (`command_execution`, `file_change`, `mcp_tool_call`,
//!   `web_search`) are `tool` events with the item id: `created` then `running` when they
//!   start, and when they complete `created` (if they never started) then `succeeded`,
//!   `failed` or `denied` (a declined command). `error` items are `error` events;
//!   `todo_list` and unknown types are dropped.
//! - `turn.completed` is `turn_ended` (its result: the turn's last agent message) then `usage`;
//!   `turn.failed` is an `error` (code `turn_failed`) then a failed `turn_ended`; a top-level
//!   `error` is an `error` event.

use std::collections::HashSet;

use serde_json::{Value, json};
use tether_durable::chat::{EventBody, Role, ToolStatus, Usage};

use super::{truncate_output, unparsed_line};

/// The protocol's name in `session_started` events.
pub const PROTOCOL: &str = "codex-json";

/// The arguments that resume the thread `thread_id` (Codex's `exec resume <id>` subcommand);
/// they come after `exec`'s own options and before [`prompt_args`].
pub fn resume_args(thread_id: &str) -> Vec<String> {
    vec!["resume".to_owned(), thread_id.to_owned()]
}

/// The prompt, last on the command line: after `--`, so it is never read as an option or a
/// subcommand.
pub fn prompt_args(prompt: &str) -> Vec<String> {
    vec!["--".to_owned(), prompt.to_owned()]
}

/// Codex's stdout, one line at a time, as chat events. One per session (across its turns'
/// processes).
#[derive(Debug)]
pub struct Normalizer {
    agent: String,
    thread_id: Option<String>,
    /// Tool items that started and have not completed.
    open_tools: HashSet<String>,
    /// The current turn's last agent message.
    last_message: Option<String>,
}

/// Where an item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Started,
    Updated,
    Completed,
}

/// How a tool item shows: its name and arguments.
struct ToolCall {
    name: String,
    input: Value,
}

/// How a completed tool item ended.
struct ToolEnd {
    status: ToolStatus,
    output: Option<String>,
    reason: Option<String>,
}

impl Normalizer {
    /// A normalizer for a session of the preset `agent` (named in `session_started`).
    pub fn new(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            thread_id: None,
            open_tools: HashSet::new(),
            last_message: None,
        }
    }

    /// Codex's thread id, once `thread.started` came: what the next turn resumes.
    pub fn thread_id(&self) -> Option<&str> {
        self.thread_id.as_deref()
    }

    /// What one stdout line (with or without its newline) means. Blank lines mean nothing; a
    /// line that is not a JSON object is an `unparsed_output` error event.
    pub fn line(&mut self, line: &str) -> Vec<EventBody> {
        let line = line.trim();
        if line.is_empty() {
            return Vec::new();
        }
        let value = match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => return vec![unparsed_line("JSONL", line)],
        };
        match str_field(&value, "type") {
            Some("thread.started") => self.thread_started(&value),
            Some("turn.started") => {
                self.last_message = None;
                Vec::new()
            }
            Some("item.started") => self.item(Phase::Started, &value),
            Some("item.updated") => self.item(Phase::Updated, &value),
            Some("item.completed") => self.item(Phase::Completed, &value),
            Some("turn.completed") => self.turn_completed(&value),
            Some("turn.failed") => {
                let message = value
                    .get("error")
                    .and_then(|e| str_field(e, "message"))
                    .unwrap_or("the turn failed")
                    .to_owned();
                self.last_message = None;
                vec![
                    EventBody::Error {
                        message,
                        code: Some("turn_failed".to_owned()),
                    },
                    EventBody::TurnEnded {
                        is_error: true,
                        duration_ms: None,
                        result: None,
                    },
                ]
            }
            Some("error") => vec![EventBody::Error {
                message: str_field(&value, "message")
                    .unwrap_or("the agent reported an error")
                    .to_owned(),
                code: None,
            }],
            _ => Vec::new(),
        }
    }

    fn thread_started(&mut self, line: &Value) -> Vec<EventBody> {
        let Some(thread_id) = str_field(line, "thread_id") else {
            return Vec::new();
        };
        if self.thread_id.is_some() {
            return Vec::new();
        }
        self.thread_id = Some(thread_id.to_owned());
        vec![EventBody::SessionStarted {
            agent: self.agent.clone(),
            protocol: PROTOCOL.to_owned(),
            model: None,
            cwd: None,
            agent_session_id: Some(thread_id.to_owned()),
        }]
    }

    fn turn_completed(&mut self, line: &Value) -> Vec<EventBody> {
        let mut out = vec![EventBody::TurnEnded {
            is_error: false,
            duration_ms: None,
            result: self.last_message.take(),
        }];
        if let Some(usage) = line.get("usage") {
            let tokens = |name: &str| usage.get(name).and_then(Value::as_u64);
            out.push(EventBody::Usage(Usage {
                input_tokens: tokens("input_tokens").unwrap_or(0),
                output_tokens: tokens("output_tokens").unwrap_or(0),
                cache_read_tokens: tokens("cached_input_tokens"),
                cache_write_tokens: None,
                cost_usd: None,
            }));
        }
        out
    }

    fn item(&mut self, phase: Phase, line: &Value) -> Vec<EventBody> {
        let Some(item) = line.get("item") else {
            return Vec::new();
        };
        let Some(id) = str_field(item, "id") else {
            return Vec::new();
        };
        let item_type = str_field(item, "type").unwrap_or_default();
        match item_type {
            "agent_message" if phase == Phase::Completed => {
                let text = str_field(item, "text").unwrap_or_default().to_owned();
                self.last_message = Some(text.clone());
                vec![EventBody::Message {
                    message_id: id.to_owned(),
                    role: Role::Assistant,
                    text,
                    attachments: Vec::new(),
                    sent_by: None,
                }]
            }
            "reasoning" if phase == Phase::Completed => match str_field(item, "text") {
                Some(text) if !text.is_empty() => vec![EventBody::Thinking {
                    message_id: id.to_owned(),
                    text: text.to_owned(),
                }],
                _ => Vec::new(),
            },
            "error" if phase == Phase::Completed => vec![EventBody::Error {
                message: str_field(item, "message").unwrap_or_default().to_owned(),
                code: None,
            }],
            _ => match tool_call(item_type, item) {
                Some(call) => self.tool(phase, id, call, item_type, item),
                None => Vec::new(),
            },
        }
    }

    /// A tool item's events: every call begins with `created`.
    fn tool(
        &mut self,
        phase: Phase,
        id: &str,
        call: ToolCall,
        item_type: &str,
        item: &Value,
    ) -> Vec<EventBody> {
        let event = |name: String, status, input, output, reason| EventBody::Tool {
            tool_use_id: id.to_owned(),
            name,
            status,
            input,
            output,
            reason,
        };
        match phase {
            Phase::Updated => Vec::new(),
            Phase::Started => {
                if !self.open_tools.insert(id.to_owned()) {
                    return Vec::new();
                }
                vec![
                    event(
                        call.name.clone(),
                        ToolStatus::Created,
                        Some(call.input),
                        None,
                        None,
                    ),
                    event(call.name, ToolStatus::Running, None, None, None),
                ]
            }
            Phase::Completed => {
                let mut out = Vec::new();
                if !self.open_tools.remove(id) {
                    out.push(event(
                        call.name.clone(),
                        ToolStatus::Created,
                        Some(call.input),
                        None,
                        None,
                    ));
                }
                let end = tool_end(item_type, item);
                out.push(event(call.name, end.status, None, end.output, end.reason));
                out
            }
        }
    }
}

/// The name and arguments of a tool-like item; None for other items.
fn tool_call(item_type: &str, item: &Value) -> Option<ToolCall> {
    let field = |name: &str| item.get(name).cloned().unwrap_or(Value::Null);
    let call = match item_type {
        "command_execution" => ToolCall {
            name: "command_execution".to_owned(),
            input: json!({"command": field("command")}),
        },
        "file_change" => ToolCall {
            name: "file_change".to_owned(),
            input: json!({"changes": field("changes")}),
        },
        "mcp_tool_call" => ToolCall {
            name: format!(
                "mcp:{}/{}",
                str_field(item, "server").unwrap_or_default(),
                str_field(item, "tool").unwrap_or_default()
            ),
            input: match field("arguments") {
                Value::Null => json!({}),
                arguments => arguments,
            },
        },
        "web_search" => ToolCall {
            name: "web_search".to_owned(),
            input: json!({"query": field("query")}),
        },
        _ => return None,
    };
    Some(call)
}

/// How a completed tool item ended.
fn tool_end(item_type: &str, item: &Value) -> ToolEnd {
    let status = str_field(item, "status").unwrap_or("completed");
    match item_type {
        "command_execution" => {
            let output = Some(truncate_output(
                str_field(item, "aggregated_output").unwrap_or_default(),
            ));
            let exit_code = item.get("exit_code").and_then(Value::as_i64);
            match (status, exit_code) {
                ("declined", _) => ToolEnd {
                    status: ToolStatus::Denied,
                    output: None,
                    reason: Some("the command was declined".to_owned()),
                },
                (_, Some(0)) | ("completed", None) => ToolEnd {
                    status: ToolStatus::Succeeded,
                    output,
                    reason: None,
                },
                (_, code) => ToolEnd {
                    status: ToolStatus::Failed,
                    output,
                    reason: code.map(|code| format!("exit code {code}")),
                },
            }
        }
        "mcp_tool_call" => {
            if status == "completed" {
                ToolEnd {
                    status: ToolStatus::Succeeded,
                    output: item.get("result").map(mcp_result_text),
                    reason: None,
                }
            } else {
                ToolEnd {
                    status: ToolStatus::Failed,
                    output: None,
                    reason: item
                        .get("error")
                        .and_then(|e| str_field(e, "message"))
                        .map(truncate_output),
                }
            }
        }
        // file_change, web_search.
        _ => ToolEnd {
            status: if status == "failed" {
                ToolStatus::Failed
            } else {
                ToolStatus::Succeeded
            },
            output: None,
            reason: None,
        },
    }
}

/// An MCP result as text: its text blocks joined by newlines (other blocks as JSON), or its
/// structured content when it has no blocks.
fn mcp_result_text(result: &Value) -> String {
    let blocks = result
        .get("content")
        .and_then(Value::as_array)
        .filter(|blocks| !blocks.is_empty());
    let text = match blocks {
        Some(blocks) => blocks
            .iter()
            .map(|block| match str_field(block, "type") {
                Some("text") => str_field(block, "text").unwrap_or_default().to_owned(),
                _ => block.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        None => result
            .get("structured_content")
            .filter(|v| !v.is_null())
            .map(Value::to_string)
            .unwrap_or_default(),
    };
    truncate_output(&text)
}

fn str_field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(normalizer: &mut Normalizer, lines: &[Value]) -> Vec<EventBody> {
        lines
            .iter()
            .flat_map(|line| normalizer.line(&format!("{line}\n")))
            .collect()
    }

    fn tool(id: &str, name: &str, status: ToolStatus) -> EventBody {
        EventBody::Tool {
            tool_use_id: id.into(),
            name: name.into(),
            status,
            input: None,
            output: None,
            reason: None,
        }
    }

    #[test]
    fn a_full_turn_then_a_resumed_one() {
        let mut n = Normalizer::new("codex");
        assert_eq!(n.thread_id(), None);
        let out = events(
            &mut n,
            &[
                json!({"type": "thread.started",
                       "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"}),
                json!({"type": "turn.started"}),
                json!({"type": "item.completed", "item": {"id": "item_0", "type": "reasoning",
                       "text": "**Listing files**"}}),
                json!({"type": "item.started", "item": {"id": "item_1",
                       "type": "command_execution", "command": "bash -lc ls",
                       "aggregated_output": "", "exit_code": null, "status": "in_progress"}}),
                json!({"type": "item.completed", "item": {"id": "item_1",
                       "type": "command_execution", "command": "bash -lc ls",
                       "aggregated_output": "Cargo.toml\nsrc\n", "exit_code": 0,
                       "status": "completed"}}),
                json!({"type": "item.started", "item": {"id": "item_2", "type": "todo_list",
                       "items": [{"text": "look", "completed": false}]}}),
                json!({"type": "item.completed", "item": {"id": "item_3",
                       "type": "agent_message", "text": "Two entries."}}),
                json!({"type": "turn.completed", "usage": {"input_tokens": 24763,
                       "cached_input_tokens": 24448, "output_tokens": 122}}),
            ],
        );
        assert_eq!(
            out,
            vec![
                EventBody::SessionStarted {
                    agent: "codex".into(),
                    protocol: "codex-json".into(),
                    model: None,
                    cwd: None,
                    agent_session_id: Some("0199a213-81c0-7800-8aa1-bbab2a035a53".into()),
                },
                EventBody::Thinking {
                    message_id: "item_0".into(),
                    text: "**Listing files**".into(),
                },
                EventBody::Tool {
                    tool_use_id: "item_1".into(),
                    name: "command_execution".into(),
                    status: ToolStatus::Created,
                    input: Some(json!({"command": "bash -lc ls"})),
                    output: None,
                    reason: None,
                },
                tool("item_1", "command_execution", ToolStatus::Running),
                EventBody::Tool {
                    tool_use_id: "item_1".into(),
                    name: "command_execution".into(),
                    status: ToolStatus::Succeeded,
                    input: None,
                    output: Some("Cargo.toml\nsrc\n".into()),
                    reason: None,
                },
                EventBody::Message {
                    message_id: "item_3".into(),
                    role: Role::Assistant,
                    text: "Two entries.".into(),
                    attachments: vec![],
                    sent_by: None,
                },
                EventBody::TurnEnded {
                    is_error: false,
                    duration_ms: None,
                    result: Some("Two entries.".into()),
                },
                EventBody::Usage(Usage {
                    input_tokens: 24763,
                    output_tokens: 122,
                    cache_read_tokens: Some(24448),
                    cache_write_tokens: None,
                    cost_usd: None,
                }),
            ]
        );
        let thread = n.thread_id().map(str::to_owned);
        assert_eq!(
            thread.as_deref(),
            Some("0199a213-81c0-7800-8aa1-bbab2a035a53")
        );

        // The next turn's process announces the same thread again: no second start. Its
        // tools end in other ways.
        let out = events(
            &mut n,
            &[
                json!({"type": "thread.started", "thread_id": thread}),
                json!({"type": "turn.started"}),
                json!({"type": "item.completed", "item": {"id": "item_0",
                       "type": "command_execution", "command": "false",
                       "aggregated_output": "", "exit_code": 1, "status": "failed"}}),
                json!({"type": "item.completed", "item": {"id": "item_1",
                       "type": "command_execution", "command": "rm -rf /",
                       "aggregated_output": "", "exit_code": null, "status": "declined"}}),
                json!({"type": "item.completed", "item": {"id": "item_2", "type": "file_change",
                       "changes": [{"path": "src/a.rs", "kind": "update"}],
                       "status": "completed"}}),
                json!({"type": "item.started", "item": {"id": "item_3",
                       "type": "mcp_tool_call", "server": "tether", "tool": "list_tasks",
                       "arguments": {"status": "open"}, "result": null, "error": null,
                       "status": "in_progress"}}),
                json!({"type": "item.completed", "item": {"id": "item_3",
                       "type": "mcp_tool_call", "server": "tether", "tool": "list_tasks",
                       "arguments": {"status": "open"},
                       "result": {"content": [{"type": "text", "text": "[]"}],
                                  "structured_content": null},
                       "error": null, "status": "completed"}}),
                json!({"type": "turn.completed", "usage": {"input_tokens": 1,
                       "cached_input_tokens": 0, "output_tokens": 2}}),
            ],
        );
        assert_eq!(
            out,
            vec![
                EventBody::Tool {
                    tool_use_id: "item_0".into(),
                    name: "command_execution".into(),
                    status: ToolStatus::Created,
                    input: Some(json!({"command": "false"})),
                    output: None,
                    reason: None,
                },
                EventBody::Tool {
                    tool_use_id: "item_0".into(),
                    name: "command_execution".into(),
                    status: ToolStatus::Failed,
                    input: None,
                    output: Some(String::new()),
                    reason: Some("exit code 1".into()),
                },
                EventBody::Tool {
                    tool_use_id: "item_1".into(),
                    name: "command_execution".into(),
                    status: ToolStatus::Created,
                    input: Some(json!({"command": "rm -rf /"})),
                    output: None,
                    reason: None,
                },
                EventBody::Tool {
                    tool_use_id: "item_1".into(),
                    name: "command_execution".into(),
                    status: ToolStatus::Denied,
                    input: None,
                    output: None,
                    reason: Some("the command was declined".into()),
                },
                EventBody::Tool {
                    tool_use_id: "item_2".into(),
                    name: "file_change".into(),
                    status: ToolStatus::Created,
                    input: Some(json!({"changes": [{"path": "src/a.rs", "kind": "update"}]})),
                    output: None,
                    reason: None,
                },
                tool("item_2", "file_change", ToolStatus::Succeeded),
                EventBody::Tool {
                    tool_use_id: "item_3".into(),
                    name: "mcp:tether/list_tasks".into(),
                    status: ToolStatus::Created,
                    input: Some(json!({"status": "open"})),
                    output: None,
                    reason: None,
                },
                tool("item_3", "mcp:tether/list_tasks", ToolStatus::Running),
                EventBody::Tool {
                    tool_use_id: "item_3".into(),
                    name: "mcp:tether/list_tasks".into(),
                    status: ToolStatus::Succeeded,
                    input: None,
                    output: Some("[]".into()),
                    reason: None,
                },
                EventBody::TurnEnded {
                    is_error: false,
                    duration_ms: None,
                    result: None,
                },
                EventBody::Usage(Usage {
                    input_tokens: 1,
                    output_tokens: 2,
                    cache_read_tokens: Some(0),
                    ..Usage::default()
                }),
            ]
        );
    }

    #[test]
    fn a_failed_turn() {
        let mut n = Normalizer::new("codex");
        let out = events(
            &mut n,
            &[
                json!({"type": "thread.started", "thread_id": "t-1"}),
                json!({"type": "turn.started"}),
                json!({"type": "error", "message": "Reconnecting... 1/5"}),
                json!({"type": "item.completed", "item": {"id": "item_0", "type": "error",
                       "message": "model overloaded"}}),
                json!({"type": "turn.failed", "error": {"message": "stream disconnected"}}),
            ],
        );
        assert_eq!(
            out.into_iter().skip(1).collect::<Vec<_>>(),
            vec![
                EventBody::Error {
                    message: "Reconnecting... 1/5".into(),
                    code: None,
                },
                EventBody::Error {
                    message: "model overloaded".into(),
                    code: None,
                },
                EventBody::Error {
                    message: "stream disconnected".into(),
                    code: Some("turn_failed".into()),
                },
                EventBody::TurnEnded {
                    is_error: true,
                    duration_ms: None,
                    result: None,
                },
            ]
        );
        assert_eq!(
            n.line("Reading prompt from stdin..."),
            vec![EventBody::Error {
                message: "the agent wrote a line that is not JSONL: Reading prompt from stdin..."
                    .into(),
                code: Some("unparsed_output".into()),
            }]
        );
        assert!(n.line("  ").is_empty());
    }

    #[test]
    fn command_line_parts() {
        assert_eq!(resume_args("t-1"), ["resume", "t-1"]);
        assert_eq!(prompt_args("-v please"), ["--", "-v please"]);
    }
}
