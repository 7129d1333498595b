//! Agent sessions on this machine: from a start command to an agent in a PTY in a fresh
//! worktree, its output shipped into the session's stream, its status reported to the edge.
//!
//! - [`Sessions::start`] records the session (a redelivered start is recognised and ignored)
//!   and runs it in a task: preset, checkout, worktree, PTY ([`pty`]), shipper ([`ship`]).
//! - Input, resizes and stops reach the running agent through [`Sessions::input`],
//!   [`Sessions::resize`] and [`Sessions::stop`].
//! - Every status change bumps the local record's version; the reporter ([`report`]) sends
//!   the newest status of each session to the edge until acknowledged, so a status is never
//!   lost to a network failure or a restart.
//! - Every agent gets its session's local MCP server ([`crate::mcp`]): a config file the
//!   daemon writes (`TETHER_MCP_CONFIG`, removed when the session ends) and the preset's
//!   `mcp_args`.
//! - A restart ([`Sessions::recover`]): sessions that were running when the daemon died are
//!   recorded failed with that reason, and their spooled output is shipped and the stream
//!   closed. A clean shutdown ([`Sessions::shutdown`]) stops the agents first (status
//!   `stopped`, reason "the daemon shut down").

pub mod chat;
pub mod pty;
pub mod report;
pub mod ship;
pub mod store;

use crate::guardrails::Guardrails;
use crate::hooks::protocol::Verdict;
use crate::host_auth::HostAuth;
use crate::mcp::config::{self as mcp_config, SessionServer};
use crate::presets::{self, Preset};
use crate::state::State;
use crate::streams::StreamClient;
use crate::worktree::{self, CreateWorktree};
use pty::{Agent, Spawn};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{LocalSession, StatusChange};
use tether_durable::chat::{ApprovalAnswer, ApprovalOutcome, ChatMessage, Delivered, EventBody};
use tether_durable::session::{SessionKind, SessionStatus, StartSession};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

/// Sessions one daemon runs at once; more fail with the reason.
pub const MAX_RUNNING: usize = 64;
/// How long a stopped agent gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// After the agent exits, how long its last output may take to drain from the PTY.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long a clean shutdown waits for agents to stop and output to ship (a service manager
/// allows 90 s by default; a foreground user wants it quick).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(8);

/// Where sessions live on this machine.
#[derive(Clone)]
pub struct Settings {
    /// Worktrees go in `<worktree_dir>/<project>/<branch>`.
    pub worktree_dir: PathBuf,
    /// Spooled terminal output, one file per session.
    pub spool_dir: PathBuf,
    /// Presets from the config (they replace built-ins of the same name).
    pub custom_presets: Vec<Preset>,
    /// The guardrail policies every dispatched prompt passes before an agent starts.
    pub guardrails: Arc<Guardrails>,
    /// The daemon's state folder (agents get it as `TETHER_STATE_DIR`, so their hooks find
    /// the daemon).
    pub state_dir: PathBuf,
    /// Approvals and idle time of chat sessions.
    pub chat: chat::ChatSettings,
    /// Names sessions with a small model when an API key is there.
    pub titles: Arc<crate::titles::Titles>,
}

/// A session this daemon runs now.
#[derive(Default)]
struct Live {
    agent: Mutex<Option<Arc<Agent>>>,
    /// A chat session's conversation.
    chat: Mutex<Option<Arc<chat::Chat>>>,
    /// Set when a stop was asked for, with its reason.
    stop: Mutex<Option<String>>,
    stopped: Notify,
}

impl Live {
    fn agent(&self) -> Option<Arc<Agent>> {
        self.agent.lock().ok().and_then(|a| a.clone())
    }

    fn stop_reason(&self) -> Option<String> {
        self.stop.lock().ok().and_then(|s| s.clone())
    }

    fn chat(&self) -> Option<Arc<chat::Chat>> {
        self.chat.lock().ok().and_then(|c| c.clone())
    }
}

/// A session ready to run: everything up to the process.
struct Prepared {
    preset: Preset,
    prompt: Option<String>,
    program: PathBuf,
    env: BTreeMap<String, String>,
    mcp: SessionServer,
    worktree: PathBuf,
    branch: String,
}

/// The sessions of this daemon.
pub struct Sessions {
    state: Arc<State>,
    auth: Arc<HostAuth>,
    streams: StreamClient,
    http: reqwest::Client,
    settings: Settings,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Dispatched prompts the policies passed, until the agent's own hook reports them.
    judged: Mutex<HashMap<String, String>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    reporter: Mutex<Option<tokio::task::JoinHandle<()>>>,
    report_now: Notify,
}

impl Sessions {
    /// `http` is the daemon's client for the edge's API (streams, status reports).
    pub fn new(
        state: Arc<State>,
        auth: Arc<HostAuth>,
        settings: Settings,
        http: reqwest::Client,
    ) -> Result<Arc<Self>, crate::Error> {
        let streams = StreamClient::with_http(http.clone(), &auth.server, "").map_err(|_| {
            crate::Error::InvalidServer {
                url: auth.server.clone(),
                reason: "not a base URL",
            }
        })?;
        Ok(Arc::new(Self {
            state,
            auth,
            streams,
            http,
            settings,
            live: Mutex::new(HashMap::new()),
            judged: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            reporter: Mutex::new(None),
            report_now: Notify::new(),
        }))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(handle);
        }
    }

    fn spool(&self, id: &str) -> PathBuf {
        self.settings.spool_dir.join(format!("{id}.out"))
    }

    /// Records the status change and wakes the reporter.
    async fn set_status(&self, id: &str, status: SessionStatus, change: StatusChange) {
        match self.state.set_session_status(id, status, change).await {
            Ok(true) => {
                info!(session = %id, status = status.as_str(), "session status");
                self.report_now.notify_one();
            }
            Ok(false) => {}
            Err(e) => warn!(session = %id, error = %e, "recording a session status failed"),
        }
    }

    /// Takes a start command. Ok(false) when the session was already known (redelivery).
    pub async fn start(self: &Arc<Self>, cmd: StartSession) -> Result<bool, crate::Error> {
        let fresh = self
            .state
            .insert_session(
                &cmd.session_id,
                &cmd.project_id,
                &cmd.agent,
                &cmd.stream_path,
            )
            .await?;
        if !fresh {
            return Ok(false);
        }
        self.report_now.notify_one();
        let live = Arc::new(Live::default());
        if let Ok(mut map) = self.live.lock() {
            map.insert(cmd.session_id.clone(), live.clone());
        }
        let this = self.clone();
        self.spawn(async move {
            let id = cmd.session_id.clone();
            this.run(cmd, &live).await;
            // Its MCP server answers no more: the daemon refuses a session it does not run.
            let _ = std::fs::remove_file(mcp_config::path(&this.settings.state_dir, &id));
            if let Ok(mut map) = this.live.lock() {
                map.remove(&id);
            }
            if let Ok(mut judged) = this.judged.lock() {
                judged.remove(&id);
            }
        });
        Ok(true)
    }

    /// A session from start to end.
    async fn run(self: &Arc<Self>, cmd: StartSession, live: &Live) {
        let id = cmd.session_id.clone();
        let (shipped_tx, shipped_rx) = watch::channel(0u64);
        let (ended_tx, ended_rx) = watch::channel(false);
        let launched = match self.prepare(&cmd, live).await {
            Ok(prepared) if cmd.kind == SessionKind::Chat => {
                return self
                    .run_chat(&cmd, live, prepared, (shipped_tx, ended_tx, ended_rx))
                    .await;
            }
            Ok(prepared) => self.launch(&cmd, live, prepared, shipped_rx).await,
            Err(e) => Err(e),
        };
        let agent = match launched {
            Ok(agent) => agent,
            Err((status, reason)) => {
                if cmd.kind == SessionKind::Chat {
                    // Readers of a chat stream see why it ended in the stream itself.
                    if let Ok(log) = chat::EventLog::open(&self.spool(&id)) {
                        log.push(EventBody::Error {
                            message: reason.clone(),
                            code: Some("start_failed".into()),
                        });
                        log.close(ended_event(status, None, Some(&reason)));
                    }
                }
                self.set_status(
                    &id,
                    status,
                    StatusChange {
                        reason: Some(reason),
                        ..StatusChange::default()
                    },
                )
                .await;
                // Nothing (or only why) was written: close the stream so readers stop waiting.
                ended_tx.send_replace(true);
                let len = std::fs::metadata(self.spool(&id)).map_or(0, |m| m.len());
                self.ship(&id, watch::channel(len).1, ended_rx, shipped_tx)
                    .await;
                return;
            }
        };
        let shipper = {
            let this = self.clone();
            let (id, spooled) = (id.clone(), agent.spooled.clone());
            tokio::spawn(async move { this.ship(&id, spooled, ended_rx, shipped_tx).await })
        };
        let exit = wait_exit(&agent, live).await;
        // Let the last bytes drain out of the PTY (grandchildren may hold it open longer).
        let mut done = agent.output_done.clone();
        let _ = tokio::time::timeout(DRAIN_GRACE, done.wait_for(|d| *d)).await;
        ended_tx.send_replace(true);
        let (code, signal) = exit;
        let change = StatusChange {
            exit_code: Some(code),
            reason: live
                .stop_reason()
                .or_else(|| signal.map(|s| format!("ended by {s}"))),
            ..StatusChange::default()
        };
        let status = if live.stop_reason().is_some() {
            SessionStatus::Stopped
        } else {
            SessionStatus::Exited
        };
        self.set_status(&id, status, change).await;
        let _ = shipper.await;
    }

    /// Everything up to the agent's process: preset, checkout, prompt check, worktree,
    /// environment. On failure, the status and reason to record.
    async fn prepare(
        &self,
        cmd: &StartSession,
        live: &Live,
    ) -> Result<Prepared, (SessionStatus, String)> {
        let failed = |reason: String| (SessionStatus::Failed, reason);
        let running = self.live.lock().map_or(0, |m| m.len());
        if running > MAX_RUNNING {
            return Err(failed(format!(
                "this host already runs {MAX_RUNNING} sessions; stop one or use another host"
            )));
        }
        if crate::state::now_ms() > cmd.start_by_ms {
            return Err(failed(
                "host offline too long: the start arrived after its deadline".into(),
            ));
        }
        let preset =
            presets::resolve(&cmd.agent, &self.settings.custom_presets).ok_or_else(|| {
                let known: Vec<String> = presets::all(&self.settings.custom_presets)
                    .into_iter()
                    .map(|p| p.name)
                    .collect();
                failed(format!(
                    "unknown agent preset {:?} on this host (known: {})",
                    cmd.agent,
                    known.join(", ")
                ))
            })?;
        let link = self
            .state
            .link(&cmd.project_id)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| {
                failed(format!(
                    "project {} is not linked on this host: run `tether projects link PATH` here",
                    cmd.project_id
                ))
            })?;
        // The checkout is the agent's working folder as far as the prompt check knows: the
        // worktree is made only once the prompt passed.
        if cmd.kind == SessionKind::Chat && preset.chat.is_none() {
            let with: Vec<String> = presets::all(&self.settings.custom_presets)
                .into_iter()
                .filter(|p| p.chat.is_some())
                .map(|p| p.name)
                .collect();
            return Err(failed(format!(
                "preset {} has no structured mode Tether speaks, so it runs terminal sessions \
                 only (chat sessions: {})",
                preset.name,
                with.join(", ")
            )));
        }
        let prompt = self.gate(cmd, &link.path).await?;
        let mcp = self.mcp_server(&cmd.session_id).map_err(failed)?;
        let program = presets::find_program(&preset.command, std::env::var_os("PATH").as_deref())
            .ok_or_else(|| {
            failed(format!(
                "agent CLI not found on the host: `{}` (preset {}) is not on the daemon's PATH",
                preset.command, preset.name
            ))
        })?;
        let branch = cmd.branch.clone().unwrap_or_else(|| {
            worktree::branch_name(
                cmd.task.as_ref().map(|t| t.slug.as_str()),
                cmd.task
                    .as_ref()
                    .map(|t| t.title.as_str())
                    .or(cmd.prompt.as_deref()),
                &cmd.session_id,
            )
        });
        let base_dir = self
            .settings
            .worktree_dir
            .join(worktree::slug(&link.project_name, 60));
        let dir_name = worktree::slug(&branch.replace('/', "-"), 100);
        let record = worktree::create_and_record(
            &self.state,
            &CreateWorktree {
                checkout: std::path::Path::new(&link.path),
                base_dir: &base_dir,
                dir_name: &dir_name,
                branch: &branch,
                base: cmd.base_branch.as_deref(),
            },
            Some(&cmd.project_id),
            Some(&cmd.session_id),
        )
        .await
        .map_err(|e| failed(format!("worktree: {e}")))?;
        if let Some(reason) = live.stop_reason() {
            return Err((SessionStatus::Stopped, reason));
        }
        let mut env: BTreeMap<String, String> = preset.env.clone();
        if cmd.kind == SessionKind::Terminal {
            env.insert("TERM".into(), "xterm-256color".into());
            env.insert("COLORTERM".into(), "truecolor".into());
        }
        env.insert("TETHER_SESSION_ID".into(), cmd.session_id.clone());
        env.insert("TETHER_HOST_ID".into(), self.auth.host_id.clone());
        env.insert("TETHER_PROJECT_ID".into(), cmd.project_id.clone());
        env.insert(
            crate::paths::STATE_DIR_ENV.into(),
            self.settings.state_dir.display().to_string(),
        );
        env.insert(
            mcp_config::CONFIG_ENV.into(),
            mcp.config_file.display().to_string(),
        );
        let spool = self.spool(&cmd.session_id);
        if let Some(dir) = spool.parent() {
            crate::paths::ensure_private_dir(dir).map_err(|e| failed(e.to_string()))?;
        }
        mcp.write()
            .map_err(|e| failed(format!("writing the agent's MCP config: {e}")))?;
        Ok(Prepared {
            preset,
            prompt,
            program,
            env,
            mcp,
            worktree: record.path,
            branch,
        })
    }

    /// A terminal session's agent, started in a PTY.
    async fn launch(
        self: &Arc<Self>,
        cmd: &StartSession,
        live: &Live,
        p: Prepared,
        shipped: watch::Receiver<u64>,
    ) -> Result<Arc<Agent>, (SessionStatus, String)> {
        let failed = |reason: String| (SessionStatus::Failed, reason);
        let launch = p.preset.launch(p.prompt.as_deref(), &p.mcp);
        let spool = self.spool(&cmd.session_id);
        let (program, env, record_path, branch) =
            (&p.program, &p.env, &p.worktree, p.branch.clone());
        let agent = Agent::spawn(
            &Spawn {
                program,
                args: &launch.args,
                cwd: record_path,
                env,
                cols: cmd.cols,
                rows: cmd.rows,
                spool: &spool,
            },
            shipped,
        )
        .map_err(|e| failed(format!("could not start the agent: {e}")))?;
        if let Ok(mut slot) = live.agent.lock() {
            *slot = Some(agent.clone());
        }
        self.set_status(
            &cmd.session_id,
            SessionStatus::Running,
            StatusChange {
                branch: Some(branch),
                worktree: Some(record_path.display().to_string()),
                ..StatusChange::default()
            },
        )
        .await;
        self.name(&cmd.session_id, p.prompt.clone(), None);
        if let Some(prompt) = launch.stdin {
            agent.write(format!("{prompt}\r").into_bytes());
        }
        Ok(agent)
    }

    /// A chat session from its process's start to its end.
    async fn run_chat(
        self: &Arc<Self>,
        cmd: &StartSession,
        live: &Live,
        p: Prepared,
        (shipped_tx, ended_tx, ended_rx): (
            watch::Sender<u64>,
            watch::Sender<bool>,
            watch::Receiver<bool>,
        ),
    ) {
        let id = &cmd.session_id;
        let log = match chat::EventLog::open(&self.spool(id)) {
            Ok(log) => log,
            Err(e) => {
                let reason = format!("opening the session's event spool: {e}");
                self.set_status(id, SessionStatus::Failed, failure(reason))
                    .await;
                // Close the (empty) stream so its readers stop waiting.
                ended_tx.send_replace(true);
                self.ship(id, watch::channel(0).1, ended_rx, shipped_tx)
                    .await;
                return;
            }
        };
        let conversation = chat::Chat::new(log, self.settings.chat.clone(), p.worktree.clone());
        let shipper = {
            let this = self.clone();
            let (id, spooled) = (id.clone(), conversation.log.len());
            tokio::spawn(async move { this.ship(&id, spooled, ended_rx, shipped_tx).await })
        };
        if let Ok(mut slot) = live.chat.lock() {
            *slot = Some(conversation.clone());
        }
        self.set_status(
            id,
            SessionStatus::Running,
            StatusChange {
                branch: Some(p.branch.clone()),
                worktree: Some(p.worktree.display().to_string()),
                ..StatusChange::default()
            },
        )
        .await;
        self.name(id, p.prompt.clone(), Some(conversation.clone()));
        let start = chat::Start {
            preset: &p.preset,
            program: p.program.clone(),
            env: p.env.clone(),
            mcp: &p.mcp,
            prompt: p.prompt.clone(),
        };
        let driven = if live.stop_reason().is_some() {
            Ok((-1, None))
        } else {
            conversation.drive(start, &live.stopped).await
        };
        let (status, change) = match driven {
            Err(reason) => (SessionStatus::Failed, failure(reason)),
            Ok((code, signal)) => (
                if live.stop_reason().is_some() {
                    SessionStatus::Stopped
                } else {
                    SessionStatus::Exited
                },
                StatusChange {
                    exit_code: Some(code),
                    reason: live
                        .stop_reason()
                        .or_else(|| signal.map(|s| format!("ended by {s}"))),
                    ..StatusChange::default()
                },
            ),
        };
        if status == SessionStatus::Failed
            && let Some(reason) = &change.reason
        {
            conversation.log.push(EventBody::Error {
                message: reason.clone(),
                code: Some("start_failed".into()),
            });
        }
        conversation.log.close(ended_event(
            status,
            change.exit_code,
            change.reason.as_deref(),
        ));
        ended_tx.send_replace(true);
        self.set_status(id, status, change).await;
        let _ = shipper.await;
    }

    /// Gives the session a title from its prompt (as the policies passed it: a redacted
    /// secret never reaches the model), in the background: a small model's when this machine
    /// has an API key (reported to the edge), else the fallback the edge already recorded. A
    /// chat session's stream gets it as a `title` event either way (unless it ended first).
    fn name(
        self: &Arc<Self>,
        id: &str,
        prompt: Option<String>,
        conversation: Option<Arc<chat::Chat>>,
    ) {
        let Some(prompt) = prompt else {
            return;
        };
        let this = self.clone();
        let id = id.to_owned();
        self.spawn(async move {
            let (title, source) = match this.settings.titles.generate(&this.http, &prompt).await {
                Some(t) => {
                    crate::titles::report(&this.http, &this.auth, &id, &t).await;
                    (Some(t), "llm")
                }
                None => (tether_durable::chat::fallback_title(&prompt), "fallback"),
            };
            if let (Some(title), Some(c)) = (title, conversation) {
                c.log.push(EventBody::Title {
                    title,
                    source: source.into(),
                });
            }
        });
    }

    /// A follow-up for a running chat session.
    pub fn deliver(&self, msg: ChatMessage) -> Result<Delivered, chat::DeliverError> {
        self.conversation(&msg.session_id)
            .map_err(chat::DeliverError::NotRunning)?
            .deliver(msg)
    }

    /// A member's answer to one of a chat session's approvals.
    pub fn approve(&self, answer: ApprovalAnswer) -> ApprovalOutcome {
        match self.conversation(&answer.session_id) {
            Ok(c) => c.answer(answer),
            Err(_) => ApprovalOutcome::Unknown,
        }
    }

    fn conversation(&self, id: &str) -> Result<Arc<chat::Chat>, String> {
        let live = self.live.lock().ok().and_then(|m| m.get(id).cloned());
        match live {
            None => Err(format!("session {id} is not running on this host")),
            Some(l) => l
                .chat()
                .ok_or_else(|| format!("session {id} is not a running chat session")),
        }
    }

    /// The session's local MCP server: this very binary (`tether mcp`), so the agent runs the
    /// daemon's own version whatever its PATH holds.
    fn mcp_server(&self, id: &str) -> Result<SessionServer, String> {
        let exe = std::env::current_exe().map_err(|e| {
            format!("the path of the tether binary, for the agent's MCP server: {e}")
        })?;
        Ok(SessionServer::new(&exe, id, &self.settings.state_dir))
    }

    /// A dispatched prompt passes the machine's user-prompt-submit policies before any agent
    /// starts: a deny (or an ask: nobody is there to answer yet) fails the session with the
    /// reason, a rewrite replaces the prompt. Every decision is recorded.
    async fn gate(
        &self,
        cmd: &StartSession,
        cwd: &str,
    ) -> Result<Option<String>, (SessionStatus, String)> {
        let Some(prompt) = cmd.prompt.clone() else {
            return Ok(None);
        };
        let guardrails = &self.settings.guardrails;
        if guardrails.current().is_empty() {
            return Ok(Some(prompt));
        }
        let combined = guardrails
            .gate_prompt(&cmd.session_id, cwd, &cmd.agent, &prompt)
            .await;
        let judged = |p: &String| {
            if let Ok(mut j) = self.judged.lock() {
                j.insert(cmd.session_id.clone(), p.clone());
            }
        };
        match combined.verdict {
            Verdict::Allow => {
                judged(&prompt);
                Ok(Some(prompt))
            }
            Verdict::Rewrite(new) => {
                judged(&new);
                Ok(Some(new))
            }
            Verdict::Deny(reason) => Err((
                SessionStatus::Failed,
                format!("the prompt was denied by a guardrail policy: {reason}"),
            )),
            // In a chat session the agent's own prompt hook asks again, and that ask becomes a
            // member's approval; the prompt is not marked judged, so the hook does ask.
            Verdict::Ask(_) if cmd.kind == SessionKind::Chat => Ok(Some(prompt)),
            Verdict::Ask(reason) => Err((
                SessionStatus::Failed,
                format!(
                    "a guardrail policy wants approval for the prompt, and a terminal session has \
                     nobody to ask before it starts (a chat session asks the org): {reason}"
                ),
            )),
        }
    }

    /// Ships the session's spool until its stream is closed.
    async fn ship(
        &self,
        id: &str,
        spooled: watch::Receiver<u64>,
        ended: watch::Receiver<bool>,
        shipped: watch::Sender<u64>,
    ) {
        let local = match self.state.session(id).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                warn!(session = %id, error = %e, "reading the session failed; not shipping");
                return;
            }
        };
        let shipper = ship::Shipper {
            session_id: id.to_owned(),
            stream_path: local.stream_path.clone(),
            spool: self.spool(id),
            state: self.state.clone(),
            auth: self.auth.clone(),
            client: self.streams.clone(),
            spooled,
            ended,
            shipped,
            kind: kind_of(&local.stream_path),
        };
        match shipper.run(&local).await {
            Ok(()) => {
                // Everything is in the stream now; the spool has served its purpose.
                let _ = std::fs::remove_file(self.spool(id));
            }
            Err(ship::ShipError::Full) => {
                warn!(session = %id, "the session's stream is full; stopping the agent");
                self.stop(id, "its output reached the stream's 1 GiB limit");
            }
            Err(e) => warn!(session = %id, error = %e, "shipping stopped"),
        }
    }

    /// Whether the session runs on this daemon now.
    pub fn is_live(&self, id: &str) -> bool {
        self.live.lock().is_ok_and(|m| m.contains_key(id))
    }

    /// Types `bytes` into a running session's terminal.
    pub fn input(&self, id: &str, bytes: Vec<u8>) -> Result<usize, String> {
        let n = bytes.len();
        let agent = self.agent(id)?;
        if agent.write(bytes) {
            Ok(n)
        } else {
            Err("the agent is not reading its input fast enough; try again".into())
        }
    }

    pub fn resize(&self, id: &str, cols: u16, rows: u16) -> Result<(), String> {
        self.agent(id)?
            .resize(cols, rows)
            .map_err(|e| e.to_string())
    }

    fn agent(&self, id: &str) -> Result<Arc<Agent>, String> {
        self.live
            .lock()
            .ok()
            .and_then(|m| m.get(id).and_then(|l| l.agent()))
            .ok_or_else(|| format!("session {id} is not running on this host"))
    }

    /// Stops a session (a stop command). Unknown or ended sessions: nothing to do.
    pub fn stop(&self, id: &str, reason: &str) {
        let live = self.live.lock().ok().and_then(|m| m.get(id).cloned());
        if let Some(live) = live {
            if let Ok(mut stop) = live.stop.lock() {
                stop.get_or_insert_with(|| reason.to_owned());
            }
            live.stopped.notify_one();
        }
    }

    /// After a restart: sessions that were running when the daemon went away are failed with
    /// that reason (their agents lost their terminal with it), and every stream not yet
    /// closed gets the rest of its spool, then its close.
    pub async fn recover(self: &Arc<Self>) -> Result<(), crate::Error> {
        // No session runs yet: MCP configs left by a daemon that died are stale.
        let _ = std::fs::remove_dir_all(mcp_config::dir(&self.settings.state_dir));
        for s in self.state.unclosed_sessions().await? {
            if !s.status.is_final() {
                let reason = match s.status {
                    SessionStatus::Running => {
                        "the daemon stopped while the agent ran; the output up to then is kept"
                    }
                    _ => "the daemon stopped while the session was starting",
                };
                if kind_of(&s.stream_path) == SessionKind::Chat
                    && !s.stream_closed
                    && let Ok(log) = chat::EventLog::open(&self.spool(&s.id))
                {
                    // Approvals that were waiting end with it, then the session.
                    for request_id in chat::EventLog::unanswered(&self.spool(&s.id)) {
                        log.push(EventBody::ApprovalAnswered {
                            request_id,
                            decision: self.settings.chat.approval_default,
                            reason: None,
                            answered_by: tether_durable::chat::Answerer::SessionEnded,
                        });
                    }
                    log.close(ended_event(SessionStatus::Failed, None, Some(reason)));
                }
                self.set_status(
                    &s.id,
                    SessionStatus::Failed,
                    StatusChange {
                        reason: Some(reason.into()),
                        ..StatusChange::default()
                    },
                )
                .await;
            }
            self.resume_shipping(&s);
        }
        let this = self.clone();
        let reporter = tokio::spawn(async move { report::run(&this).await });
        if let Ok(mut slot) = self.reporter.lock() {
            *slot = Some(reporter);
        }
        Ok(())
    }

    fn resume_shipping(self: &Arc<Self>, s: &LocalSession) {
        let len = std::fs::metadata(self.spool(&s.id)).map_or(0, |m| m.len());
        let this = self.clone();
        let id = s.id.clone();
        self.spawn(async move {
            let (shipped, _) = watch::channel(0);
            this.ship(&id, watch::channel(len).1, watch::channel(true).1, shipped)
                .await;
        });
    }

    /// A clean shutdown: stops every agent, waits (bounded) for their output to ship and
    /// their status to reach the edge.
    pub async fn shutdown(&self) {
        let live: Vec<Arc<Live>> = self
            .live
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for l in &live {
            if let Ok(mut stop) = l.stop.lock() {
                stop.get_or_insert_with(|| "the daemon shut down".into());
            }
            l.stopped.notify_one();
        }
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
            warn!("some session output is still unshipped; it goes at the next start");
        }
        if let Some(reporter) = self.reporter.lock().ok().and_then(|mut r| r.take()) {
            reporter.abort();
        }
        let _ = tokio::time::timeout(Duration::from_millis(1500), report::once(self)).await;
    }

    /// The local records, newest first.
    pub async fn list(&self, limit: u32) -> Result<Vec<LocalSession>, crate::Error> {
        self.state.sessions(limit).await
    }
}

/// A session's kind, from its stream's path (the local record keeps only the path).
fn kind_of(stream_path: &str) -> SessionKind {
    if stream_path.ends_with("/chat") {
        SessionKind::Chat
    } else {
        SessionKind::Terminal
    }
}

fn failure(reason: String) -> StatusChange {
    StatusChange {
        reason: Some(reason),
        ..StatusChange::default()
    }
}

/// The last event of a chat stream.
fn ended_event(status: SessionStatus, exit_code: Option<i64>, reason: Option<&str>) -> EventBody {
    EventBody::SessionEnded {
        status: status.as_str().into(),
        exit_code,
        reason: reason.map(str::to_owned),
    }
}

/// Waits for the agent to exit; a stop request ends it (SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]).
async fn wait_exit(agent: &Agent, live: &Live) -> pty::Exit {
    let Some(mut exited) = agent.exited.lock().ok().and_then(|mut e| e.take()) else {
        return (-1, None);
    };
    if live.stop_reason().is_none() {
        tokio::select! {
            r = &mut exited => return r.unwrap_or((-1, None)),
            () = live.stopped.notified() => {}
        }
    }
    agent.terminate();
    match tokio::time::timeout(STOP_GRACE, &mut exited).await {
        Ok(r) => r.unwrap_or((-1, None)),
        Err(_) => {
            agent.kill();
            exited.await.unwrap_or((-1, None))
        }
    }
}

impl crate::control::SessionGate for Sessions {
    fn is_live(&self, id: &str) -> bool {
        Sessions::is_live(self, id)
    }

    fn ask_member(&self, id: &str, ask: crate::control::Ask) -> Option<crate::control::AskFuture> {
        let conversation = self.conversation(id).ok()?;
        Some(Box::pin(async move { conversation.ask(ask).await }))
    }

    fn already_judged(&self, id: &str, prompt: &str) -> bool {
        self.judged.lock().is_ok_and(|mut j| {
            let judged = j.get(id).is_some_and(|p| p == prompt);
            if judged {
                j.remove(id);
            }
            judged
        })
    }
}
