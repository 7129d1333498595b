//! `tether up`: the long-running daemon.
//!
//! [`Daemon::load`] gathers what the daemon runs on (paths, identity, state database, pairing)
//! and takes the state folder's lock, so one state folder has at most one daemon.
//! [`run_daemon`] is the daemon itself; it returns when its shutdown future completes
//! (SIGINT/SIGTERM, see [`shutdown_signal`]). Besides the tunnel it runs the control socket,
//! the org policies' sync, the decision reports and the org's mirror ([`crate::mirror`]).
//!
//! Exit codes: 0 after a clean shutdown; [`EXIT_DO_NOT_RESTART`] when retrying cannot help (not
//! paired, revoked), which the systemd unit lists in `RestartPreventExitStatus=`; 1 for anything
//! else, which the unit restarts.

use crate::Error;
use crate::config::Config;
use crate::guardrails::{Guardrails, report};
use crate::host_auth::HostAuth;
use crate::identity::Identity;
use crate::mcp::relay::Relay;
use crate::mirror::{Mirror, Syncer};
use crate::paths::Paths;
use crate::policy;
use crate::presets;
use crate::sessions::{Sessions, Settings};
use crate::state::{Pairing, State};
use crate::tunnel::Tunnel;
use std::fs::File;
use std::future::Future;
use std::sync::Arc;
use tracing::{error, info, warn};

/// The exit status that tells the service manager not to restart the daemon (`EX_CONFIG`).
pub const EXIT_DO_NOT_RESTART: u8 = 78;

/// Everything the daemon runs on.
#[derive(Debug)]
pub struct Daemon {
    pub paths: Paths,
    pub identity: Identity,
    pub state: State,
    pub pairing: Pairing,
    /// Held (locked) for the daemon's lifetime.
    _lock: File,
}

impl Daemon {
    /// Loads the identity, opens the state database and reads the pairing. Fails with
    /// [`Error::NotPaired`] when there is no identity or pairing, and with
    /// [`Error::AlreadyRunning`] when another daemon holds this state folder.
    pub async fn load(paths: Paths) -> Result<Self, Error> {
        let key_file = paths.key_file();
        let identity = match Identity::load(&key_file) {
            Ok(id) => id,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotPaired {
                    state_dir: paths.state_dir.clone(),
                });
            }
            Err(e) => return Err(e),
        };
        let lock = lock_state_dir(&paths)?;
        let state = State::open(&paths.state_db()).await?;
        let Some(pairing) = state.pairing().await? else {
            return Err(Error::NotPaired {
                state_dir: paths.state_dir.clone(),
            });
        };
        Ok(Self {
            paths,
            identity,
            state,
            pairing,
            _lock: lock,
        })
    }
}

/// Whether a daemon holds this state folder's lock now.
pub fn is_running(paths: &Paths) -> bool {
    let Ok(file) = File::options()
        .write(true)
        .open(paths.state_dir.join("daemon.lock"))
    else {
        return false;
    };
    // The lock is taken only for the blink of this check; it goes when `file` is dropped.
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

fn lock_state_dir(paths: &Paths) -> Result<File, Error> {
    let path = paths.state_dir.join("daemon.lock");
    let mut options = File::options();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(Error::io("opening", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::AlreadyRunning {
            state_dir: paths.state_dir.clone(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            action: "locking",
            path,
            source,
        }),
    }
}

/// The daemon: holds the tunnel to the edge until `shutdown` completes (then drains and closes
/// it cleanly) or the edge says this host may not connect (revoked, replaced), which is
/// [`Error::TunnelStopped`] and exits with [`EXIT_DO_NOT_RESTART`].
///
/// `shutdown` wins every `select!`, so SIGTERM always ends the daemon promptly.
pub async fn run_daemon(daemon: Daemon, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    info!(
        host_id = %daemon.pairing.host_id,
        org_id = %daemon.pairing.org_id,
        server = %daemon.pairing.server,
        fingerprint = %daemon.identity.fingerprint(),
        state = %daemon.paths.state_dir.display(),
        "tether daemon started"
    );
    let config = Config::load(&daemon.paths.config_file())?;
    let state = Arc::new(daemon.state);
    let guardrails = Arc::new(
        Guardrails::load(
            daemon.paths.clone(),
            state.clone(),
            policy::Limits::default(),
        )
        .await?,
    );
    if config.agent_hooks != Some(false) {
        install_agent_hooks();
    }
    let settings = Settings {
        worktree_dir: config
            .worktree_dir
            .clone()
            .unwrap_or_else(|| daemon.paths.state_dir.join("worktrees")),
        spool_dir: daemon.paths.state_dir.join("spool"),
        custom_presets: presets::load_custom(&config.other)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?,
        guardrails: guardrails.clone(),
        state_dir: daemon.paths.state_dir.clone(),
        chat: config.chat.clone().unwrap_or_default().settings()?,
        titles: Arc::new(
            if config.chat.as_ref().and_then(|c| c.titles) == Some(false) {
                crate::titles::Titles::none()
            } else {
                crate::titles::Titles::from_env()
            },
        ),
    };
    // No idle connections kept for tokens: the client is used once per connect, and when a
    // tunnel dies of silence (a half-open path) a pooled connection on that path is dead too;
    // reusing it would stall the reconnect until the timeout.
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .pool_max_idle_per_host(0)
        .build()
        .map_err(Error::HttpClient)?;
    let auth = Arc::new(HostAuth::new(
        &daemon.pairing.server,
        &daemon.pairing.host_id,
        daemon.identity,
        http,
    ));
    // One client (one connection pool) for everything the daemon asks the edge's API: the
    // sessions' streams and reports, the org's policies, the decision reports.
    let api = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .map_err(Error::HttpClient)?;
    let sessions = Sessions::new(state.clone(), auth.clone(), settings, api.clone())?;
    sessions.recover().await?;
    // The org's tables, mirrored into the state database for `tether tasks list` and the
    // agents' read tools (which then work offline too).
    let mirror = match Mirror::new(state.clone()) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            error!(error = %e, "the mirror is unavailable: the agents' read tools ask the edge");
            None
        }
    };
    let mirror_sync = mirror.as_ref().and_then(|m| {
        match Syncer::connect(m.clone(), api.clone(), auth.clone(), &daemon.pairing.org_id) {
            Ok(syncer) => Some(tokio::spawn(async move { syncer.run().await })),
            Err(e) => {
                error!(error = %e, "the org's tables cannot be mirrored");
                None
            }
        }
    });
    let relay = Arc::new(Relay::new(auth.clone(), api.clone()).with_mirror(mirror.clone()));
    let mut background = vec![serve_control(&daemon.paths, &guardrails, &sessions, &relay)];
    let every = std::time::Duration::from_secs(config.policy_sync_secs.unwrap_or(30).max(1));
    let (g, a, h) = (guardrails.clone(), auth.clone(), api.clone());
    background.push(Some(tokio::spawn(async move {
        g.keep_current(&a, &h, every).await;
    })));
    let (g, a) = (guardrails.clone(), auth.clone());
    background.push(Some(tokio::spawn(async move {
        report::run(&g, &a, &api).await;
    })));
    let tunnel = Tunnel {
        auth: &auth,
        state: &state,
        sessions: &sessions,
    };
    let outcome = tunnel.run(shutdown).await;
    for task in background.into_iter().flatten() {
        task.abort();
    }
    if let Some(task) = mirror_sync {
        task.abort();
        // Waited for, so nothing it was writing lands after the mirror is marked stopped.
        let _ = task.await;
    }
    if let Some(m) = &mirror
        && let Err(e) = m.stop_live(None).await
    {
        warn!(error = %e, "marking the mirror stopped failed");
    }
    let _ = std::fs::remove_file(daemon.paths.control_socket());
    sessions.shutdown().await;
    info!("tether daemon stopped");
    outcome.map_err(Error::TunnelStopped)
}

/// Keeps the daemon's entries in the agents' hook settings (idempotent: rewritten at every
/// start, the user's own hooks kept). A failure is logged: the agents then run unguarded by
/// their hooks, and `tether hooks status` says so.
fn install_agent_hooks() {
    let (Ok(home), Ok(exe)) = (etcetera::home_dir(), std::env::current_exe()) else {
        warn!("no home folder or executable path: agent hooks not installed");
        return;
    };
    match crate::hooks::install::install(&home, &exe) {
        Ok(changes) => {
            for c in changes {
                info!(file = %c.path.display(), change = ?c.kind, "agent hooks");
            }
        }
        Err(e) => error!(error = %e, "installing the agent hooks failed"),
    }
}

/// Serves the control socket (hooks, reloads, the agents' MCP requests); None where there are
/// no Unix sockets or the socket cannot be made (hooks then answer by the failure mode, and the
/// agents' MCP servers offer only their session tools, which fail).
fn serve_control(
    paths: &Paths,
    guardrails: &Arc<Guardrails>,
    sessions: &Arc<Sessions>,
    relay: &Arc<Relay>,
) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        let path = paths.control_socket();
        match crate::control::bind(&path) {
            Ok(listener) => {
                let gate: Arc<dyn crate::control::SessionGate> = sessions.clone();
                return Some(tokio::spawn(crate::control::serve(
                    listener,
                    guardrails.clone(),
                    gate,
                    relay.clone(),
                )));
            }
            Err(e) => error!(
                socket = %path.display(), error = %e,
                "the control socket is unavailable: agent hooks answer by the failure mode, and the agents' MCP tools fail"
            ),
        }
    }
    #[cfg(not(unix))]
    let _ = (paths, guardrails, sessions, relay);
    None
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that completes with the
/// signal's name when either arrives. Install before announcing readiness: a signal that
/// arrives earlier would otherwise kill the process uncleanly.
pub fn shutdown_signal() -> Result<impl Future<Output = &'static str>, Error> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}
