//! Agent sessions: the record the org keeps of each one, and the messages that start and drive
//! it. The edge, the Org object and the daemon all use these types.
//!
//! The flow: `POST /v1/sessions` records a [`Session`] (status `queued`) in the Org object,
//! creates its terminal stream and queues a [`START`] command carrying a [`StartSession`] for
//! the chosen host. The daemon creates the worktree, runs the agent in a PTY, ships the
//! terminal's bytes into the stream and reports each status change back ([`SessionUpdate`]).
//! Input and resizes reach the running agent as tunnel requests ([`INPUT`], [`RESIZE`]); a stop
//! is a command ([`STOP`]) so it also reaches a host that is briefly away.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Command kind: start a session (body [`StartSession`]).
pub const START: &str = "session.start";
/// Command kind: stop a session (body [`Stop`]).
pub const STOP: &str = "session.stop";
/// Tunnel request: type into a session's terminal (body [`Input`]).
pub const INPUT: &str = "session.input";
/// Tunnel request: resize a session's terminal (body [`Resize`]).
pub const RESIZE: &str = "session.resize";
/// Tunnel request: the host's worktrees (body `{}`).
pub const WORKTREES: &str = "worktrees.list";

/// The content type of terminal streams: raw bytes as the PTY wrote them.
pub const TERMINAL_CONTENT_TYPE: &str = "application/octet-stream";
/// The most bytes one input call carries.
pub const MAX_INPUT: usize = 64 * 1024;
/// Terminal sizes are 1 to this many columns and rows.
pub const MAX_TERMINAL_SIDE: u16 = 1000;
/// A prompt's most characters.
pub const MAX_PROMPT: usize = 100_000;
/// How long a queued session waits for its host by default, and at most.
pub const DEFAULT_START_TIMEOUT_SECS: u32 = 600;
pub const MAX_START_TIMEOUT_SECS: u32 = 7 * 24 * 3600;
/// Past its start deadline the edge gives the daemon this much more before it records the
/// session failed (clocks differ; the daemon refuses a late start on its own clock).
pub const START_GRACE_MS: i64 = 60_000;

/// Where a session's terminal output lives, under `/v1/stream/`. Under the host's own prefix,
/// which its host token may write to.
pub fn stream_path(host_id: &str, session_id: &str) -> String {
    format!("hosts/{host_id}/sessions/{session_id}/terminal")
}

/// The prefix of every stream a host may write.
pub fn host_stream_prefix(host_id: &str) -> String {
    format!("hosts/{host_id}/")
}

/// What a session shows: a raw terminal, or a conversation (the agent in its structured
/// mode, its events normalized into the session's JSON stream: see [`crate::chat`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    #[default]
    Terminal,
    Chat,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminal => "terminal",
            Self::Chat => "chat",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Terminal, Self::Chat]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// The session's stream: `.../terminal` (bytes) or `.../chat` (JSON events).
    pub fn stream_path(self, host_id: &str, session_id: &str) -> String {
        match self {
            Self::Terminal => stream_path(host_id, session_id),
            Self::Chat => crate::chat::stream_path(host_id, session_id),
        }
    }

    /// The content type of the session's stream.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Terminal => TERMINAL_CONTENT_TYPE,
            Self::Chat => crate::chat::CHAT_CONTENT_TYPE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Recorded; the start command waits for the host.
    Queued,
    /// The host has it: creating the worktree, launching the agent.
    Starting,
    /// The agent runs.
    Running,
    /// The agent exited by itself (`exit_code` says how).
    Exited,
    /// It could not start or run (`reason` says why).
    Failed,
    /// Stopped on request, or with the daemon (`reason` says which).
    Stopped,
}

impl SessionStatus {
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Starting,
        Self::Running,
        Self::Exited,
        Self::Failed,
        Self::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Exited, failed and stopped are final: nothing changes a session after that.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Exited | Self::Failed | Self::Stopped)
    }

    /// Whether a session in this status may move to `next`: only forward, never out of a
    /// final status (repeating the current status is allowed: reports are retried).
    pub fn can_become(self, next: Self) -> bool {
        if self == next {
            return true;
        }
        let rank = |s: Self| match s {
            Self::Queued => 0,
            Self::Starting => 1,
            Self::Running => 2,
            Self::Exited | Self::Failed | Self::Stopped => 3,
        };
        !self.is_final() && rank(next) > rank(self)
    }
}

/// One agent session, as the org records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Session {
    pub id: String,
    pub project_id: String,
    pub host_id: String,
    /// The agent preset, e.g. `claude` or `codex-yolo`.
    pub agent: String,
    /// `terminal` or `chat`.
    #[serde(default)]
    pub kind: SessionKind,
    /// A short title from the first prompt (a small model's when the host has an API key,
    /// else the prompt's first line); None without a prompt.
    #[serde(default)]
    pub title: Option<String>,
    pub prompt: Option<String>,
    pub task_id: Option<String>,
    /// The worktree's branch (chosen by the daemon from the task when not given).
    pub branch: Option<String>,
    pub base_branch: Option<String>,
    /// The worktree's path on the host, once created.
    pub worktree: Option<String>,
    pub status: SessionStatus,
    /// Why it failed or was stopped.
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    /// The session's stream under `/v1/stream/`: terminal bytes, or for a chat session its
    /// JSON events.
    pub stream_path: String,
    pub cols: u16,
    pub rows: u16,
    pub created_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// A queued session not started by then fails ("host offline too long").
    pub start_by: String,
    /// What the agent last said about its progress, through its local MCP server.
    pub progress: Option<Progress>,
}

/// An agent's latest word on how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Progress {
    pub message: String,
    pub percent: Option<u8>,
    pub at: String,
}

/// The most characters of a progress message.
pub const MAX_PROGRESS: usize = 2_000;

/// An agent reports progress (`POST /v1/hosts/{host}/sessions/{id}/progress`, from the
/// daemon's local MCP server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    /// What it did or is doing, 1 to 2000 characters.
    pub message: String,
    /// How far along, 0 to 100.
    #[serde(default)]
    pub percent: Option<u8>,
}

/// A host names a session (`PUT /v1/hosts/{host}/sessions/{id}/title`): the small model's
/// title, replacing the fallback the edge gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TitleReport {
    /// 1 to 80 characters, one line.
    pub title: String,
}

/// A project's checkout on one host, registered by that host (`tether projects link`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProjectLink {
    pub project_id: String,
    pub project_name: String,
    pub host_id: String,
    /// The checkout's path on the host.
    pub path: String,
    pub linked_at: String,
}

/// A session to record, everything resolved by the Worker (project, host, prompt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSession {
    pub project_id: String,
    pub host_id: String,
    pub agent: String,
    #[serde(default)]
    pub kind: SessionKind,
    pub prompt: Option<String>,
    pub task_id: Option<String>,
    pub branch: Option<String>,
    pub base_branch: Option<String>,
    pub size: Size,
    pub start_timeout_secs: u32,
}

/// Filters and paging for listing sessions (newest first).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    pub status: Option<SessionStatus>,
    /// `terminal` or `chat`.
    pub kind: Option<SessionKind>,
    pub host_id: Option<String>,
    pub project_id: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
}

/// What the daemon needs to start a session (the body of a [`START`] command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartSession {
    pub session_id: String,
    pub project_id: String,
    pub agent: String,
    /// A chat session runs the agent in its structured mode.
    #[serde(default)]
    pub kind: SessionKind,
    /// The whole prompt, task template already applied.
    pub prompt: Option<String>,
    /// The task it works on, for naming the branch.
    pub task: Option<TaskRef>,
    pub branch: Option<String>,
    pub base_branch: Option<String>,
    pub stream_path: String,
    pub cols: u16,
    pub rows: u16,
    /// Unix ms: past this the daemon refuses to start it (the edge has given up on it).
    pub start_by_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRef {
    pub id: String,
    pub slug: String,
    pub title: String,
}

/// A status change the daemon reports (`POST /v1/hosts/{host}/sessions/{id}/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionUpdate {
    pub status: SessionStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub worktree: Option<String>,
    /// When it happened (Unix ms, the host's clock).
    pub at_ms: i64,
}

/// Keystrokes for a session's terminal (a [`INPUT`] request): base64 of the bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub session_id: String,
    pub data_base64: String,
}

/// A new terminal size (a [`RESIZE`] request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Size {
    pub cols: u16,
    pub rows: u16,
}

impl Size {
    pub fn valid(self) -> bool {
        (1..=MAX_TERMINAL_SIDE).contains(&self.cols) && (1..=MAX_TERMINAL_SIDE).contains(&self.rows)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resize {
    pub session_id: String,
    #[serde(flatten)]
    pub size: Size,
}

/// Stop a session (a [`STOP`] command).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stop {
    pub session_id: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        use SessionStatus::*;
        assert!(Queued.can_become(Starting) && Starting.can_become(Running));
        assert!(Queued.can_become(Failed) && Running.can_become(Exited));
        assert!(Running.can_become(Running), "a retried report");
        assert!(!Running.can_become(Starting) && !Running.can_become(Queued));
        for f in [Exited, Failed, Stopped] {
            for next in SessionStatus::ALL {
                assert_eq!(f.can_become(next), next == f, "{f:?} -> {next:?}");
            }
        }
        for s in SessionStatus::ALL {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn a_session_stream_sits_under_its_host() {
        let p = stream_path("hst_1", "ses_2");
        assert!(p.starts_with(&host_stream_prefix("hst_1")));
        assert!(crate::stream::valid_path(&p));
        assert!(!p.starts_with(&host_stream_prefix("hst_")));
    }
}
