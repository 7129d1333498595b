//! The command line: argument definitions here, one module per command group.

mod approve;
mod attach;
mod chat;
mod doctor;
mod hook;
mod hosts;
mod login;
mod mcp;
mod pair;
mod ping;
mod policy;
mod projects;
mod service;
mod status;
mod tasks;
mod up;
mod worktrees;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tether::paths::Paths;

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Run coding agents on this machine from anywhere.",
    long_about = "Run coding agents on this machine from anywhere.\n\n\
        Pair the machine with an org once (`tether pair`), then keep `tether up` running \
        (or `tether service install`).\n\n\
        Files: the login in $XDG_CONFIG_HOME/tether/config.toml, the host key and the local \
        database in $XDG_STATE_HOME/tether/; TETHER_CONFIG_DIR and TETHER_STATE_DIR replace \
        those folders. Logs go to stderr; RUST_LOG sets their level."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Log this CLI in to a Tether server with a member's API key (used by `tether hosts`).
    ///
    /// The key is checked with the server (GET /v1/me) before it is stored in config.toml
    /// (mode 0600).
    Login {
        /// The server's base URL, e.g. http://127.0.0.1:8787.
        #[arg(long, env = "TETHER_URL")]
        server: String,
        /// The API key (tk_...). Without it: $TETHER_KEY, else it is asked for without echo (or
        /// read as one line from a pipe). Prefer those: command lines are visible to others.
        #[arg(long, env = "TETHER_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Forget the stored API key.
    Logout,
    /// Register this machine with an org: shows a code for a member to approve, then waits.
    ///
    /// Creates the host key on first use and reports the agent CLIs found. The code is single
    /// use and expires at the time shown (10 minutes on Tether's edge); a member approves it
    /// with `tether hosts approve CODE` or POST /v1/pairing/CODE/approve.
    Pair {
        /// The server's base URL. Default: the one from `tether login`.
        #[arg(long, env = "TETHER_URL")]
        server: Option<String>,
        /// The name the org sees for this machine. Default: its hostname.
        #[arg(long)]
        name: Option<String>,
        /// Pair again although this machine is already paired (the old host stays registered
        /// until revoked).
        #[arg(long)]
        force: bool,
    },
    /// Run the daemon in the foreground until SIGINT or SIGTERM.
    ///
    /// Exits 0 after a clean shutdown and 78 when restarting cannot help (not paired).
    Up,
    /// Install or remove the systemd user service that runs `tether up`.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Show this machine's pairing, identity, login, daemon and file locations.
    Status,
    /// Check this machine: git, agent CLIs, the server, the clock, the host key.
    ///
    /// Exits non-zero when a required check fails (git missing, server unreachable, host key
    /// unusable).
    Doctor {
        /// The server to check. Default: the paired one, else the login's.
        #[arg(long, env = "TETHER_URL")]
        server: Option<String>,
    },
    /// List, approve and revoke the org's hosts (member commands, using the login).
    Hosts {
        /// The server. Default: the login's.
        #[arg(long, env = "TETHER_URL", global = true)]
        server: Option<String>,
        /// A member's API key instead of the stored one.
        #[arg(long, env = "TETHER_KEY", hide_env_values = true, global = true)]
        key: Option<String>,
        #[command(subcommand)]
        command: HostsCommand,
    },
    /// Link local git checkouts to the org's projects, so sessions of a project can run here.
    Projects {
        #[command(subcommand)]
        command: ProjectsCommand,
    },
    /// The org's tasks as this machine's mirror has them: no network needed, daemon running or
    /// not.
    ///
    /// The daemon (`tether up`) mirrors the org's tasks, statuses, projects, hosts, sessions
    /// and automations into the local database and keeps them live; every answer says how
    /// current the mirror is.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Show a session's terminal here: replay it, follow it live, type into it.
    ///
    /// Replays from the start (or --from), then follows live until the session ends. With a
    /// terminal on stdin, keystrokes and resizes go to the agent and the detach keys leave it
    /// running; piped stdin is forwarded as is. Uses the login (or --server/--key).
    Attach {
        /// The session id (ses_...).
        session: String,
        /// Where to start: `start`, `now`, a byte offset, or a stream offset.
        #[arg(long, default_value = "start")]
        from: String,
        /// The keys that detach, e.g. `ctrl-]` or `ctrl-p,ctrl-q`.
        #[arg(long, default_value = "ctrl-]")]
        detach_keys: String,
        /// Only watch: send no keystrokes or resizes.
        #[arg(long)]
        no_input: bool,
        #[arg(long, env = "TETHER_URL")]
        server: Option<String>,
        #[arg(long, env = "TETHER_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Show a chat session here: replay its conversation, follow it live, answer its approval
    /// requests, send follow-ups.
    ///
    /// Replays the session's events from the start (or --from), then follows them live until
    /// the session ends: messages (the agent's as they are written), tool calls, approval
    /// requests and answers, turns and token usage. Colours only when stdout is a terminal
    /// (and NO_COLOR is unset). Event types this version does not know are skipped.
    ///
    /// With a terminal on stdin, once caught up: each approval request still open is asked
    /// about (`Allow Bash? [y]es / [n]o / [s]kip: `; `n` or `y` may be followed by a reason,
    /// e.g. `n not on main`; skip leaves it to others or its timeout), and any other non-empty
    /// line is sent to the agent as a follow-up message. Ctrl-D leaves; the session keeps
    /// running. Without a terminal on stdin (or with --no-input, --no-follow or --json, or
    /// when the session has ended), stdin is not read. A terminal session is refused: use
    /// `tether attach`. Uses the login (or --server/--key).
    Chat {
        /// The session id (ses_...).
        session: String,
        /// Where to start: `start`, `now`, or a stream offset (as `--no-follow` prints it on
        /// stderr when it stops).
        #[arg(long, default_value = "start")]
        from: String,
        /// Stop once caught up (the first read that reaches the end of what the stream
        /// holds) instead of following live; prints on stderr where to go on from.
        #[arg(long)]
        no_follow: bool,
        /// Print each event as one compact JSON line (NDJSON) with all its fields (keys
        /// sorted), unknown types included, and nothing else on stdout. No prompts, no input.
        #[arg(long)]
        json: bool,
        /// Only watch: no approval prompts, no follow-ups.
        #[arg(long)]
        no_input: bool,
        #[arg(long, env = "TETHER_URL")]
        server: Option<String>,
        #[arg(long, env = "TETHER_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Allow or deny a tool call a chat session waits on (an approval request).
    ///
    /// Answers with the login's key (or --key); the request may need a higher role (admin or
    /// owner). Prints one line, e.g. `allowed apr_... — answered by mem_...`; on error, the
    /// server's message on stderr and exit code 1 (already answered, no such request, role
    /// too low, session ended, host offline, ...).
    Approve {
        /// The session id (ses_...).
        session: String,
        /// The approval request's id (apr_...), as `tether chat` shows it.
        request: String,
        /// allow or deny.
        #[arg(value_parser = ["allow", "deny"])]
        decision: String,
        /// Why: recorded with the answer and shown in the session.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, env = "TETHER_URL")]
        server: Option<String>,
        #[arg(long, env = "TETHER_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// List, remove, prune and import the git worktrees of sessions on this machine.
    Worktrees {
        #[command(subcommand)]
        command: WorktreesCommand,
    },
    /// The machine's guardrail policies (WebAssembly components), and a test bench for them.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Answer one agent hook event: what Claude Code and Codex run (see `tether hooks`).
    ///
    /// Reads the agent's hook JSON on stdin and answers in that agent's protocol (exit 2 with
    /// the reason on stderr to block; JSON permissionDecision / updatedInput). Acts only in
    /// sessions Tether launched (TETHER_SESSION_ID): elsewhere it allows at once. The
    /// daemon's policies decide; when the daemon is down, the failure mode does: prompts and
    /// tool calls are denied if any policy fails closed.
    Hook {
        /// Whose protocol: claude-code or codex.
        #[arg(long)]
        agent: String,
    },
    /// Serve MCP on stdin/stdout to an agent of a Tether session: what agents run.
    ///
    /// The daemon gives every agent it launches this server: Claude Code with --mcp-config,
    /// Codex with -c overrides, any agent through the file named by $TETHER_MCP_CONFIG. It
    /// offers the org's tools (the same as the server's /mcp: tasks, projects, members, hosts,
    /// worktrees, sessions, terminals, ...) and two for the agent's own session:
    /// session_report_progress and session_update_task. It holds no credentials: every request
    /// goes to the daemon's control socket (in the state folder, $TETHER_STATE_DIR), which
    /// answers only for the sessions it runs and calls the server with the host's token.
    /// Without a running daemon it lists the two session tools, and every call answers an
    /// error saying so.
    Mcp {
        /// The session (ses_...). Default: $TETHER_SESSION_ID, which the daemon sets.
        #[arg(long, env = "TETHER_SESSION_ID")]
        session: Option<String>,
    },
    /// Install, remove or check Tether's entries in the agents' hook settings
    /// (~/.claude/settings.json, ~/.codex/hooks.json). The daemon installs them when it starts
    /// unless config.toml says `agent_hooks = false`; the user's own hooks are kept.
    Hooks {
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// Check that a Tether server answers: its health and version.
    Ping {
        /// The server's base URL, e.g. http://127.0.0.1:8787.
        #[arg(long, env = "TETHER_URL")]
        server: String,
    },
}

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Write ~/.config/systemd/user/tether.service (runs `tether up`, restarts on failure).
    Install,
    /// Remove the unit (and its `systemctl --user enable` link).
    Uninstall,
}

#[derive(Subcommand)]
pub enum ProjectsCommand {
    /// Link the checkout at PATH (any folder inside it) to a project of the org.
    Link {
        path: std::path::PathBuf,
        /// The project's name or id. Default: the checkout's folder name.
        #[arg(long)]
        project: Option<String>,
        /// Create the project when the org has none of that name.
        #[arg(long)]
        create: bool,
    },
    /// Drop the link of a project (name or id).
    Unlink { project: String },
    /// The projects linked on this machine.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TasksCommand {
    /// Tasks, newest first: slug, status, priority, title. The first line says how current
    /// the mirror is (e.g. `mirror synced 3 s ago (live)`).
    List {
        /// Only tasks in this status: its name (any case) or id.
        #[arg(long)]
        status: Option<String>,
        /// Only tasks of this project: its name (any case) or id.
        #[arg(long)]
        project: Option<String>,
        /// Only tasks assigned to this member (mem_...), or `none` for unassigned ones.
        #[arg(long)]
        assignee: Option<String>,
        /// At most this many tasks.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Print {"tasks": [...], "mirror": {"synced_at", "age_secs", "live"}} instead, the
        /// tasks as the API shows them.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Add a policy component (checked by loading it; pinned by its SHA-256). The machine's
    /// policies run in the order added, after the org's. A running daemon applies it at once.
    Add {
        plugin: std::path::PathBuf,
        /// Its configuration, a JSON object.
        #[arg(long)]
        config: Option<String>,
        /// What a trap or timeout means: deny (fail closed) or allow.
        #[arg(long, default_value = "deny")]
        failure: String,
    },
    /// The policies, in order: the org's (as last synced), then the machine's, and what the
    /// running daemon enforces.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a policy: its path, or its number in `tether policy list`.
    Remove { policy: String },
    /// Run one policy on one hook event (Claude Code or Codex hook JSON) and show its decision
    /// and the answer the agent would get.
    Test {
        plugin: std::path::PathBuf,
        /// The hook input, as the agent sends it on stdin.
        #[arg(long)]
        event: std::path::PathBuf,
        /// The policy's configuration, a JSON object.
        #[arg(long)]
        config: Option<String>,
        /// Whose hook format the event is in: claude-code or codex.
        #[arg(long, default_value = "claude-code")]
        agent: String,
    },
}

#[derive(Subcommand)]
pub enum HooksCommand {
    /// Add Tether's entries (or bring them up to date), keeping the user's own hooks.
    Install,
    /// Take Tether's entries out, keeping everything else.
    Uninstall,
    /// Whether each agent's settings hold Tether's entries, and whether they are current.
    /// Exits 3 when one is missing or stale.
    Status,
}

#[derive(Subcommand)]
pub enum WorktreesCommand {
    /// Every worktree Tether created or imported, with its state (clean, dirty, missing,
    /// orphan).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a worktree (and its folder). Refuses one with uncommitted changes unless --force.
    Remove {
        path: std::path::PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Remove the worktrees Tether created that git or the disk no longer has (never an
    /// imported one).
    Prune {
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Record an existing linked worktree (not a main checkout) so Tether lists it.
    Import {
        path: std::path::PathBuf,
        /// The project it belongs to (id).
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum HostsCommand {
    /// List the org's hosts.
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pairing code shown by `tether pair` on the new machine.
    Approve {
        /// The code, as shown.
        code: String,
    },
    /// Revoke a host: its tunnel closes and its daemon stops for good.
    Revoke {
        /// The host id (hst_...), from `tether hosts list`.
        id: String,
    },
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ping { server } => ping::ping(&server).await,
        Command::Login { server, key } => login::login(&paths()?, &server, key).await,
        Command::Logout => login::logout(&paths()?),
        Command::Pair {
            server,
            name,
            force,
        } => pair::pair(&paths()?, server, name, force).await,
        Command::Up => up::up(paths()?).await,
        Command::Service { command } => match command {
            ServiceCommand::Install => service::install(&paths()?),
            ServiceCommand::Uninstall => service::uninstall(),
        },
        Command::Status => status::status(&paths()?).await,
        Command::Doctor { server } => doctor::doctor(&paths()?, server).await,
        Command::Hosts {
            server,
            key,
            command,
        } => hosts::hosts(&paths()?, server, key, command).await,
        Command::Projects { command } => projects::projects(&paths()?, command).await,
        Command::Tasks { command } => tasks::tasks(&paths()?, command).await,
        Command::Attach {
            session,
            from,
            detach_keys,
            no_input,
            server,
            key,
        } => {
            let args = attach::AttachArgs {
                server,
                key,
                session,
                from,
                detach_keys,
                no_input,
            };
            attach::attach(&paths()?, args).await
        }
        Command::Chat {
            session,
            from,
            no_follow,
            json,
            no_input,
            server,
            key,
        } => {
            let args = chat::ChatArgs {
                server,
                key,
                session,
                from,
                no_follow,
                json,
                no_input,
            };
            chat::chat(&paths()?, args).await
        }
        Command::Approve {
            session,
            request,
            decision,
            reason,
            server,
            key,
        } => {
            let args = approve::ApproveArgs {
                server,
                key,
                session,
                request,
                decision,
                reason,
            };
            approve::approve(&paths()?, args).await
        }
        Command::Worktrees { command } => worktrees::worktrees(&paths()?, command).await,
        Command::Policy { command } => policy::policy(&paths()?, command).await,
        Command::Hook { agent } => Ok(hook::hook(&agent)),
        Command::Mcp { session } => mcp::mcp(&paths()?, session).await,
        Command::Hooks { command } => hook::hooks(command),
    }
}

fn paths() -> Result<Paths> {
    Ok(Paths::from_env()?)
}

/// 78 for errors a restart cannot fix (the service manager is told not to restart on it),
/// 1 for everything else. (Another daemon holding the state folder is worth retrying: it may
/// be a foreground `tether up` that is about to stop.)
pub fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<tether::Error>() {
        Some(tether::Error::NotPaired { .. } | tether::Error::TunnelStopped(_)) => {
            ExitCode::from(tether::daemon::EXIT_DO_NOT_RESTART)
        }
        _ => ExitCode::FAILURE,
    }
}

/// The pairing recorded in the state database, without creating the database.
async fn read_pairing(paths: &Paths) -> Result<Option<tether::state::Pairing>> {
    if !paths.state_db().exists() {
        return Ok(None);
    }
    let state = tether::state::State::open(&paths.state_db()).await?;
    Ok(state.pairing().await?)
}
