//! Chat sessions: the agent in its structured mode on pipes (no PTY), its output normalized
//! ([`crate::chat`]) into events that go, one JSON line each, into the session's spool; the
//! shipper moves them into the session's JSON stream exactly once, like terminal bytes.
//!
//! - [`EventLog`]: the spool of events. A line is written whole before its length is
//!   published, so the shipper only ever sees whole events.
//! - [`Chat`]: one running conversation: follow-ups ([`Chat::deliver`]: attachments into the
//!   worktree, the message into the log, then to the agent), approvals ([`Chat::ask`] waits
//!   for a member's answer or the timeout's default; [`Chat::answer`] takes an answer), and
//!   the driver ([`Chat::drive`]) that runs the agent until it exits, is stopped, or sits idle
//!   past the idle timeout.
//! - Claude Code (`claude-stream-json`) is one process for the conversation: messages and
//!   permission answers go to its stdin. Codex (`codex-json`) is one `codex exec --json`
//!   process per turn; the next turn resumes the thread.

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
use tracing::{info, warn};

use super::pty::Exit;

/// The largest event line kept; a larger one is replaced by an error event (the stream takes
/// appends of up to 1 MiB).
pub const MAX_EVENT: usize = 900_000;
/// The longest line read from an agent; longer ones are skipped (with an error event).
const MAX_LINE: usize = 8 * 1024 * 1024;
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

/// The session's events, one JSON line each, in its spool file.
pub struct EventLog {
    file: Mutex<std::fs::File>,
    len: watch::Sender<u64>,
}

impl EventLog {
    /// Opens (or creates, with its private folder) the spool for appending. A torn last line (the daemon died while
    /// writing it) is cut off first, so the file holds whole events only.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            crate::paths::ensure_private_dir(dir).map_err(std::io::Error::other)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let text = std::fs::read(path)?;
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            file.set_len(whole as u64)?;
        }
        file.flush()?;
        let (len, _) = watch::channel(whole as u64);
        Ok(Self {
            file: Mutex::new(file),
            len,
        })
    }

    /// Appends one event (stamped now).
    pub fn push(&self, body: EventBody) {
        let event = Event::new(crate::state::now_ms(), body);
        let mut line = match serde_json::to_vec(&event) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "an event did not serialise; dropped");
                return;
            }
        };
        if line.len() > MAX_EVENT {
            let size = line.len();
            let fallback = Event::new(
                crate::state::now_ms(),
                EventBody::Error {
                    message: format!(
                        "an event of {size} bytes was over the {MAX_EVENT}-byte limit and was dropped"
                    ),
                    code: Some("event_too_large".into()),
                },
            );
            line = serde_json::to_vec(&fallback).unwrap_or_default();
        }
        line.push(b'\n');
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        match file.write_all(&line) {
            Ok(()) => {
                self.len.send_modify(|n| *n += line.len() as u64);
            }
            Err(e) => warn!(error = %e, "writing an event to the spool failed"),
        }
    }

    /// The spool's length, as written.
    pub fn len(&self) -> watch::Receiver<u64> {
        self.len.subscribe()
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
        denial(&self.reason, &self.answered_by)
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

/// One running conversation.
pub struct Chat {
    pub log: EventLog,
    settings: ChatSettings,
    worktree: PathBuf,
    approvals: Mutex<Approvals>,
    delivered: Mutex<VecDeque<Delivered>>,
    inbox: mpsc::Sender<String>,
    inbox_rx: tokio::sync::Mutex<Option<mpsc::Receiver<String>>>,
    /// Tool names by tool use id, for approval events that only carry the id.
    tools: Mutex<HashMap<String, String>>,
}

/// What the driver needs to run the agent.
pub struct Start<'a> {
    pub preset: &'a Preset,
    pub program: PathBuf,
    pub env: BTreeMap<String, String>,
    pub mcp: &'a SessionServer,
    pub prompt: Option<String>,
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
            tools: Mutex::new(HashMap::new()),
        })
    }

    /// A follow-up: its files land in the worktree, the message goes into the log and then to
    /// the agent. A retried delivery of the same message id is answered as before.
    pub async fn deliver(&self, msg: ChatMessage) -> Result<Delivered, String> {
        if let Some(done) = self
            .delivered
            .lock()
            .ok()
            .and_then(|d| d.iter().find(|d| d.message_id == msg.message_id).cloned())
        {
            return Ok(done);
        }
        if !ids::is_valid(chat::MESSAGE_ID_PREFIX, &msg.message_id) {
            return Err("the message id is malformed".into());
        }
        let text = msg.text.trim_end().to_owned();
        if text.is_empty() || text.chars().count() > chat::MAX_MESSAGE {
            return Err(format!(
                "a message is 1 to {} characters",
                chat::MAX_MESSAGE
            ));
        }
        let attachments = self.save_attachments(&msg)?;
        let mut for_agent = text.clone();
        if !attachments.is_empty() {
            for_agent.push_str("\n\nAttached files (paths relative to the working directory):");
            for a in &attachments {
                for_agent.push_str(&format!("\n- {} ({} bytes)", a.path, a.bytes));
            }
        }
        let permit = self.inbox.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => {
                "the agent has too many messages waiting; try again later".to_owned()
            }
            mpsc::error::TrySendError::Closed(()) => "the session has ended".to_owned(),
        })?;
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
        if let Ok(mut d) = self.delivered.lock() {
            if d.len() >= DELIVERED_KEPT {
                d.pop_front();
            }
            d.push_back(done.clone());
        }
        Ok(done)
    }

    /// Writes a follow-up's files under `.tether/attachments/<message id>/` in the worktree
    /// (a folder git ignores by its own `.gitignore`), never through a symlink.
    fn save_attachments(&self, msg: &ChatMessage) -> Result<Vec<Attachment>, String> {
        if msg.attachments.is_empty() {
            return Ok(Vec::new());
        }
        if msg.attachments.len() > chat::MAX_ATTACHMENTS {
            return Err(format!("at most {} attachments", chat::MAX_ATTACHMENTS));
        }
        let names = chat::unique_filenames(msg.attachments.iter().map(|a| a.name.as_str()))
            .map_err(|bad| format!("attachment name {bad:?} is not usable"))?;
        let mut files = Vec::with_capacity(names.len());
        let mut total = 0usize;
        for (a, name) in msg.attachments.iter().zip(names) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(a.data_base64.as_bytes())
                .map_err(|_| format!("attachment {name}: not base64"))?;
            total += bytes.len();
            if bytes.len() > chat::MAX_ATTACHMENT_BYTES || total > chat::MAX_ATTACHMENTS_TOTAL {
                return Err(format!(
                    "attachments: at most {} bytes each and {} in all",
                    chat::MAX_ATTACHMENT_BYTES,
                    chat::MAX_ATTACHMENTS_TOTAL
                ));
            }
            files.push((name, bytes));
        }
        let base = self.worktree.join(".tether");
        let dir = base.join("attachments").join(&msg.message_id);
        for p in [&base, &base.join("attachments")] {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(format!("{} is a symlink; attachments refused", p.display()));
            }
        }
        let io = |e: std::io::Error| format!("saving attachments: {e}");
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
    /// timeout (then the default applies). The request and its answer go into the log.
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
        let tool = match (&ask.tool_use_id, ask.tool.is_empty()) {
            (Some(t), true) => self
                .tools
                .lock()
                .ok()
                .and_then(|m| m.get(t).cloned())
                .unwrap_or_else(|| "unknown".into()),
            _ => ask.tool.clone(),
        };
        if let Some(tool_use_id) = &ask.tool_use_id {
            self.log.push(EventBody::Tool {
                tool_use_id: tool_use_id.clone(),
                name: tool.clone(),
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
            tool: tool.clone(),
            input: ask.input,
            source: ask.source,
            reason: ask.reason,
            expires_at: tether_durable::time::rfc3339(expires),
            default: self.settings.approval_default,
            role,
        });
        info!(request = %id, %tool, "waiting for an approval");
        let (decision, reason, answered_by) = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            // Timed out (or the session is ending): the default, unless an answer won the race.
            _ => self.expire(&id, Answerer::Timeout),
        };
        if answered_by == Answerer::SessionEnded {
            // Logged by `end_approvals`; the session is over.
            return Verdict {
                decision,
                reason,
                answered_by,
            };
        }
        self.log.push(EventBody::ApprovalAnswered {
            request_id: id,
            decision,
            reason: reason.clone(),
            answered_by: answered_by.clone(),
        });
        // An allowed call runs now; a denied one shows as denied when the agent reports the
        // refusal (the caller tells its normalizer why), so each status appears once.
        if let (Some(tool_use_id), Decision::Allow) = (ask.tool_use_id, decision) {
            self.log.push(EventBody::Tool {
                tool_use_id,
                name: tool,
                status: ToolStatus::Running,
                input: None,
                output: None,
                reason: None,
            });
        }
        Verdict {
            decision,
            reason,
            answered_by,
        }
    }

    /// Ends a pending request with the default (its timeout, or the session's end).
    fn expire(&self, id: &str, by: Answerer) -> (Decision, Option<String>, Answerer) {
        let default = self.settings.approval_default;
        let Ok(mut a) = self.approvals.lock() else {
            return (default, None, by);
        };
        if a.pending.remove(id).is_some() {
            a.remember(id.to_owned(), default, by.clone());
            return (default, None, by);
        }
        // Answered just as the time ran out: that answer stands.
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

    /// Ends every waiting approval: the session is over.
    fn end_approvals(&self) {
        let pending: Vec<(String, Pending)> = self
            .approvals
            .lock()
            .map(|mut a| a.pending.drain().collect())
            .unwrap_or_default();
        for (id, p) in pending {
            let d = self.settings.approval_default;
            if let Ok(mut a) = self.approvals.lock() {
                a.remember(id.clone(), d, Answerer::SessionEnded);
            }
            // Logged here, before the session's last event; the waiter logs nothing more.
            self.log.push(EventBody::ApprovalAnswered {
                request_id: id,
                decision: d,
                reason: None,
                answered_by: Answerer::SessionEnded,
            });
            let _ = p.answer.send((d, None, Answerer::SessionEnded));
        }
    }

    /// Logs a normalized event (remembering tool names for later approvals).
    fn emit(&self, body: EventBody) {
        if let EventBody::Tool {
            tool_use_id, name, ..
        } = &body
            && let Ok(mut tools) = self.tools.lock()
        {
            tools.insert(tool_use_id.clone(), name.clone());
        }
        self.log.push(body);
    }

    /// Runs the conversation until the agent exits, `stop` fires, or it sits idle past the
    /// idle timeout. Waiting approvals end with the session.
    pub async fn drive(self: &Arc<Self>, start: Start<'_>, stop: &Notify) -> Exit {
        let Some(mut inbox) = self.inbox_rx.lock().await.take() else {
            return (-1, Some("driven twice".into()));
        };
        let protocol = start.preset.chat.as_ref().map(|c| c.protocol);
        let exit = match protocol {
            Some(ChatProtocol::ClaudeStreamJson) => {
                self.drive_claude(&start, &mut inbox, stop).await
            }
            Some(ChatProtocol::CodexJson) => self.drive_codex(&start, &mut inbox, stop).await,
            None => (-1, Some("the preset has no chat mode".into())),
        };
        inbox.close();
        self.end_approvals();
        exit
    }

    fn spawn(&self, start: &Start<'_>, args: &[String]) -> std::io::Result<tokio::process::Child> {
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
        cmd.spawn()
    }

    async fn drive_claude(
        self: &Arc<Self>,
        start: &Start<'_>,
        inbox: &mut mpsc::Receiver<String>,
        stop: &Notify,
    ) -> Exit {
        let Some((_, launch)) = start.preset.chat_launch(None, None, start.mcp) else {
            return (-1, Some("the preset has no chat mode".into()));
        };
        let mut child = match self.spawn(start, &launch.args) {
            Ok(c) => c,
            Err(e) => return self.failed_to_start(&e),
        };
        let (stdin_tx, stdin_rx) = mpsc::channel::<String>(INBOX);
        let writer = child
            .stdin
            .take()
            .map(|s| tokio::spawn(write_lines(s, stdin_rx)));
        let (lines_tx, mut lines) = mpsc::channel::<Line>(256);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_lines(out, lines_tx));
        }
        let stderr = child.stderr.take().map(|e| tokio::spawn(tail(e)));
        let mut normalizer = claude::Normalizer::new(&start.preset.name);
        let mut stdin = Some(stdin_tx);
        let mut busy = false;
        if let Some(prompt) = start.prompt.as_deref() {
            self.first_prompt(prompt);
            if let Some(s) = &stdin {
                let _ = s.send(claude::user_message(prompt)).await;
            }
            busy = true;
        }
        let (verdicts_tx, mut verdicts) = mpsc::channel::<(claude::PermissionRequest, Verdict)>(16);
        let idle = tokio::time::sleep(self.settings.idle_timeout);
        tokio::pin!(idle);
        let mut stopped = false;
        let mut output_open = true;
        loop {
            tokio::select! {
                line = lines.recv(), if output_open => match line {
                    Some(Line::Text(line)) => {
                        for out in normalizer.line(&line) {
                            match out {
                                claude::Output::Event(body) => {
                                    if matches!(body, EventBody::TurnEnded { .. }) {
                                        busy = false;
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
                    Some(Line::TooLong(n)) => self.log.push(EventBody::Error {
                        message: format!("the agent wrote a line of more than {n} bytes; skipped"),
                        code: Some("line_too_long".into()),
                    }),
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
                    busy = true;
                }
                () = &mut idle, if !busy && stdin.is_some() => {
                    info!("chat idle; ending the conversation");
                    // The end of its input ends Claude Code's conversation.
                    stdin = None;
                    inbox.close();
                }
                () = stop.notified(), if !stopped => {
                    stopped = true;
                    stdin = None;
                    terminate(&child);
                    let pid = child.id();
                    tokio::spawn(async move {
                        tokio::time::sleep(STOP_GRACE).await;
                        kill(pid);
                    });
                }
                status = child.wait(), if !output_open => {
                    return self.exited(status, stderr, writer).await;
                }
            }
        }
    }

    async fn drive_codex(
        self: &Arc<Self>,
        start: &Start<'_>,
        inbox: &mut mpsc::Receiver<String>,
        stop: &Notify,
    ) -> Exit {
        let mut normalizer = codex::Normalizer::new(&start.preset.name);
        let mut next = start.prompt.clone();
        if let Some(p) = &next {
            self.first_prompt(p);
        }
        loop {
            let prompt = match next.take() {
                Some(p) => p,
                None => {
                    tokio::select! {
                        m = inbox.recv() => match m {
                            Some(m) => m,
                            None => return (0, None),
                        },
                        () = tokio::time::sleep(self.settings.idle_timeout) => {
                            info!("chat idle; ending the conversation");
                            return (0, None);
                        }
                        () = stop.notified() => return (-1, Some("SIGTERM".into())),
                    }
                }
            };
            let Some((_, launch)) =
                start
                    .preset
                    .chat_launch(Some(&prompt), normalizer.thread_id(), start.mcp)
            else {
                return (-1, Some("the preset has no chat mode".into()));
            };
            let mut child = match self.spawn(start, &launch.args) {
                Ok(c) => c,
                Err(e) => return self.failed_to_start(&e),
            };
            drop(child.stdin.take());
            let (lines_tx, mut lines) = mpsc::channel::<Line>(256);
            if let Some(out) = child.stdout.take() {
                tokio::spawn(read_lines(out, lines_tx));
            }
            let stderr = child.stderr.take().map(|e| tokio::spawn(tail(e)));
            let mut stopped = false;
            let mut output_open = true;
            let status = loop {
                tokio::select! {
                    line = lines.recv(), if output_open => match line {
                        Some(Line::Text(line)) => {
                            for body in normalizer.line(&line) {
                                self.emit(body);
                            }
                        }
                        Some(Line::TooLong(n)) => self.log.push(EventBody::Error {
                            message: format!("the agent wrote a line of more than {n} bytes; skipped"),
                            code: Some("line_too_long".into()),
                        }),
                        None => output_open = false,
                    },
                    () = stop.notified(), if !stopped => {
                        stopped = true;
                        terminate(&child);
                        let pid = child.id();
                        tokio::spawn(async move {
                            tokio::time::sleep(STOP_GRACE).await;
                            kill(pid);
                        });
                    }
                    status = child.wait(), if !output_open => break status,
                }
            };
            let (code, signal) = exit_of(status);
            if stopped {
                return (code, signal);
            }
            if code != 0 {
                let why = match stderr {
                    Some(t) => t.await.unwrap_or_default(),
                    None => String::new(),
                };
                self.log.push(EventBody::Error {
                    message: format!("the agent's turn exited with code {code}: {}", why.trim()),
                    code: Some("turn_failed".into()),
                });
                if normalizer.thread_id().is_none() {
                    // Nothing to resume: the conversation cannot go on.
                    return (code, signal);
                }
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

    fn failed_to_start(&self, e: &std::io::Error) -> Exit {
        self.log.push(EventBody::Error {
            message: format!("could not start the agent: {e}"),
            code: Some("spawn_failed".into()),
        });
        (-1, None)
    }

    async fn exited(
        &self,
        status: std::io::Result<std::process::ExitStatus>,
        stderr: Option<tokio::task::JoinHandle<String>>,
        writer: Option<tokio::task::JoinHandle<()>>,
    ) -> Exit {
        if let Some(w) = writer {
            w.abort();
        }
        let exit = exit_of(status);
        if exit.0 != 0 && exit.1.is_none() {
            let why = match stderr {
                Some(t) => t.await.unwrap_or_default(),
                None => String::new(),
            };
            if !why.trim().is_empty() {
                self.log.push(EventBody::Error {
                    message: format!("the agent exited with code {}: {}", exit.0, why.trim()),
                    code: Some("agent_failed".into()),
                });
            }
        }
        exit
    }
}

/// Why a call was denied, for the agent and the log.
fn denial(reason: &Option<String>, by: &Answerer) -> String {
    let who = match by {
        Answerer::Member { id, .. } => format!("denied by {id}"),
        Answerer::Timeout => "nobody answered in time; denied by default".to_owned(),
        Answerer::SessionEnded => "the session ended".to_owned(),
    };
    match reason {
        Some(r) if !r.is_empty() => format!("{who}: {r}"),
        _ => who,
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

fn terminate(child: &tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

fn kill(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
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
        let done = c.deliver(msg.clone()).await.unwrap();
        let path = dir.join("worktree").join(&done.attachments[0].path);
        assert_eq!(std::fs::read(&path).unwrap(), b"hi");
        assert!(done.attachments[0].path.ends_with("/notes.txt"));
        assert_eq!(
            std::fs::read_to_string(dir.join("worktree/.tether/.gitignore")).unwrap(),
            "*\n"
        );
        // A retried delivery is the same message: one event, one file.
        assert_eq!(c.deliver(msg).await.unwrap(), done);
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
        assert!(c.deliver(msg).await.unwrap_err().contains("symlink"));
    }
}
