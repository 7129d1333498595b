//! Chat sessions: the agent in its structured mode on pipes (no PTY), its output normalized
//! ([`crate::chat`]) into events that go, one JSON line each, into the session's spool; the
//! shipper moves them into the session's JSON stream exactly once, like terminal bytes.
//!
//! - [`EventLog`]: the spool of events. A line is written whole before its length is
//!   published, so the shipper only ever sees whole events; once the last event is in
//!   ([`EventLog::close`]) nothing more is taken.
//! - [`Chat`]: one running conversation: follow-ups ([`Chat::deliver`]: attachments into the
//!   worktree, the message into the log, then to the agent), approvals ([`Chat::ask`] waits
//!   for a member's answer or the timeout's default; [`Chat::answer`] takes an answer), and
//!   the driver ([`Chat::drive`]) that runs the agent until it exits, is stopped, or sits idle
//!   past the idle timeout.
//! - Claude Code (`claude-stream-json`) is one process for the conversation: messages and
//!   permission answers go to its stdin. Codex (`codex-json`) is one `codex exec --json`
//!   process per turn; the next turn resumes the thread.
//! - An agent's exit ends it even when a process it left behind holds its output open: the
//!   output gets [`DRAIN`] more, then the agent's process group is killed.

use crate::chat::{claude, codex};
use crate::mcp::config::SessionServer;
use crate::presets::{ChatProtocol, Preset};
use base64::Engine;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_durable::chat::{
    self, Answerer, ApprovalAnswer, ApprovalOutcome, ApprovalSource, Attachment, ChatMessage,
    Decision, Delivered, Event, EventBody, Role, ToolStatus,
};
use tether_durable::ids;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::pty::Exit;

/// The largest event line kept; a larger one is replaced by an error event (the stream takes
/// appends of up to 1 MiB).
pub const MAX_EVENT: usize = 900_000;
/// The most bytes of a tool call's input an approval request or a `created` event carries;
/// a larger input is shown as a cut preview (the agent still gets it whole).
pub const MAX_INPUT_SHOWN: usize = 64 * 1024;
/// The longest line read from an agent; longer ones are skipped (with an error event).
const MAX_LINE: usize = 8 * 1024 * 1024;
/// The longest prompt passed as one argument (Linux takes at most 128 KiB per argument);
/// a longer one goes on stdin (`-`).
const MAX_ARGV_PROMPT: usize = 100_000;
/// The most approvals one session waits for at once.
const MAX_PENDING: usize = 32;
/// Answered approvals remembered per session (to answer a late second answer with who won).
const ANSWERED_KEPT: usize = 256;
/// Follow-ups delivered, remembered per session (a retried delivery is answered again).
const DELIVERED_KEPT: usize = 256;
/// Follow-ups waiting for the agent (Codex takes them one turn at a time).
const INBOX: usize = 64;
/// Between SIGTERM and SIGKILL when a chat agent is stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// After the agent exits, how long its last output may take.
const DRAIN: Duration = Duration::from_secs(2);
/// The tail of the agent's stderr kept for the reason when it fails.
const STDERR_TAIL: usize = 2048;

/// How this machine handles chat sessions (`[chat]` in config.toml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatSettings {
    /// How long an approval waits for a member.
    pub approval_timeout: Duration,
    /// What applies when nobody answers in time.
    pub approval_default: Decision,
    /// The least org role that may answer (`member`, `admin` or `owner`).
    pub approval_role: String,
    /// With no turn under way for this long, the conversation ends (the agent exits).
    pub idle_timeout: Duration,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            approval_timeout: Duration::from_secs(300),
            approval_default: Decision::Deny,
            approval_role: "member".into(),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Why a follow-up was not delivered; the tunnel answers each with its own status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The message itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// The session is not running here, or has ended (409).
    #[error("{0}")]
    NotRunning(String),
    /// Too many messages wait for the agent (429).
    #[error("the agent has too many messages waiting; try again later")]
    Busy,
    /// The files could not be written (502).
    #[error("saving attachments: {0}")]
    Io(String),
}

/// The session's events, one JSON line each, in its spool file.
pub struct EventLog {
    file: Mutex<LogFile>,
    len: watch::Sender<u64>,
}

struct LogFile {
    file: std::fs::File,
    /// The session's last event is in: nothing more is taken.
    closed: bool,
}

impl EventLog {
    /// Opens (or creates, with its private folder) the spool for appending. A torn last line
    /// (the daemon died while writing it) is cut off first, so the file holds whole events
    /// only.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            crate::paths::ensure_private_dir(dir).map_err(std::io::Error::other)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        // Lines are at most MAX_EVENT bytes: the last line end is within the tail.
        let len = file.metadata()?.len();
        let from = len.saturating_sub(MAX_EVENT as u64 + 1);
        let mut tail = Vec::new();
        {
            use std::io::{Read, Seek};
            let mut reader = &file;
            reader.seek(std::io::SeekFrom::Start(from))?;
            reader.read_to_end(&mut tail)?;
        }
        let whole = tail
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| from + i as u64 + 1);
        if whole < len {
            file.set_len(whole)?;
        }
        let (len, _) = watch::channel(whole);
        Ok(Self {
            file: Mutex::new(LogFile {
                file,
                closed: false,
            }),
            len,
        })
    }

    /// Appends one event (stamped now); false once the log is closed.
    pub fn push(&self, body: EventBody) -> bool {
        self.write(body, false)
    }

    /// Appends the session's last event; later pushes are refused (an answer or a title that
    /// comes too late is dropped rather than written after the end).
    pub fn close(&self, last: EventBody) {
        self.write(last, true);
    }

    fn write(&self, body: EventBody, last: bool) -> bool {
        let mut line =
            serde_json::to_vec(&Event::new(crate::state::now_ms(), body)).unwrap_or_default();
        if line.len() > MAX_EVENT || line.is_empty() {
            let size = line.len();
            let fallback = EventBody::Error {
                message: format!(
                    "an event of {size} bytes was over the {MAX_EVENT}-byte limit and was dropped"
                ),
                code: Some("event_too_large".into()),
            };
            line = serde_json::to_vec(&Event::new(crate::state::now_ms(), fallback))
                .unwrap_or_default();
        }
        line.push(b'\n');
        let Ok(mut log) = self.file.lock() else {
            return false;
        };
        if log.closed {
            debug!("an event after the session's end; dropped");
            return false;
        }
        log.closed = last;
        let published = *self.len.borrow();
        if let Err(e) = log.file.write_all(&line) {
            warn!(error = %e, "writing an event to the spool failed");
            // A partly written line would put every later event out of line: cut it.
            let _ = log.file.set_len(published);
            return false;
        }
        self.len.send_modify(|n| *n += line.len() as u64);
        true
    }

    /// The spool's length, as written.
    pub fn len(&self) -> watch::Receiver<u64> {
        self.len.subscribe()
    }

    /// The approval requests in the spool at `path` that have no answer (after a crash).
    pub fn unanswered(path: &Path) -> Vec<String> {
        use std::io::BufRead;
        let Ok(file) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let mut open: Vec<String> = Vec::new();
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            match serde_json::from_str::<Event>(&line).map(|e| e.body) {
                Ok(EventBody::ApprovalRequested { request_id, .. }) => open.push(request_id),
                Ok(EventBody::ApprovalAnswered { request_id, .. }) => {
                    open.retain(|r| *r != request_id);
                }
                _ => {}
            }
        }
        open
    }
}

/// An approval waiting for its answer.
struct Pending {
    role: String,
    answer: oneshot::Sender<(Decision, Option<String>, Answerer)>,
}

#[derive(Default)]
struct Approvals {
    pending: HashMap<String, Pending>,
    answered: VecDeque<(String, Decision, Answerer)>,
}

impl Approvals {
    fn remember(&mut self, id: String, decision: Decision, by: Answerer) {
        if self.answered.len() >= ANSWERED_KEPT {
            self.answered.pop_front();
        }
        self.answered.push_back((id, decision, by));
    }
}

/// What a member's answer to one approval was, for the caller that waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Option<String>,
    pub answered_by: Answerer,
}

impl Verdict {
    /// Why the call was denied, for the agent and the log.
    pub fn denial(&self) -> String {
        let who = match &self.answered_by {
            Answerer::Member { id, .. } => format!("denied by {id}"),
            Answerer::Timeout => "nobody answered in time; denied by default".to_owned(),
            Answerer::SessionEnded => "the session ended".to_owned(),
            Answerer::Withdrawn => "the request was withdrawn".to_owned(),
        };
        match &self.reason {
            Some(r) if !r.is_empty() => format!("{who}: {r}"),
            _ => who,
        }
    }
}

/// What to ask a member about.
pub struct Ask {
    pub tool: String,
    pub input: serde_json::Value,
    pub tool_use_id: Option<String>,
    pub source: ApprovalSource,
    pub reason: Option<String>,
}

/// A tool call's input as events show it: whole up to [`MAX_INPUT_SHOWN`] bytes of JSON,
/// else `{"truncated": true, "bytes": N, "preview": "<the start of its JSON>"}`.
pub fn shown_input(input: serde_json::Value) -> serde_json::Value {
    let text = input.to_string();
    if text.len() <= MAX_INPUT_SHOWN {
        return input;
    }
    let mut cut = MAX_INPUT_SHOWN;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::json!({
        "truncated": true,
        "bytes": text.len(),
        "preview": text.get(..cut).unwrap_or_default(),
    })
}

/// One running conversation.
pub struct Chat {
    pub log: EventLog,
    settings: ChatSettings,
    worktree: PathBuf,
    approvals: Mutex<Approvals>,
    delivered: Mutex<VecDeque<Delivered>>,
    inbox: mpsc::Sender<String>,
    inbox_rx: tokio::sync::Mutex<Option<mpsc::Receiver<String>>>,
    /// Tool calls a member denied through a guardrail's hook, by tool use id, with why: the
    /// driver tells its normalizer, so the agent's refusal shows as `denied`.
    denials: Mutex<Vec<(String, String)>>,
}

/// What the driver needs to run the agent.
pub struct Start<'a> {
    pub preset: &'a Preset,
    pub program: PathBuf,
    pub env: BTreeMap<String, String>,
    pub mcp: &'a SessionServer,
    pub prompt: Option<String>,
}

/// Removes an approval whose waiter went away (a hook that was killed, say) before its
/// answer came, so nobody can answer it any more, and logs how it ended.
struct Waiting<'a> {
    chat: &'a Chat,
    id: String,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Withdrawn now, or answered just before and never taken: logged here either way
        // (an end of the session logs its own).
        let (decision, reason, by) = self.chat.expire(&self.id, Answerer::Withdrawn);
        if by != Answerer::SessionEnded {
            self.chat.log.push(EventBody::ApprovalAnswered {
                request_id: self.id.clone(),
                decision,
                reason,
                answered_by: by,
            });
        }
    }
}

impl Chat {
    pub fn new(log: EventLog, settings: ChatSettings, worktree: PathBuf) -> Arc<Self> {
        let (inbox, rx) = mpsc::channel(INBOX);
        Arc::new(Self {
            log,
            settings,
            worktree,
            approvals: Mutex::new(Approvals::default()),
            delivered: Mutex::new(VecDeque::new()),
            inbox,
            inbox_rx: tokio::sync::Mutex::new(Some(rx)),
            denials: Mutex::new(Vec::new()),
        })
    }

    /// A follow-up: its files land in the worktree, the message goes into the log and then to
    /// the agent. A retried delivery of the same message id is answered as before (one
    /// delivery at a time, so a retry racing the first is recognised too).
    pub fn deliver(&self, msg: ChatMessage) -> Result<Delivered, DeliverError> {
        let mut delivered = self
            .delivered
            .lock()
            .map_err(|_| DeliverError::Io("a lock was poisoned".into()))?;
        if let Some(done) = delivered.iter().find(|d| d.message_id == msg.message_id) {
            return Ok(done.clone());
        }
        if !ids::is_valid(chat::MESSAGE_ID_PREFIX, &msg.message_id) {
            return Err(DeliverError::Invalid("the message id is malformed".into()));
        }
        let text = msg.text.trim_end().to_owned();
        if text.is_empty() || text.chars().count() > chat::MAX_MESSAGE {
            return Err(DeliverError::Invalid(format!(
                "a message is 1 to {} characters",
                chat::MAX_MESSAGE
            )));
        }
        // A place in the agent's queue first, so a refused message leaves no files behind.
        let permit = self.inbox.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => DeliverError::Busy,
            mpsc::error::TrySendError::Closed(()) => {
                DeliverError::NotRunning("the session has ended".into())
            }
        })?;
        let attachments = self.save_attachments(&msg)?;
        let mut for_agent = text.clone();
        if !attachments.is_empty() {
            for_agent.push_str("\n\nAttached files (paths relative to the working directory):");
            for a in &attachments {
                for_agent.push_str(&format!("\n- {} ({} bytes)", a.path, a.bytes));
            }
        }
        self.log.push(EventBody::Message {
            message_id: msg.message_id.clone(),
            role: Role::User,
            text,
            attachments: attachments.clone(),
            sent_by: Some(msg.sent_by.clone()),
        });
        permit.send(for_agent);
        let done = Delivered {
            message_id: msg.message_id,
            attachments,
        };
        if delivered.len() >= DELIVERED_KEPT {
            delivered.pop_front();
        }
        delivered.push_back(done.clone());
        Ok(done)
    }

    /// Writes a follow-up's files under `.tether/attachments/<message id>/` in the worktree
    /// (a folder git ignores by its own `.gitignore`), never through a symlink.
    fn save_attachments(&self, msg: &ChatMessage) -> Result<Vec<Attachment>, DeliverError> {
        if msg.attachments.is_empty() {
            return Ok(Vec::new());
        }
        let invalid = DeliverError::Invalid;
        if msg.attachments.len() > chat::MAX_ATTACHMENTS {
            return Err(invalid(format!(
                "at most {} attachments",
                chat::MAX_ATTACHMENTS
            )));
        }
        let names = chat::unique_filenames(msg.attachments.iter().map(|a| a.name.as_str()))
            .map_err(|bad| invalid(format!("attachment name {bad:?} is not usable")))?;
        let mut files = Vec::with_capacity(names.len());
        let mut total = 0usize;
        for (a, name) in msg.attachments.iter().zip(names) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(a.data_base64.as_bytes())
                .map_err(|_| invalid(format!("attachment {name}: not base64")))?;
            total += bytes.len();
            if bytes.len() > chat::MAX_ATTACHMENT_BYTES || total > chat::MAX_ATTACHMENTS_TOTAL {
                return Err(invalid(format!(
                    "attachments: at most {} bytes each and {} in all",
                    chat::MAX_ATTACHMENT_BYTES,
                    chat::MAX_ATTACHMENTS_TOTAL
                )));
            }
            files.push((name, bytes));
        }
        let base = self.worktree.join(".tether");
        let dir = base.join("attachments").join(&msg.message_id);
        for p in [&base, &base.join("attachments")] {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(invalid(format!(
                    "{} is a symlink; attachments refused",
                    p.display()
                )));
            }
        }
        let io = |e: std::io::Error| DeliverError::Io(e.to_string());
        std::fs::create_dir_all(&dir).map_err(io)?;
        let ignore = base.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, "*\n").map_err(io)?;
        }
        let mut out = Vec::with_capacity(files.len());
        for (name, bytes) in files {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(&name))
                .map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            out.push(Attachment {
                path: format!("{}/{}/{}", chat::ATTACHMENT_DIR, msg.message_id, name),
                name,
                bytes: bytes.len() as u64,
            });
        }
        Ok(out)
    }

    /// Asks the org's members to allow or deny a tool call; waits for an answer or for the
    /// timeout (then the default applies). The request and its answer go into the log. If the
    /// caller stops waiting, the request is withdrawn.
    pub async fn ask(&self, ask: Ask) -> Verdict {
        let id = ids::new(chat::APPROVAL_ID_PREFIX);
        let (tx, rx) = oneshot::channel();
        let role = self.settings.approval_role.clone();
        let full = self.approvals.lock().map_or(true, |mut a| {
            if a.pending.len() >= MAX_PENDING {
                return true;
            }
            a.pending.insert(
                id.clone(),
                Pending {
                    role: role.clone(),
                    answer: tx,
                },
            );
            false
        });
        if full {
            return Verdict {
                decision: Decision::Deny,
                reason: Some(format!(
                    "more than {MAX_PENDING} approvals are waiting in this session"
                )),
                answered_by: Answerer::Timeout,
            };
        }
        let mut waiting = Waiting {
            chat: self,
            id: id.clone(),
            done: false,
        };
        if let Some(tool_use_id) = &ask.tool_use_id {
            self.log.push(EventBody::Tool {
                tool_use_id: tool_use_id.clone(),
                name: ask.tool.clone(),
                status: ToolStatus::AwaitingApproval,
                input: None,
                output: None,
                reason: None,
            });
        }
        let timeout = self.settings.approval_timeout;
        let expires = crate::state::now_ms() + timeout.as_millis() as i64;
        self.log.push(EventBody::ApprovalRequested {
            request_id: id.clone(),
            tool_use_id: ask.tool_use_id.clone(),
            tool: ask.tool.clone(),
            input: shown_input(ask.input),
            source: ask.source,
            reason: ask.reason,
            expires_at: tether_durable::time::rfc3339(expires),
            default: self.settings.approval_default,
            role,
        });
        info!(request = %id, tool = %ask.tool, "waiting for an approval");
        let (decision, reason, answered_by) = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            // Timed out (or the session is ending): the default, unless an answer won the race.
            _ => self.expire(&id, Answerer::Timeout),
        };
        waiting.done = true;
        let verdict = Verdict {
            decision,
            reason,
            answered_by,
        };
        if verdict.answered_by == Answerer::SessionEnded {
            // Logged by `end_approvals`, before the session's last event.
            return verdict;
        }
        self.log.push(EventBody::ApprovalAnswered {
            request_id: id,
            decision,
            reason: verdict.reason.clone(),
            answered_by: verdict.answered_by.clone(),
        });
        match (ask.tool_use_id, decision) {
            // An allowed call runs now; a denied one shows as denied when the agent reports
            // the refusal, so each status appears once.
            (Some(tool_use_id), Decision::Allow) => {
                self.log.push(EventBody::Tool {
                    tool_use_id,
                    name: ask.tool,
                    status: ToolStatus::Running,
                    input: None,
                    output: None,
                    reason: None,
                });
            }
            (Some(tool_use_id), Decision::Deny) if ask.source == ApprovalSource::Guardrail => {
                if let Ok(mut d) = self.denials.lock() {
                    d.push((tool_use_id, verdict.denial()));
                }
            }
            _ => {}
        }
        verdict
    }

    /// Ends a pending request with the default (its timeout, its withdrawal, or the session's
    /// end), unless it was answered already: then that answer.
    fn expire(&self, id: &str, by: Answerer) -> (Decision, Option<String>, Answerer) {
        let default = self.settings.approval_default;
        let Ok(mut a) = self.approvals.lock() else {
            return (default, None, by);
        };
        if a.pending.remove(id).is_some() {
            a.remember(id.to_owned(), default, by.clone());
            return (default, None, by);
        }
        a.answered
            .iter()
            .find(|(i, ..)| i == id)
            .map_or((default, None, by), |(_, d, b)| (*d, None, b.clone()))
    }

    /// A member's answer.
    pub fn answer(&self, answer: ApprovalAnswer) -> ApprovalOutcome {
        let Ok(mut a) = self.approvals.lock() else {
            return ApprovalOutcome::Unknown;
        };
        if let Some(p) = a.pending.get(&answer.request_id) {
            let role = match &answer.answered_by {
                Answerer::Member { role, .. } => role.as_str(),
                _ => "",
            };
            let enough = matches!(
                (chat::role_rank(role), chat::role_rank(&p.role)),
                (Some(have), Some(need)) if have >= need
            );
            if !enough {
                return ApprovalOutcome::RoleTooLow {
                    required: p.role.clone(),
                };
            }
        }
        if let Some(p) = a.pending.remove(&answer.request_id) {
            a.remember(
                answer.request_id.clone(),
                answer.decision,
                answer.answered_by.clone(),
            );
            let _ = p.answer.send((
                answer.decision,
                answer.reason.clone(),
                answer.answered_by.clone(),
            ));
            return ApprovalOutcome::Answered {
                request_id: answer.request_id,
                decision: answer.decision,
                answered_by: answer.answered_by,
            };
        }
        match a.answered.iter().find(|(i, ..)| *i == answer.request_id) {
            Some((_, decision, by)) => ApprovalOutcome::AlreadyAnswered {
                decision: *decision,
                answered_by: by.clone(),
            },
            None => ApprovalOutcome::Unknown,
        }
    }

    /// Ends every waiting approval, logging each: the session is over.
    fn end_approvals(&self) {
        let default = self.settings.approval_default;
        let Ok(mut a) = self.approvals.lock() else {
            return;
        };
        let pending: Vec<(String, Pending)> = a.pending.drain().collect();
        for (id, p) in pending {
            a.remember(id.clone(), default, Answerer::SessionEnded);
            self.log.push(EventBody::ApprovalAnswered {
                request_id: id,
                decision: default,
                reason: None,
                answered_by: Answerer::SessionEnded,
            });
            let _ = p.answer.send((default, None, Answerer::SessionEnded));
        }
    }

    /// Logs a normalized event, a tool call's input cut to what events show.
    fn emit(&self, body: EventBody) {
        let body = match body {
            EventBody::Tool {
                tool_use_id,
                name,
                status,
                input: Some(input),
                output,
                reason,
            } => EventBody::Tool {
                tool_use_id,
                name,
                status,
                input: Some(shown_input(input)),
                output,
                reason,
            },
            other => other,
        };
        self.log.push(body);
    }

    /// Runs the conversation until the agent exits, `stop` fires, or it sits idle past the
    /// idle timeout; Err when the agent could not be started at all. Waiting approvals end
    /// with the session.
    pub async fn drive(self: &Arc<Self>, start: Start<'_>, stop: &Notify) -> Result<Exit, String> {
        let Some(mut inbox) = self.inbox_rx.lock().await.take() else {
            return Err("the conversation was already driven".into());
        };
        let protocol = start.preset.chat.as_ref().map(|c| c.protocol);
        let exit = match protocol {
            Some(ChatProtocol::ClaudeStreamJson) => {
                self.drive_claude(&start, &mut inbox, stop).await
            }
            Some(ChatProtocol::CodexJson) => self.drive_codex(&start, &mut inbox, stop).await,
            None => Err("the preset has no chat mode".into()),
        };
        inbox.close();
        self.end_approvals();
        exit
    }

    fn spawn(&self, start: &Start<'_>, args: &[String]) -> Result<Running, String> {
        let mut cmd = tokio::process::Command::new(&start.program);
        cmd.args(args)
            .current_dir(&self.worktree)
            .envs(&start.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not start the agent: {e}"))?;
        let (lines_tx, lines) = mpsc::channel::<Line>(256);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_lines(out, lines_tx));
        }
        let stderr = child.stderr.take().map(|e| tokio::spawn(tail(e)));
        let stdin = child.stdin.take();
        Ok(Running {
            pid: child.id(),
            child,
            lines,
            stderr,
            stdin,
            exit: None,
            stopped: false,
        })
    }

    /// A line the agent wrote that is not one: an error event.
    fn too_long(&self, n: usize) {
        self.log.push(EventBody::Error {
            message: format!("the agent wrote a line of more than {n} bytes; skipped"),
            code: Some("line_too_long".into()),
        });
    }

    async fn drive_claude(
        self: &Arc<Self>,
        start: &Start<'_>,
        inbox: &mut mpsc::Receiver<String>,
        stop: &Notify,
    ) -> Result<Exit, String> {
        let (_, launch) = start
            .preset
            .chat_launch(None, None, start.mcp)
            .ok_or("the preset has no chat mode")?;
        let mut agent = self.spawn(start, &launch.args)?;
        let (stdin_tx, stdin_rx) = mpsc::channel::<String>(INBOX);
        let writer = agent
            .stdin
            .take()
            .map(|s| tokio::spawn(write_lines(s, stdin_rx)));
        let mut normalizer = claude::Normalizer::new(&start.preset.name);
        let mut stdin = Some(stdin_tx);
        // Turns asked for and not ended yet: idle only counts with none.
        let mut turns = 0usize;
        if let Some(prompt) = start.prompt.as_deref() {
            self.first_prompt(prompt);
            if let Some(s) = &stdin {
                let _ = s.send(claude::user_message(prompt)).await;
            }
            turns += 1;
        }
        let (verdicts_tx, mut verdicts) = mpsc::channel::<(claude::PermissionRequest, Verdict)>(16);
        let idle = tokio::time::sleep(self.settings.idle_timeout);
        tokio::pin!(idle);
        let mut output_open = true;
        loop {
            tokio::select! {
                line = agent.lines.recv(), if output_open => match line {
                    Some(Line::Text(line)) => {
                        if let Ok(mut d) = self.denials.lock() {
                            for (id, why) in d.drain(..) {
                                normalizer.denied(&id, &why);
                            }
                        }
                        for out in normalizer.line(&line) {
                            match out {
                                claude::Output::Event(body) => {
                                    if matches!(body, EventBody::TurnEnded { .. }) {
                                        turns = turns.saturating_sub(1);
                                        idle.as_mut().reset(tokio::time::Instant::now() + self.settings.idle_timeout);
                                    }
                                    self.emit(body);
                                }
                                claude::Output::Permission(request) => {
                                    let (this, tx) = (self.clone(), verdicts_tx.clone());
                                    tokio::spawn(async move {
                                        let verdict = this.ask(Ask {
                                            tool: request.tool_name.clone(),
                                            input: request.input.clone(),
                                            tool_use_id: request.tool_use_id.clone(),
                                            source: ApprovalSource::Agent,
                                            reason: None,
                                        }).await;
                                        let _ = tx.send((request, verdict)).await;
                                    });
                                }
                                claude::Output::UnsupportedControl { request_id, subtype } => {
                                    if let Some(s) = &stdin {
                                        let _ = s.send(claude::control_error(&request_id, &format!("Tether does not handle {subtype} requests"))).await;
                                    }
                                }
                            }
                        }
                    }
                    Some(Line::TooLong(n)) => self.too_long(n),
                    None => output_open = false,
                },
                Some((request, verdict)) = verdicts.recv() => {
                    let line = match verdict.decision {
                        Decision::Allow => claude::permission_allow(&request.request_id, &request.input),
                        Decision::Deny => {
                            let why = verdict.denial();
                            if let Some(t) = &request.tool_use_id {
                                normalizer.denied(t, &why);
                            }
                            claude::permission_deny(&request.request_id, &why)
                        }
                    };
                    if let Some(s) = &stdin {
                        let _ = s.send(line).await;
                    }
                }
                Some(text) = inbox.recv(), if stdin.is_some() => {
                    if let Some(s) = &stdin {
                        let _ = s.send(claude::user_message(&text)).await;
                    }
                    turns += 1;
                }
                () = &mut idle, if turns == 0 && stdin.is_some() => {
                    // Take no more messages; any already taken still go to the agent.
                    inbox.close();
                    let mut late = 0;
                    while let Ok(text) = inbox.try_recv() {
                        if let Some(s) = &stdin {
                            let _ = s.send(claude::user_message(&text)).await;
                        }
                        late += 1;
                    }
                    if late == 0 {
                        info!("chat idle; ending the conversation");
                        // The end of its input ends Claude Code's conversation.
                        stdin = None;
                    } else {
                        turns += late;
                    }
                }
                () = stop.notified(), if !agent.stopped => {
                    stdin = None;
                    agent.stop();
                }
                status = agent.child.wait(), if agent.exit.is_none() => {
                    agent.exit = Some(exit_of(status));
                    break;
                }
            }
        }
        // Its last words (Claude's final result can follow its exit by a moment).
        while let Some(line) = agent.drained().await {
            for out in normalizer.line(&line) {
                if let claude::Output::Event(body) = out {
                    self.emit(body);
                }
            }
        }
        if let Some(w) = writer {
            w.abort();
        }
        Ok(self.exited(agent).await)
    }

    async fn drive_codex(
        self: &Arc<Self>,
        start: &Start<'_>,
        inbox: &mut mpsc::Receiver<String>,
        stop: &Notify,
    ) -> Result<Exit, String> {
        let mut normalizer = codex::Normalizer::new(&start.preset.name);
        let mut next = start.prompt.clone();
        if let Some(p) = &next {
            self.first_prompt(p);
        }
        let mut first = true;
        loop {
            let prompt = match next.take() {
                Some(p) => p,
                None => {
                    tokio::select! {
                        m = inbox.recv() => match m {
                            Some(m) => m,
                            None => return Ok((0, None)),
                        },
                        () = tokio::time::sleep(self.settings.idle_timeout) => {
                            info!("chat idle; ending the conversation");
                            return Ok((0, None));
                        }
                        () = stop.notified() => return Ok((-1, Some("SIGTERM".into()))),
                    }
                }
            };
            // A long prompt goes on stdin: one argument may hold at most 128 KiB.
            let on_stdin = prompt.len() > MAX_ARGV_PROMPT;
            let arg = if on_stdin { "-" } else { prompt.as_str() };
            let (_, launch) = start
                .preset
                .chat_launch(Some(arg), normalizer.thread_id(), start.mcp)
                .ok_or("the preset has no chat mode")?;
            let mut agent = match self.spawn(start, &launch.args) {
                Ok(a) => a,
                Err(e) if first => return Err(e),
                Err(e) => {
                    self.log.push(EventBody::Error {
                        message: e,
                        code: Some("turn_failed".into()),
                    });
                    continue;
                }
            };
            first = false;
            // Otherwise its stdin closes here: Codex reads no prompt from it.
            if let Some(mut stdin) = agent.stdin.take()
                && on_stdin
            {
                tokio::spawn(async move {
                    let _ = stdin.write_all(prompt.as_bytes()).await;
                });
            }
            let mut output_open = true;
            loop {
                tokio::select! {
                    line = agent.lines.recv(), if output_open => match line {
                        Some(Line::Text(line)) => {
                            for body in normalizer.line(&line) {
                                self.emit(body);
                            }
                        }
                        Some(Line::TooLong(n)) => self.too_long(n),
                        None => output_open = false,
                    },
                    () = stop.notified(), if !agent.stopped => agent.stop(),
                    status = agent.child.wait() => {
                        agent.exit = Some(exit_of(status));
                        break;
                    }
                }
            }
            while let Some(line) = agent.drained().await {
                for body in normalizer.line(&line) {
                    self.emit(body);
                }
            }
            let stopped = agent.stopped;
            let (code, signal) = self.exited(agent).await;
            if stopped {
                return Ok((code, signal));
            }
            if code != 0 && normalizer.thread_id().is_none() {
                // Nothing to resume: the conversation cannot go on.
                return Ok((code, signal));
            }
        }
    }

    /// The first prompt, as the first user message.
    fn first_prompt(&self, prompt: &str) {
        self.log.push(EventBody::Message {
            message_id: ids::new(chat::MESSAGE_ID_PREFIX),
            role: Role::User,
            text: prompt.to_owned(),
            attachments: Vec::new(),
            sent_by: None,
        });
    }

    /// After the agent's exit: anything it left behind in its process group is killed, and a
    /// failure is logged with the end of its stderr.
    async fn exited(&self, agent: Running) -> Exit {
        kill(agent.pid);
        let exit = agent.exit.unwrap_or((-1, None));
        if exit.0 != 0 && exit.1.is_none() {
            let why = match agent.stderr {
                Some(t) => tokio::time::timeout(DRAIN, t)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default(),
                None => String::new(),
            };
            self.log.push(EventBody::Error {
                message: format!("the agent exited with code {}: {}", exit.0, why.trim()),
                code: Some("agent_failed".into()),
            });
        }
        exit
    }
}

/// An agent process and its output.
struct Running {
    child: tokio::process::Child,
    pid: Option<u32>,
    lines: mpsc::Receiver<Line>,
    stderr: Option<tokio::task::JoinHandle<String>>,
    stdin: Option<tokio::process::ChildStdin>,
    exit: Option<Exit>,
    stopped: bool,
}

impl Running {
    /// SIGTERM to its process group, SIGKILL after [`STOP_GRACE`].
    fn stop(&mut self) {
        self.stopped = true;
        signal(self.pid, nix::sys::signal::Signal::SIGTERM);
        let pid = self.pid;
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            kill(pid);
        });
    }

    /// The output's next line after the exit, until its end or [`DRAIN`] has passed.
    async fn drained(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(DRAIN, self.lines.recv()).await {
                Ok(Some(Line::Text(line))) => return Some(line),
                Ok(Some(Line::TooLong(_))) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

fn exit_of(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    match status {
        Ok(s) => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(sig) = s.signal() {
                    let name = nix::sys::signal::Signal::try_from(sig)
                        .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned());
                    return (128 + i64::from(sig), Some(name));
                }
            }
            (i64::from(s.code().unwrap_or(-1)), None)
        }
        Err(_) => (-1, None),
    }
}

/// Sends `sig` to the process group led by `pid`.
fn signal(pid: Option<u32>, sig: nix::sys::signal::Signal) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
    }
}

fn kill(pid: Option<u32>) {
    signal(pid, nix::sys::signal::Signal::SIGKILL);
}

/// One line from the agent, or the size of one that was too long to keep.
enum Line {
    Text(String),
    TooLong(usize),
}

/// Reads lines (at most [`MAX_LINE`] bytes each) until the end of the output.
async fn read_lines(out: impl AsyncRead + Unpin, tx: mpsc::Sender<Line>) {
    let mut reader = BufReader::with_capacity(64 * 1024, out);
    let mut line = Vec::new();
    let mut skipping = false;
    loop {
        let (done, used) = match reader.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(buf) => match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    if !skipping {
                        line.extend_from_slice(buf.get(..i).unwrap_or_default());
                    }
                    (true, i + 1)
                }
                None => {
                    if !skipping {
                        line.extend_from_slice(buf);
                    }
                    (false, buf.len())
                }
            },
        };
        reader.consume(used);
        if !skipping && line.len() > MAX_LINE {
            skipping = true;
            line = Vec::new();
        }
        if done {
            let out = if skipping {
                Line::TooLong(MAX_LINE)
            } else {
                Line::Text(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_owned(),
                )
            };
            skipping = false;
            line.clear();
            if matches!(&out, Line::Text(t) if t.trim().is_empty()) {
                continue;
            }
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }
}

/// Writes each line, then a newline, to the agent's stdin; the channel's end closes it.
async fn write_lines(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<String>) {
    while let Some(line) = rx.recv().await {
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        if stdin.write_all(&bytes).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of a stream.
async fn tail(mut err: impl AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    let mut kept: VecDeque<u8> = VecDeque::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = err.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend(buf.iter().take(n));
        while kept.len() > STDERR_TAIL {
            kept.pop_front();
        }
    }
    String::from_utf8_lossy(&kept.into_iter().collect::<Vec<u8>>()).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use tether_durable::chat::AttachmentFile;

    fn temp(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-chat-{label}-{}", ids::new("t")));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn events(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn chat(dir: &Path, settings: ChatSettings) -> Arc<Chat> {
        let log = EventLog::open(&dir.join("spool")).unwrap();
        Chat::new(log, settings, dir.join("worktree"))
    }

    fn member(role: &str) -> Answerer {
        Answerer::Member {
            id: "mem_1".into(),
            role: role.into(),
        }
    }

    #[test]
    fn the_log_keeps_whole_lines_and_counts_them() {
        let dir = temp("log");
        let path = dir.join("spool");
        std::fs::write(&path, b"{\"v\":1}\n{\"v\":1,\"torn").unwrap();
        let log = EventLog::open(&path).unwrap();
        assert_eq!(*log.len().borrow(), 8, "the torn line is cut off");
        log.push(EventBody::Title {
            title: "t".into(),
            source: "fallback".into(),
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 2, "{text}");
        assert_eq!(*log.len().borrow(), text.len() as u64);
        log.push(EventBody::Error {
            message: "x".repeat(MAX_EVENT),
            code: None,
        });
        let last = events(&path).pop().unwrap();
        assert_eq!(last["code"], "event_too_large", "{last}");
    }

    #[tokio::test]
    async fn approvals_wait_for_a_member_with_the_role_or_time_out_to_the_default() {
        let dir = temp("approvals");
        let settings = ChatSettings {
            approval_timeout: Duration::from_millis(300),
            approval_role: "admin".into(),
            ..ChatSettings::default()
        };
        let c = chat(&dir, settings);
        let ask = |c: &Arc<Chat>| {
            let c = c.clone();
            tokio::spawn(async move {
                c.ask(Ask {
                    tool: "Bash".into(),
                    input: serde_json::json!({"command": "ls"}),
                    tool_use_id: Some("toolu_1".into()),
                    source: ApprovalSource::Agent,
                    reason: None,
                })
                .await
            })
        };
        let waiting = ask(&c);
        let id = loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let e = events(&dir.join("spool"));
            if let Some(r) = e.iter().find(|e| e["type"] == "approval_requested") {
                assert_eq!(r["role"], "admin");
                break r["request_id"].as_str().unwrap().to_owned();
            }
        };
        let answer = |decision, by: Answerer| ApprovalAnswer {
            session_id: "ses".into(),
            request_id: id.clone(),
            decision,
            reason: Some("ok".into()),
            answered_by: by,
        };
        assert_eq!(
            c.answer(answer(Decision::Allow, member("member"))),
            ApprovalOutcome::RoleTooLow {
                required: "admin".into()
            }
        );
        assert!(matches!(
            c.answer(answer(Decision::Allow, member("owner"))),
            ApprovalOutcome::Answered { .. }
        ));
        assert!(matches!(
            c.answer(answer(Decision::Deny, member("owner"))),
            ApprovalOutcome::AlreadyAnswered {
                decision: Decision::Allow,
                ..
            }
        ));
        let v = waiting.await.unwrap();
        assert_eq!(
            (v.decision, v.reason.as_deref()),
            (Decision::Allow, Some("ok"))
        );
        let statuses: Vec<String> = events(&dir.join("spool"))
            .iter()
            .filter(|e| e["type"] == "tool")
            .map(|e| e["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(statuses, ["awaiting_approval", "running"]);

        // Nobody answers: the default, recorded as the timeout's.
        let v = ask(&c).await.unwrap();
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(v.answered_by, Answerer::Timeout);
        assert!(v.denial().contains("denied by default"), "{}", v.denial());
        let unknown = ApprovalAnswer {
            request_id: ids::new("apr"),
            ..answer(Decision::Allow, member("owner"))
        };
        assert_eq!(c.answer(unknown), ApprovalOutcome::Unknown);
    }

    #[tokio::test]
    async fn a_withdrawn_request_ends_logged_and_a_closed_log_takes_nothing_more() {
        let dir = temp("withdrawn");
        let c = chat(&dir, ChatSettings::default());
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move {
                c.ask(Ask {
                    tool: "Bash".into(),
                    input: serde_json::json!({"command": "x".repeat(MAX_INPUT_SHOWN * 2)}),
                    tool_use_id: None,
                    source: ApprovalSource::Guardrail,
                    reason: Some("why".into()),
                })
                .await
            })
        };
        let spool = dir.join("spool");
        let id = loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Some(r) = events(&spool)
                .into_iter()
                .find(|e| e["type"] == "approval_requested")
            {
                // A huge input shows as a preview; the request still goes out.
                assert_eq!(r["input"]["truncated"], true, "{r}");
                break r["request_id"].as_str().unwrap().to_owned();
            }
        };
        assert_eq!(EventLog::unanswered(&spool), std::slice::from_ref(&id));
        // The hook that waited is gone: the request ends, and says so.
        waiting.abort();
        let _ = waiting.await;
        let answered = events(&spool)
            .into_iter()
            .find(|e| e["type"] == "approval_answered")
            .expect("the withdrawal is logged");
        assert_eq!(answered["answered_by"]["kind"], "withdrawn");
        assert!(EventLog::unanswered(&spool).is_empty());
        let late = ApprovalAnswer {
            session_id: "ses".into(),
            request_id: id,
            decision: Decision::Allow,
            reason: None,
            answered_by: member("owner"),
        };
        assert!(matches!(
            c.answer(late),
            ApprovalOutcome::AlreadyAnswered {
                answered_by: Answerer::Withdrawn,
                ..
            }
        ));
        // After the last event nothing more is written.
        c.log.close(EventBody::SessionEnded {
            status: "exited".into(),
            exit_code: Some(0),
            reason: None,
        });
        assert!(!c.log.push(EventBody::Title {
            title: "late".into(),
            source: "llm".into(),
        }));
        assert_eq!(events(&spool).last().unwrap()["type"], "session_ended");
    }

    #[tokio::test]
    async fn follow_ups_land_their_files_once_and_never_through_a_symlink() {
        let dir = temp("deliver");
        std::fs::create_dir_all(dir.join("worktree")).unwrap();
        let c = chat(&dir, ChatSettings::default());
        let msg = ChatMessage {
            session_id: "ses".into(),
            message_id: ids::new("msg"),
            text: "see the file".into(),
            attachments: vec![AttachmentFile {
                name: "../../etc/notes.txt".into(),
                data_base64: "aGk=".into(),
            }],
            sent_by: "mem_1".into(),
        };
        let done = c.deliver(msg.clone()).unwrap();
        let path = dir.join("worktree").join(&done.attachments[0].path);
        assert_eq!(std::fs::read(&path).unwrap(), b"hi");
        assert!(done.attachments[0].path.ends_with("/notes.txt"));
        assert_eq!(
            std::fs::read_to_string(dir.join("worktree/.tether/.gitignore")).unwrap(),
            "*\n"
        );
        // A retried delivery is the same message: one event, one file.
        assert_eq!(c.deliver(msg).unwrap(), done);
        let users = events(&dir.join("spool"))
            .into_iter()
            .filter(|e| e["type"] == "message")
            .count();
        assert_eq!(users, 1);
        let mut inbox = c.inbox_rx.lock().await.take().unwrap();
        let sent = inbox.recv().await.unwrap();
        assert!(sent.contains(&done.attachments[0].path), "{sent}");

        // A worktree whose .tether is a symlink gets no files.
        let evil = temp("evil");
        std::fs::create_dir_all(evil.join("worktree")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&evil, evil.join("worktree/.tether")).unwrap();
        let c = chat(&evil, ChatSettings::default());
        let msg = ChatMessage {
            session_id: "ses".into(),
            message_id: ids::new("msg"),
            text: "x".into(),
            attachments: vec![AttachmentFile {
                name: "a".into(),
                data_base64: "aGk=".into(),
            }],
            sent_by: "mem_1".into(),
        };
        #[cfg(unix)]
        assert!(c.deliver(msg).unwrap_err().to_string().contains("symlink"));
    }
}
