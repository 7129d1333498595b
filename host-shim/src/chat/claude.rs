//! Claude Code's `stream-json` protocol, as spoken by
//! `claude -p --output-format stream-json --input-format stream-json --verbose
//! --include-partial-messages --permission-prompt-tool stdio`.
//!
//! [`Normalizer`] turns its stdout lines into chat events, and its permission prompts into
//! [`PermissionRequest`]s the runner answers (the runner, not this module, emits the approval
//! events). The encoders ([`user_message`], [`permission_allow`], [`permission_deny`],
//! [`control_error`]) make the stdin lines; each returns one JSON line without its newline.
//!
//! How the wire maps to events:
//! - The first `system`/`init` line is `session_started`; later inits (one per user message)
//!   and other `system` lines are dropped.
//! - `stream_event` text and thinking deltas are `message_delta` and `thinking_delta` (not
//!   for subagents: those have a `parent_tool_use_id`).
//! - `assistant` lines (with partial messages, one per content block, all under the message's
//!   id) are `thinking`, `message` and `tool` (`created`) events. Claude Code's messages may hold
//!   several text blocks under one id, while the schema wants one `message` per id: the n-th
//!   text block of a message (n ≥ 2) gets the id `<message id>:<n>`, in its deltas and in its
//!   `message` alike. Thinking blocks are numbered the same way.
//! - `user` lines' `tool_result` blocks end tool calls: `succeeded`, `failed`, or `denied`
//!   (when the runner said so through [`Normalizer::denied`], or the result is Claude Code's
//!   own refusal text). Echoed user text is dropped: the runner emits user messages itself.
//! - A `result` line is `turn_ended` then `usage`, with the figures Claude Code reports (its
//!   `total_cost_usd` is the process's running total, not the turn's).

use std::collections::HashMap;

use serde_json::{Value, json};
use tether_durable::chat::{EventBody, Role, ToolStatus, Usage};

use super::{truncate_output, unparsed_line};

/// The protocol's name in `session_started` events.
pub const PROTOCOL: &str = "claude-stream-json";

/// The tool name used when a result arrives for a call this normalizer never saw.
const UNKNOWN_TOOL: &str = "unknown";

/// What Claude Code says in a tool result when a tool was refused without a permission answer
/// (the first when it would have asked, the others when the user, or our deny, said no).
const REFUSAL_PREFIX: &str = "Claude requested permissions";
const REFUSAL_MARKERS: [&str; 2] = ["haven't granted it yet", "The user doesn't want to proceed"];

/// What one stdout line asks of the runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Append this to the chat stream.
    Event(EventBody),
    /// Claude Code asks whether it may use a tool: answer with [`permission_allow`] or
    /// [`permission_deny`] (and emit the approval events).
    Permission(PermissionRequest),
    /// A control request this daemon does not handle: answer it with [`control_error`] so
    /// the agent does not wait for it.
    UnsupportedControl { request_id: String, subtype: String },
}

/// A `can_use_tool` control request.
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionRequest {
    /// Echoed in the answer.
    pub request_id: String,
    pub tool_name: String,
    /// The tool's arguments (an empty object when the agent sent none).
    pub input: Value,
    /// The call it is about, when Claude Code says (recent versions do).
    pub tool_use_id: Option<String>,
}

/// Claude Code's stdout, one line at a time, as chat events. One per agent process.
#[derive(Debug)]
pub struct Normalizer {
    agent: String,
    started: bool,
    session_id: Option<String>,
    /// The main agent's message being streamed, if any.
    streaming: Option<StreamedMessage>,
    /// Text and thinking blocks seen so far in each `assistant` message of the turn.
    text_blocks: HashMap<String, usize>,
    thinking_blocks: HashMap<String, usize>,
    /// Open tool calls' names, by tool use id.
    tool_names: HashMap<String, String>,
    /// Calls the runner denied, with its reason, by tool use id.
    denied: HashMap<String, String>,
}

/// The ids a streamed message's blocks get, so deltas and whole messages agree.
#[derive(Debug, Default)]
struct StreamedMessage {
    id: String,
    texts: usize,
    thinkings: usize,
    /// Block index → the id its deltas carry.
    block_ids: HashMap<u64, String>,
}

impl Normalizer {
    /// A normalizer for a session of the preset `agent` (named in `session_started`).
    pub fn new(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            started: false,
            session_id: None,
            streaming: None,
            text_blocks: HashMap::new(),
            thinking_blocks: HashMap::new(),
            tool_names: HashMap::new(),
            denied: HashMap::new(),
        }
    }

    /// Records that the runner denied the call `tool_use_id`: its result becomes a `denied`
    /// tool event with `reason`, whatever the agent writes in it.
    pub fn denied(&mut self, tool_use_id: &str, reason: &str) {
        self.denied
            .insert(tool_use_id.to_owned(), reason.to_owned());
    }

    /// What one stdout line (with or without its newline) means. Blank lines mean nothing; a
    /// line that is not a JSON object is an `unparsed_output` error event.
    pub fn line(&mut self, line: &str) -> Vec<Output> {
        let line = line.trim();
        if line.is_empty() {
            return Vec::new();
        }
        let value = match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => return vec![Output::Event(unparsed_line("stream-json", line))],
        };
        match str_field(&value, "type") {
            Some("system") => self.system(&value),
            Some("stream_event") => self.stream_event(&value),
            Some("assistant") => self.assistant(&value),
            Some("user") => self.user(&value),
            Some("result") => self.result(&value),
            Some("control_request") => control_request(&value),
            // control_response (answers to requests we never send), keep_alive, and whatever
            // newer versions add.
            _ => Vec::new(),
        }
    }

    fn system(&mut self, line: &Value) -> Vec<Output> {
        if self.started || str_field(line, "subtype") != Some("init") {
            return Vec::new();
        }
        self.started = true;
        self.session_id = string_field(line, "session_id");
        vec![Output::Event(EventBody::SessionStarted {
            agent: self.agent.clone(),
            protocol: PROTOCOL.to_owned(),
            model: string_field(line, "model"),
            cwd: string_field(line, "cwd"),
            agent_session_id: self.session_id.clone(),
        })]
    }

    fn stream_event(&mut self, line: &Value) -> Vec<Output> {
        if !is_main_agent(line) {
            return Vec::new();
        }
        let Some(event) = line.get("event") else {
            return Vec::new();
        };
        match str_field(event, "type") {
            Some("message_start") => {
                self.streaming = event
                    .get("message")
                    .and_then(|m| str_field(m, "id"))
                    .map(|id| StreamedMessage {
                        id: id.to_owned(),
                        ..StreamedMessage::default()
                    });
                Vec::new()
            }
            Some("content_block_start") => {
                let (Some(message), Some(index)) = (
                    self.streaming.as_mut(),
                    event.get("index").and_then(Value::as_u64),
                ) else {
                    return Vec::new();
                };
                let block_type = event
                    .get("content_block")
                    .and_then(|b| str_field(b, "type"));
                let id = match block_type {
                    Some("text") => {
                        message.texts += 1;
                        numbered(&message.id, message.texts)
                    }
                    Some("thinking") => {
                        message.thinkings += 1;
                        numbered(&message.id, message.thinkings)
                    }
                    _ => return Vec::new(),
                };
                message.block_ids.insert(index, id);
                Vec::new()
            }
            Some("content_block_delta") => {
                let Some(message) = self.streaming.as_ref() else {
                    return Vec::new();
                };
                let message_id = event
                    .get("index")
                    .and_then(Value::as_u64)
                    .and_then(|index| message.block_ids.get(&index))
                    .unwrap_or(&message.id)
                    .clone();
                let Some(delta) = event.get("delta") else {
                    return Vec::new();
                };
                let body = match str_field(delta, "type") {
                    Some("text_delta") => match str_field(delta, "text") {
                        Some(text) if !text.is_empty() => EventBody::MessageDelta {
                            message_id,
                            role: Role::Assistant,
                            text: text.to_owned(),
                        },
                        _ => return Vec::new(),
                    },
                    Some("thinking_delta") => match str_field(delta, "thinking") {
                        Some(text) if !text.is_empty() => EventBody::ThinkingDelta {
                            message_id,
                            text: text.to_owned(),
                        },
                        _ => return Vec::new(),
                    },
                    // input_json_delta (the tool call comes whole in the assistant line),
                    // signature_delta.
                    _ => return Vec::new(),
                };
                vec![Output::Event(body)]
            }
            Some("message_stop") => {
                self.streaming = None;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn assistant(&mut self, line: &Value) -> Vec<Output> {
        let Some(message) = line.get("message") else {
            return Vec::new();
        };
        let message_id = str_field(message, "id").unwrap_or_default().to_owned();
        let Some(blocks) = message.get("content").and_then(Value::as_array) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for block in blocks {
            match str_field(block, "type") {
                Some("text") => {
                    let n = count(&mut self.text_blocks, &message_id);
                    let text = str_field(block, "text").unwrap_or_default();
                    if !text.is_empty() {
                        out.push(Output::Event(EventBody::Message {
                            message_id: numbered(&message_id, n),
                            role: Role::Assistant,
                            text: text.to_owned(),
                            attachments: Vec::new(),
                            sent_by: None,
                        }));
                    }
                }
                Some("thinking") => {
                    let n = count(&mut self.thinking_blocks, &message_id);
                    let text = str_field(block, "thinking").unwrap_or_default();
                    if !text.is_empty() {
                        out.push(Output::Event(EventBody::Thinking {
                            message_id: numbered(&message_id, n),
                            text: text.to_owned(),
                        }));
                    }
                }
                Some("tool_use") => {
                    let Some(tool_use_id) = str_field(block, "id") else {
                        continue;
                    };
                    let name = str_field(block, "name").unwrap_or(UNKNOWN_TOOL).to_owned();
                    self.tool_names.insert(tool_use_id.to_owned(), name.clone());
                    out.push(Output::Event(EventBody::Tool {
                        tool_use_id: tool_use_id.to_owned(),
                        name,
                        status: ToolStatus::Created,
                        input: Some(block.get("input").cloned().unwrap_or_else(|| json!({}))),
                        output: None,
                        reason: None,
                    }));
                }
                // redacted_thinking, server tool blocks.
                _ => {}
            }
        }
        out
    }

    fn user(&mut self, line: &Value) -> Vec<Output> {
        // A plain-string content is an echo of our own message.
        let Some(blocks) = line
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for block in blocks {
            if str_field(block, "type") != Some("tool_result") {
                continue;
            }
            let Some(tool_use_id) = str_field(block, "tool_use_id") else {
                continue;
            };
            let name = self
                .tool_names
                .remove(tool_use_id)
                .unwrap_or_else(|| UNKNOWN_TOOL.to_owned());
            let text = result_text(block.get("content"));
            let is_error = block
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let denial = self
                .denied
                .remove(tool_use_id)
                .or_else(|| (is_error && is_refusal(&text)).then(|| text.clone()));
            let (status, output, reason) = match denial {
                Some(reason) => (ToolStatus::Denied, None, Some(truncate_output(&reason))),
                None if is_error => (ToolStatus::Failed, Some(truncate_output(&text)), None),
                None => (ToolStatus::Succeeded, Some(truncate_output(&text)), None),
            };
            out.push(Output::Event(EventBody::Tool {
                tool_use_id: tool_use_id.to_owned(),
                name,
                status,
                input: None,
                output,
                reason,
            }));
        }
        out
    }

    fn result(&mut self, line: &Value) -> Vec<Output> {
        // The turn is over: its messages' block counts are no longer needed.
        self.text_blocks.clear();
        self.thinking_blocks.clear();
        self.streaming = None;

        // Older versions report some failures (`error_during_execution`) with is_error false.
        let is_error = line
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || str_field(line, "subtype").is_some_and(|s| s != "success");
        let mut out = vec![Output::Event(EventBody::TurnEnded {
            is_error,
            duration_ms: line.get("duration_ms").and_then(Value::as_u64),
            result: string_field(line, "result"),
        })];
        let usage = line.get("usage");
        let cost_usd = line.get("total_cost_usd").and_then(Value::as_f64);
        if usage.is_some() || cost_usd.is_some() {
            let tokens = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_u64);
            out.push(Output::Event(EventBody::Usage(Usage {
                input_tokens: tokens("input_tokens").unwrap_or(0),
                output_tokens: tokens("output_tokens").unwrap_or(0),
                cache_read_tokens: tokens("cache_read_input_tokens"),
                cache_write_tokens: tokens("cache_creation_input_tokens"),
                cost_usd,
            })));
        }
        out
    }
}

fn control_request(line: &Value) -> Vec<Output> {
    let Some(request_id) = string_field(line, "request_id") else {
        return vec![Output::Event(EventBody::Error {
            message: "the agent sent a control request without a request_id".to_owned(),
            code: Some("unparsed_output".to_owned()),
        })];
    };
    let request = line.get("request").unwrap_or(&Value::Null);
    let subtype = str_field(request, "subtype").unwrap_or_default();
    if subtype != "can_use_tool" {
        return vec![Output::UnsupportedControl {
            request_id,
            subtype: subtype.to_owned(),
        }];
    }
    vec![Output::Permission(PermissionRequest {
        request_id,
        tool_name: str_field(request, "tool_name")
            .unwrap_or(UNKNOWN_TOOL)
            .to_owned(),
        input: request.get("input").cloned().unwrap_or_else(|| json!({})),
        tool_use_id: string_field(request, "tool_use_id"),
    })]
}

/// A user message for Claude Code's stdin.
pub fn user_message(text: &str) -> String {
    json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
        "parent_tool_use_id": null,
        "session_id": "",
    })
    .to_string()
}

/// Allows the tool call of the permission request `request_id`, with its arguments unchanged
/// (`input` as the request had it).
pub fn permission_allow(request_id: &str, input: &Value) -> String {
    control_success(
        request_id,
        json!({"behavior": "allow", "updatedInput": input}),
    )
}

/// Denies the tool call of the permission request `request_id`; Claude Code tells the model
/// `message`.
pub fn permission_deny(request_id: &str, message: &str) -> String {
    control_success(request_id, json!({"behavior": "deny", "message": message}))
}

/// Answers the control request `request_id` with an error.
pub fn control_error(request_id: &str, error: &str) -> String {
    json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    })
    .to_string()
}

fn control_success(request_id: &str, response: Value) -> String {
    json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    })
    .to_string()
}

/// Whether a line is the main agent's (subagents' lines name the Task call they serve).
fn is_main_agent(line: &Value) -> bool {
    line.get("parent_tool_use_id").is_none_or(Value::is_null)
}

/// Whether a failed tool result is Claude Code's refusal to run the tool.
fn is_refusal(text: &str) -> bool {
    text.starts_with(REFUSAL_PREFIX) || REFUSAL_MARKERS.iter().any(|m| text.contains(m))
}

/// A tool result's text: the string, or its text blocks joined by newlines (other blocks,
/// such as images, are named in brackets).
fn result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|block| match str_field(block, "type") {
                Some("text") => str_field(block, "text").unwrap_or_default().to_owned(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// One more block of `message_id`: how many there are now.
fn count(counts: &mut HashMap<String, usize>, message_id: &str) -> usize {
    let n = counts.entry(message_id.to_owned()).or_insert(0);
    *n += 1;
    *n
}

/// The id of a message's `n`-th block of a kind: the message id, then `<id>:2`, `<id>:3`...
fn numbered(message_id: &str, n: usize) -> String {
    if n <= 1 {
        message_id.to_owned()
    } else {
        format!("{message_id}:{n}")
    }
}

fn str_field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

fn string_field(value: &Value, name: &str) -> Option<String> {
    str_field(value, name).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn events(normalizer: &mut Normalizer, lines: &[Value]) -> Vec<Output> {
        lines
            .iter()
            .flat_map(|line| normalizer.line(&format!("{line}\n")))
            .collect()
    }

    fn event(body: EventBody) -> Output {
        Output::Event(body)
    }

    fn stream(event: Value) -> Value {
        json!({"type": "stream_event", "event": event, "session_id": "s-1",
               "parent_tool_use_id": null, "uuid": "u"})
    }

    fn assistant(id: &str, block: Value) -> Value {
        json!({"type": "assistant", "message": {"id": id, "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5", "content": [block], "stop_reason": null,
               "usage": {"input_tokens": 3, "output_tokens": 1}},
               "parent_tool_use_id": null, "session_id": "s-1", "uuid": "u"})
    }

    fn tool_result(id: &str, content: Value, is_error: bool) -> Value {
        json!({"type": "user", "message": {"role": "user", "content": [
                  {"type": "tool_result", "tool_use_id": id, "content": content,
                   "is_error": is_error}]},
               "parent_tool_use_id": null, "session_id": "s-1", "uuid": "u"})
    }

    fn init() -> Value {
        json!({"type": "system", "subtype": "init", "cwd": "/work/tree", "session_id": "s-1",
               "tools": ["Bash", "Read"], "mcp_servers": [], "model": "claude-sonnet-4-5",
               "permissionMode": "default", "apiKeySource": "none", "uuid": "u"})
    }

    #[test]
    fn a_full_turn_with_partial_messages() {
        let mut n = Normalizer::new("claude");
        let out = events(
            &mut n,
            &[
                init(),
                json!({"type": "user", "message": {"role": "user", "content": [
                    {"type": "text", "text": "list the files"}]}, "session_id": "s-1"}),
                stream(json!({"type": "message_start", "message": {"id": "msg_1",
                    "type": "message", "role": "assistant", "content": [],
                    "model": "claude-sonnet-4-5"}})),
                stream(json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}})),
                stream(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": "ls will do"}})),
                stream(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "signature_delta", "signature": "abc"}})),
                stream(json!({"type": "content_block_stop", "index": 0})),
                assistant(
                    "msg_1",
                    json!({"type": "thinking", "thinking": "ls will do", "signature": "abc"}),
                ),
                stream(json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "text", "text": ""}})),
                stream(json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "text_delta", "text": "Let me "}})),
                stream(json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "text_delta", "text": "look."}})),
                stream(json!({"type": "content_block_stop", "index": 1})),
                assistant("msg_1", json!({"type": "text", "text": "Let me look."})),
                stream(json!({"type": "content_block_start", "index": 2,
                    "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                      "input": {}}})),
                stream(json!({"type": "content_block_delta", "index": 2,
                    "delta": {"type": "input_json_delta", "partial_json": "{\"command\""}})),
                stream(json!({"type": "content_block_stop", "index": 2})),
                assistant(
                    "msg_1",
                    json!({"type": "tool_use", "id": "toolu_1", "name": "Bash",
                           "input": {"command": "ls"}}),
                ),
                stream(
                    json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": 20}}),
                ),
                stream(json!({"type": "message_stop"})),
                json!({"type": "control_request", "request_id": "req_1", "request": {
                    "subtype": "can_use_tool", "tool_name": "Bash",
                    "input": {"command": "ls"}, "tool_use_id": "toolu_1",
                    "permission_suggestions": []}}),
                tool_result(
                    "toolu_1",
                    json!([{"type": "text", "text": "Cargo.toml\nsrc"}]),
                    false,
                ),
                stream(json!({"type": "message_start", "message": {"id": "msg_2"}})),
                stream(json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}})),
                stream(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "Two entries."}})),
                assistant("msg_2", json!({"type": "text", "text": "Two entries."})),
                stream(json!({"type": "message_stop"})),
                json!({"type": "result", "subtype": "success", "is_error": false,
                       "duration_ms": 5230, "duration_api_ms": 4100, "num_turns": 2,
                       "result": "Two entries.", "session_id": "s-1",
                       "total_cost_usd": 0.0123,
                       "usage": {"input_tokens": 10, "output_tokens": 42,
                                 "cache_creation_input_tokens": 500,
                                 "cache_read_input_tokens": 12000},
                       "permission_denials": []}),
                json!({"type": "system", "subtype": "init", "session_id": "s-1"}),
            ],
        );
        assert_eq!(
            out,
            vec![
                event(EventBody::SessionStarted {
                    agent: "claude".into(),
                    protocol: "claude-stream-json".into(),
                    model: Some("claude-sonnet-4-5".into()),
                    cwd: Some("/work/tree".into()),
                    agent_session_id: Some("s-1".into()),
                }),
                event(EventBody::ThinkingDelta {
                    message_id: "msg_1".into(),
                    text: "ls will do".into(),
                }),
                event(EventBody::Thinking {
                    message_id: "msg_1".into(),
                    text: "ls will do".into(),
                }),
                event(EventBody::MessageDelta {
                    message_id: "msg_1".into(),
                    role: Role::Assistant,
                    text: "Let me ".into(),
                }),
                event(EventBody::MessageDelta {
                    message_id: "msg_1".into(),
                    role: Role::Assistant,
                    text: "look.".into(),
                }),
                event(EventBody::Message {
                    message_id: "msg_1".into(),
                    role: Role::Assistant,
                    text: "Let me look.".into(),
                    attachments: vec![],
                    sent_by: None,
                }),
                event(EventBody::Tool {
                    tool_use_id: "toolu_1".into(),
                    name: "Bash".into(),
                    status: ToolStatus::Created,
                    input: Some(json!({"command": "ls"})),
                    output: None,
                    reason: None,
                }),
                Output::Permission(PermissionRequest {
                    request_id: "req_1".into(),
                    tool_name: "Bash".into(),
                    input: json!({"command": "ls"}),
                    tool_use_id: Some("toolu_1".into()),
                }),
                event(EventBody::Tool {
                    tool_use_id: "toolu_1".into(),
                    name: "Bash".into(),
                    status: ToolStatus::Succeeded,
                    input: None,
                    output: Some("Cargo.toml\nsrc".into()),
                    reason: None,
                }),
                event(EventBody::MessageDelta {
                    message_id: "msg_2".into(),
                    role: Role::Assistant,
                    text: "Two entries.".into(),
                }),
                event(EventBody::Message {
                    message_id: "msg_2".into(),
                    role: Role::Assistant,
                    text: "Two entries.".into(),
                    attachments: vec![],
                    sent_by: None,
                }),
                event(EventBody::TurnEnded {
                    is_error: false,
                    duration_ms: Some(5230),
                    result: Some("Two entries.".into()),
                }),
                event(EventBody::Usage(Usage {
                    input_tokens: 10,
                    output_tokens: 42,
                    cache_read_tokens: Some(12000),
                    cache_write_tokens: Some(500),
                    cost_usd: Some(0.0123),
                })),
            ]
        );
    }

    #[test]
    fn later_text_blocks_of_a_message_get_numbered_ids() {
        let mut n = Normalizer::new("claude");
        let out = events(
            &mut n,
            &[
                stream(json!({"type": "message_start", "message": {"id": "msg_1"}})),
                stream(json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}})),
                stream(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "One."}})),
                assistant("msg_1", json!({"type": "text", "text": "One."})),
                stream(json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "text", "text": ""}})),
                stream(json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "text_delta", "text": "Two."}})),
                assistant("msg_1", json!({"type": "text", "text": "Two."})),
            ],
        );
        let ids: Vec<(&str, &str)> = out
            .iter()
            .map(|o| match o {
                Output::Event(EventBody::MessageDelta { message_id, .. }) => {
                    ("delta", message_id.as_str())
                }
                Output::Event(EventBody::Message { message_id, .. }) => {
                    ("message", message_id.as_str())
                }
                _ => ("other", ""),
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("delta", "msg_1"),
                ("message", "msg_1"),
                ("delta", "msg_1:2"),
                ("message", "msg_1:2")
            ]
        );
    }

    #[test]
    fn denied_tools_end_denied() {
        let mut n = Normalizer::new("claude");
        n.line(
            &assistant(
                "msg_1",
                json!({"type": "tool_use", "id": "toolu_1", "name": "Bash",
                   "input": {"command": "rm -rf /"}}),
            )
            .to_string(),
        );
        n.denied("toolu_1", "not on my watch");
        let out = n.line(
            &tool_result("toolu_1", json!("The user doesn't want to proceed"), true).to_string(),
        );
        assert_eq!(
            out,
            vec![event(EventBody::Tool {
                tool_use_id: "toolu_1".into(),
                name: "Bash".into(),
                status: ToolStatus::Denied,
                input: None,
                output: None,
                reason: Some("not on my watch".into()),
            })]
        );

        // Refused by Claude Code's own rules: recognised by its text.
        let refusal = "Claude requested permissions to use Write, but you haven't granted it yet.";
        let out = n.line(&tool_result("toolu_2", json!(refusal), true).to_string());
        assert_eq!(
            out,
            vec![event(EventBody::Tool {
                tool_use_id: "toolu_2".into(),
                name: "unknown".into(),
                status: ToolStatus::Denied,
                input: None,
                output: None,
                reason: Some(refusal.into()),
            })]
        );

        // The same words in a successful result are just output; an error is a failure.
        let out = n.line(&tool_result("toolu_3", json!(refusal), false).to_string());
        assert!(matches!(
            out.as_slice(),
            [Output::Event(EventBody::Tool {
                status: ToolStatus::Succeeded,
                ..
            })]
        ));
        let out = n.line(&tool_result("toolu_4", json!("exit code 1"), true).to_string());
        assert_eq!(
            out,
            vec![event(EventBody::Tool {
                tool_use_id: "toolu_4".into(),
                name: "unknown".into(),
                status: ToolStatus::Failed,
                input: None,
                output: Some("exit code 1".into()),
                reason: None,
            })]
        );
    }

    #[test]
    fn failed_turns_and_other_lines() {
        let mut n = Normalizer::new("claude");
        assert_eq!(
            n.line("Error: something broke"),
            vec![event(EventBody::Error {
                message: "the agent wrote a line that is not stream-json: Error: something broke"
                    .into(),
                code: Some("unparsed_output".into()),
            })]
        );
        assert!(matches!(
            n.line("[1, 2]").as_slice(),
            [Output::Event(EventBody::Error { .. })]
        ));
        assert!(n.line("").is_empty());
        assert!(n.line(r#"{"type":"keep_alive"}"#).is_empty());
        assert!(
            n.line(r#"{"type":"control_response","response":{}}"#)
                .is_empty()
        );
        assert!(n.line(r#"{"type":"something_new","x":1}"#).is_empty());
        // Echoes of our own messages.
        assert!(n.line(&user_message("hello")).is_empty());
        assert!(
            n.line(r#"{"type":"user","message":{"role":"user","content":"hi"}}"#)
                .is_empty()
        );
        // Subagents stream nothing, but their whole messages count.
        let sub = json!({"type": "stream_event", "parent_tool_use_id": "toolu_9",
            "event": {"type": "content_block_delta", "index": 0,
                      "delta": {"type": "text_delta", "text": "sub"}}});
        assert!(n.line(&sub.to_string()).is_empty());

        assert_eq!(
            n.line(r#"{"type":"control_request","request_id":"r2","request":{"subtype":"hook_callback"}}"#),
            vec![Output::UnsupportedControl {
                request_id: "r2".into(),
                subtype: "hook_callback".into(),
            }]
        );
        let out = n.line(
            &json!({"type": "result", "subtype": "error_max_turns", "is_error": false,
                    "duration_ms": 100, "num_turns": 5})
            .to_string(),
        );
        assert_eq!(
            out,
            vec![event(EventBody::TurnEnded {
                is_error: true,
                duration_ms: Some(100),
                result: None,
            })]
        );
    }

    #[test]
    fn stdin_lines() {
        let parse = |s: String| -> Value {
            assert!(!s.contains('\n'));
            serde_json::from_str(&s).unwrap()
        };
        assert_eq!(
            parse(user_message("hi\nthere")),
            json!({"type": "user", "message": {"role": "user",
                   "content": [{"type": "text", "text": "hi\nthere"}]},
                   "parent_tool_use_id": null, "session_id": ""})
        );
        assert_eq!(
            parse(permission_allow("r1", &json!({"command": "ls"}))),
            json!({"type": "control_response", "response": {"subtype": "success",
                   "request_id": "r1",
                   "response": {"behavior": "allow", "updatedInput": {"command": "ls"}}}})
        );
        assert_eq!(
            parse(permission_deny("r1", "no")),
            json!({"type": "control_response", "response": {"subtype": "success",
                   "request_id": "r1", "response": {"behavior": "deny", "message": "no"}}})
        );
        assert_eq!(
            parse(control_error("r2", "unsupported")),
            json!({"type": "control_response", "response": {"subtype": "error",
                   "request_id": "r2", "error": "unsupported"}})
        );
    }
}
