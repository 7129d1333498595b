//! Chat sessions: an agent run in its structured mode, its output turned into one normalized,
//! versioned event schema ([`Event`]) and appended to the session's JSON stream
//! (`hosts/{host}/sessions/{id}/chat`, content type `application/json`).
//!
//! Schema rules, for every client:
//! - Every event has `v` (the schema version, [`SCHEMA_VERSION`]), `type` and `at` (RFC 3339,
//!   milliseconds, the host's clock). New event types and new optional fields may appear
//!   without a version change: clients skip types they do not know and ignore unknown fields.
//!   A change that alters the meaning of an existing field bumps `v`.
//! - A message streams as `message_delta` events and then ends with one `message` holding the
//!   whole text (clients that want no deltas read only `message`). Thinking likewise.
//! - A tool call is one `tool` event per status change, all with the same `tool_use_id`; the
//!   last one says how it ended.
//! - An approval is an `approval_requested` and then exactly one `approval_answered` (by a
//!   member, by the timeout's default, because the agent stopped waiting, or because the
//!   session ended).
//! - `session_ended` is the last event.
//!
//! Also here: the tunnel messages that carry follow-ups and approval answers to the daemon,
//! their caps, attachment file names, and the deterministic title fallback.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The event schema's version.
pub const SCHEMA_VERSION: u32 = 1;
/// The content type of chat streams.
pub const CHAT_CONTENT_TYPE: &str = "application/json";

/// Tunnel request: a follow-up message for a chat session (body [`ChatMessage`], answer
/// [`Delivered`]).
pub const MESSAGE: &str = "session.message";
/// Tunnel request: answer an approval request (body [`ApprovalAnswer`], answer
/// [`ApprovalOutcome`]).
pub const APPROVE: &str = "session.approve";

/// A follow-up's most characters.
pub const MAX_MESSAGE: usize = 100_000;
/// The most attachments one follow-up carries.
pub const MAX_ATTACHMENTS: usize = 8;
/// The most bytes of one attachment (decoded).
pub const MAX_ATTACHMENT_BYTES: usize = 256 * 1024;
/// The most bytes of all of one follow-up's attachments together (decoded): with base64 and
/// the text this stays under the tunnel's 1 MiB frame.
pub const MAX_ATTACHMENTS_TOTAL: usize = 512 * 1024;
/// The longest attachment file name, in bytes, after sanitising.
pub const MAX_FILENAME: usize = 100;
/// An approval reason's most characters.
pub const MAX_REASON: usize = 1_000;
/// Where attachments land, relative to the worktree: `<dir>/<message id>/<name>`.
pub const ATTACHMENT_DIR: &str = ".tether/attachments";
/// The longest title.
pub const MAX_TITLE: usize = 80;

/// Id prefixes: follow-up messages and approval requests.
pub const MESSAGE_ID_PREFIX: &str = "msg";
pub const APPROVAL_ID_PREFIX: &str = "apr";

/// Where a chat session's events live, under `/v1/stream/`.
pub fn stream_path(host_id: &str, session_id: &str) -> String {
    format!("hosts/{host_id}/sessions/{session_id}/chat")
}

/// One event of a chat stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Event {
    /// The schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// When it happened (RFC 3339, milliseconds).
    pub at: String,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    pub fn new(at_ms: i64, body: EventBody) -> Self {
        Self {
            v: SCHEMA_VERSION,
            at: crate::time::rfc3339(at_ms),
            body,
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// Where a tool call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    /// The agent asked for it.
    Created,
    /// Waiting for a member's answer (see the `approval_requested` event).
    AwaitingApproval,
    /// Allowed and under way.
    Running,
    Succeeded,
    Failed,
    /// Refused (by a member, a timeout's default, a policy or the agent's own rules).
    Denied,
}

/// An approval's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// What asked for an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ApprovalSource {
    /// The agent's own permission check (Claude Code's permission prompt).
    Agent,
    /// A guardrail policy answered "ask".
    Guardrail,
}

/// Who answered an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answerer {
    /// A member of the org, through the API, MCP or `tether approve`.
    Member { id: String, role: String },
    /// Nobody answered in time: the configured default applied.
    Timeout,
    /// The session ended while the request waited.
    SessionEnded,
    /// The agent stopped waiting (its hook was ended, say): the default was recorded.
    Withdrawn,
}

/// A file a follow-up brought, as it landed in the worktree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Attachment {
    /// The sanitised file name.
    pub name: String,
    /// Its path relative to the worktree.
    pub path: String,
    pub bytes: u64,
}

/// Token counts and cost, as the agent reported them (per turn).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// The agent's own cost figure, when it gives one (Claude Code's `total_cost_usd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The agent runs (for per-turn agents: once, at the first turn).
    SessionStarted {
        /// The preset.
        agent: String,
        /// The structured protocol spoken: `claude-stream-json` or `codex-json`.
        protocol: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        /// The agent's own id for the conversation (Claude's session id, Codex's thread id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_session_id: Option<String>,
    },
    /// A piece of a message being written.
    MessageDelta {
        message_id: String,
        role: Role,
        text: String,
    },
    /// A whole message: the user's (the first prompt and each follow-up, in the order the
    /// agent got them) or the assistant's.
    Message {
        message_id: String,
        role: Role,
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Attachment>,
        /// For follow-ups: the member who sent it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_by: Option<String>,
    },
    /// A piece of the agent's visible reasoning.
    ThinkingDelta { message_id: String, text: String },
    /// A whole block of reasoning.
    Thinking { message_id: String, text: String },
    /// A tool call changed status.
    Tool {
        tool_use_id: String,
        name: String,
        status: ToolStatus,
        /// The call's arguments (on `created`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
        /// What it returned (on `succeeded`/`failed`), at most 64 KiB of text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        /// Why it failed or was denied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The agent waits for a member to allow or deny a tool call.
    ApprovalRequested {
        request_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool_use_id: Option<String>,
        tool: String,
        input: Value,
        source: ApprovalSource,
        /// The guardrail's (or agent's) reason for asking.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Unanswered by then, `default` applies.
        expires_at: String,
        default: Decision,
        /// The least role that may answer: `member`, `admin` or `owner`.
        role: String,
    },
    /// An approval was answered.
    ApprovalAnswered {
        request_id: String,
        decision: Decision,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        answered_by: Answerer,
    },
    /// A turn ended (the agent waits for the next message).
    TurnEnded {
        is_error: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
        /// The agent's final answer for the turn, when it gives one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// Token usage and cost of the turn that just ended.
    Usage(Usage),
    /// Something went wrong (the session may go on).
    Error {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// The session's title.
    Title {
        title: String,
        /// `llm` or `fallback`.
        source: String,
    },
    /// The last event of a session.
    SessionEnded {
        /// The session's final status: `exited`, `failed` or `stopped`.
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A file in a follow-up (API body and tunnel message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AttachmentFile {
    /// The file's name; sanitised (see [`sanitize_filename`]).
    pub name: String,
    /// Its bytes, base64.
    pub data_base64: String,
}

/// A follow-up for a running chat session (a [`MESSAGE`] request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub session_id: String,
    /// Chosen by the edge (`msg_...`): a retried delivery is recognised.
    pub message_id: String,
    pub text: String,
    /// Names already sanitised and unique.
    #[serde(default)]
    pub attachments: Vec<AttachmentFile>,
    /// The member who sent it.
    pub sent_by: String,
}

/// The daemon's answer to a [`MESSAGE`] request: the message is in the agent's input and in
/// the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Delivered {
    pub message_id: String,
    pub attachments: Vec<Attachment>,
}

/// A member's answer to an approval request (an [`APPROVE`] request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAnswer {
    pub session_id: String,
    pub request_id: String,
    pub decision: Decision,
    pub reason: Option<String>,
    /// Always a [`Answerer::Member`].
    pub answered_by: Answerer,
}

/// How the daemon took an [`ApprovalAnswer`] (always a successful tunnel answer; the edge
/// turns the outcome into a status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApprovalOutcome {
    /// The agent has the answer (200).
    Answered {
        request_id: String,
        decision: Decision,
        answered_by: Answerer,
    },
    /// No such request in this session (404).
    Unknown,
    /// It was answered already, by someone or by its timeout (409 `already_answered`).
    AlreadyAnswered {
        decision: Decision,
        answered_by: Answerer,
    },
    /// The member's role is below the one the request needs (403 `role_too_low`).
    RoleTooLow { required: String },
}

/// A member's answer to an approval request, as the org records it once the daemon took it
/// (`POST /v1/sessions/{id}/approvals/{request}`, `GET /v1/sessions/{id}/approvals`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApprovalRecord {
    pub request_id: String,
    pub session_id: String,
    pub decision: Decision,
    pub reason: Option<String>,
    /// Always a [`Answerer::Member`]: who answered, with the role they held.
    pub answered_by: Answerer,
    /// When the org recorded it (RFC 3339).
    pub answered_at: String,
}

/// The most answers `GET /v1/sessions/{id}/approvals` lists (the newest).
pub const MAX_LISTED_APPROVALS: i64 = 200;

/// Role ranks for approvals: `member` < `admin` < `owner`; None for anything else.
pub fn role_rank(role: &str) -> Option<u8> {
    match role {
        "member" => Some(0),
        "admin" => Some(1),
        "owner" => Some(2),
        _ => None,
    }
}

/// A file name as it may land in a worktree: the last path component only, characters outside
/// `A-Za-z0-9._-` (spaces included) replaced by `_`, no leading dots, at most
/// [`MAX_FILENAME`] bytes (the extension kept). None when nothing usable is left.
pub fn sanitize_filename(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mapped: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches('.');
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '_') {
        return None;
    }
    if trimmed.len() <= MAX_FILENAME {
        return Some(trimmed.to_owned());
    }
    // Keep a short extension; cut the stem (ASCII only by now, so byte cuts are safe).
    let ext = trimmed
        .rfind('.')
        .map(|i| &trimmed[i..])
        .filter(|e| e.len() <= 16)
        .unwrap_or("");
    let stem = &trimmed[..MAX_FILENAME - ext.len()];
    Some(format!("{stem}{ext}"))
}

/// Unique, sanitised names for a follow-up's files, in order: a repeated name gets `-2`,
/// `-3`, ... before its extension. Err names the first unusable one.
pub fn unique_filenames<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let clean = sanitize_filename(name).ok_or_else(|| name.to_owned())?;
        let (stem, ext) = match clean.rfind('.') {
            Some(i) if i > 0 => (clean[..i].to_owned(), clean[i..].to_owned()),
            _ => (clean.clone(), String::new()),
        };
        let mut candidate = clean.clone();
        let mut n = 2;
        while out.iter().any(|o| o.eq_ignore_ascii_case(&candidate)) {
            candidate = format!("{stem}-{n}{ext}");
            n += 1;
        }
        out.push(candidate);
    }
    Ok(out)
}

/// A session's title when no model makes one: the prompt's first meaningful line, whitespace
/// collapsed, markdown markers dropped, cut at a word boundary to at most [`MAX_TITLE`]
/// characters with an ellipsis. None for an empty prompt.
pub fn fallback_title(prompt: &str) -> Option<String> {
    let line = prompt
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches(['#', '>', '-', '*', ' '])
                .trim()
        })
        .find(|l| !l.is_empty())?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let full = words.join(" ");
    if full.chars().count() <= MAX_TITLE {
        return Some(full);
    }
    let mut title = String::new();
    for w in &words {
        let next = if title.is_empty() {
            w.to_string()
        } else {
            format!("{title} {w}")
        };
        if next.chars().count() > MAX_TITLE - 1 {
            break;
        }
        title = next;
    }
    if title.is_empty() {
        title = full.chars().take(MAX_TITLE - 1).collect();
    }
    title.push('…');
    Some(title)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn events_have_a_flat_versioned_shape() {
        let e = Event::new(
            0,
            EventBody::Tool {
                tool_use_id: "t1".into(),
                name: "Bash".into(),
                status: ToolStatus::AwaitingApproval,
                input: Some(json!({"command": "ls"})),
                output: None,
                reason: None,
            },
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"v": 1, "at": "1970-01-01T00:00:00.000Z", "type": "tool", "tool_use_id": "t1",
                   "name": "Bash", "status": "awaiting_approval", "input": {"command": "ls"}})
        );
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        let usage = Event::new(
            0,
            EventBody::Usage(Usage {
                input_tokens: 3,
                output_tokens: 4,
                cost_usd: Some(0.5),
                ..Usage::default()
            }),
        );
        let v = serde_json::to_value(&usage).unwrap();
        assert_eq!(v["type"], "usage");
        assert_eq!(v["input_tokens"], 3);
        assert_eq!(v["cost_usd"], 0.5);
        let answered = serde_json::to_value(EventBody::ApprovalAnswered {
            request_id: "apr_1".into(),
            decision: Decision::Deny,
            reason: None,
            answered_by: Answerer::Timeout,
        })
        .unwrap();
        assert_eq!(answered["answered_by"], json!({"kind": "timeout"}));
    }

    #[test]
    fn file_names_are_made_safe() {
        assert_eq!(sanitize_filename("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(sanitize_filename("C:\\x\\a b.txt").unwrap(), "a_b.txt");
        assert_eq!(sanitize_filename(".bashrc").unwrap(), "bashrc");
        assert_eq!(sanitize_filename("ré$umé.pdf").unwrap(), "r__um_.pdf");
        assert_eq!(sanitize_filename(".."), None);
        assert_eq!(sanitize_filename("a/"), None);
        assert_eq!(sanitize_filename("$$$"), None);
        let long = format!("{}.tar.gz", "x".repeat(300));
        let cut = sanitize_filename(&long).unwrap();
        assert_eq!(cut.len(), MAX_FILENAME);
        assert!(cut.ends_with(".gz"), "{cut}");
        assert_eq!(
            unique_filenames(["a.txt", "A.txt", "b", "b", "dir/a.txt"]).unwrap(),
            ["a.txt", "A-2.txt", "b", "b-2", "a-3.txt"]
        );
        assert_eq!(unique_filenames(["ok", "/"]).unwrap_err(), "/");
    }

    #[test]
    fn fallback_titles_are_short_first_lines() {
        assert_eq!(
            fallback_title("\n\n## Fix the   flaky login test\nmore").unwrap(),
            "Fix the flaky login test"
        );
        let long = "word ".repeat(40);
        let t = fallback_title(&long).unwrap();
        assert!(t.chars().count() <= MAX_TITLE && t.ends_with('…'), "{t}");
        assert!(!t.contains("  "));
        let one = "x".repeat(200);
        assert_eq!(fallback_title(&one).unwrap().chars().count(), MAX_TITLE);
        assert_eq!(fallback_title("  \n "), None);
    }

    #[test]
    fn roles_rank() {
        assert!(role_rank("member") < role_rank("admin"));
        assert!(role_rank("admin") < role_rank("owner"));
        assert_eq!(role_rank("host"), None);
    }
}
