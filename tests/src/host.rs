//! Real `tether` processes for the end-to-end tests and benchmarks: a machine's folders
//! ([`HostHome`]), pairing it through the CLI and the API ([`pair`]), and the daemon
//! ([`TetherDaemon`], `tether up`), which is stopped with SIGTERM (then killed, as a last
//! resort) when its handle drops. Signals go to the one process id this handle started.

use crate::Api;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The built `tether` binary: `$TETHER_BIN` (relative to the workspace root), else
/// `target/debug/tether`.
pub fn tether_bin() -> Result<PathBuf> {
    let bin = std::env::var_os("TETHER_BIN").unwrap_or_else(|| "target/debug/tether".into());
    let bin = crate::root().join(bin);
    if !bin.exists() {
        bail!(
            "{} is not built: run `cargo build -p tether` (or set TETHER_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A folder under the system's temporary folder, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tether-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One machine's `tether` folders: config, state and a private HOME, so a test's daemons never
/// read or write the user's (one state folder per daemon).
pub struct HostHome {
    dir: TempDir,
    logs: AtomicU64,
}

impl HostHome {
    pub fn new(label: &str) -> Self {
        Self {
            dir: TempDir::new(label),
            logs: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.path().join("config")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The host's Ed25519 key (`tether::identity::Identity::load` reads it).
    pub fn key_file(&self) -> PathBuf {
        self.state_dir().join("host.key")
    }

    /// `tether ARGS` with this machine's folders and nothing from the caller's environment
    /// that could point it elsewhere.
    pub fn command(&self, args: &[&str]) -> Result<Command> {
        let mut c = Command::new(tether_bin()?);
        c.args(args)
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("xdg-config"))
            .env("XDG_STATE_HOME", self.path().join("xdg-state"))
            .env("TETHER_CONFIG_DIR", self.config_dir())
            .env("TETHER_STATE_DIR", self.state_dir())
            .env_remove("TETHER_URL")
            .env_remove("TETHER_KEY")
            // Titles come from a model only where a test points the daemon at one.
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null());
        Ok(c)
    }

    /// A new log file in this home, for one process's stderr.
    fn log_file(&self, what: &str) -> PathBuf {
        let n = self.logs.fetch_add(1, Ordering::Relaxed);
        self.path().join(format!("{what}-{n}.log"))
    }
}

/// Pairs the machine `home` with the org of `api`'s member key: runs `tether pair --server
/// SERVER --name NAME` (SERVER is what the daemon will connect to; it may be a proxy in front of
/// `api`'s Worker), approves the code it prints through the API, and waits for it to save the
/// pairing and exit 0. Answers the host's id.
pub async fn pair(api: &Api, server: &str, home: &HostHome, name: &str) -> Result<String> {
    let log = home.log_file("pair");
    let mut cmd =
        tokio::process::Command::from(home.command(&["pair", "--server", server, "--name", name])?);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting tether pair")?;
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let code = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = out.next_line().await? {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(code) = line.trim().strip_prefix("Pairing code:") {
                return Ok(code.trim().to_owned());
            }
        }
        bail!("tether pair ended without a code")
    })
    .await
    .with_context(|| format!("tether pair printed no code within 30 s: {printed}"))??;

    let (status, host) = api
        .post(
            &format!("/v1/pairing/{code}/approve"),
            serde_json::json!({}),
        )
        .await;
    if status != 201 {
        bail!("approving {code} answered {status}: {host}");
    }
    let host_id = host["id"].as_str().context("no host id")?.to_owned();

    // It polls every 2 s; then it saves the pairing and exits.
    let rest = async {
        while let Some(line) = out.next_line().await? {
            printed.push_str(&line);
            printed.push('\n');
        }
        Ok::<_, anyhow::Error>(child.wait().await?)
    };
    let status = tokio::time::timeout(Duration::from_secs(30), rest)
        .await
        .context("tether pair did not finish within 30 s of the approval")??;
    if !status.success() || !printed.contains(&format!("this machine is host {host_id}")) {
        bail!(
            "tether pair ended {status}: {printed}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    Ok(host_id)
}

/// `tether up` for one [`HostHome`], its stderr (the daemon's logs, `RUST_LOG=info` unless
/// set) in a file of that home. Dropping it stops the daemon: SIGTERM, then SIGKILL after 10 s.
pub struct TetherDaemon {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl TetherDaemon {
    pub fn start(home: &HostHome) -> Result<Self> {
        Self::start_with_env(home, &[])
    }

    /// With these environment variables on top.
    pub fn start_with_env(home: &HostHome, env: &[(&str, &str)]) -> Result<Self> {
        let log = home.log_file("up");
        let mut cmd = home.command(&["up"])?;
        cmd.envs(env.iter().copied());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("starting tether up")?;
        Ok(Self {
            child,
            log,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited (without waiting).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Sends `signal` (a `kill` name such as `TERM`) to this daemon, unless it has exited. Until
    /// it is waited for, its process id cannot be reused, so the signal reaches this process.
    pub fn signal(&mut self, signal: &str) {
        if self.try_exit().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, and its exit status (it must exit within 10 s).
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        match self.wait(Duration::from_secs(10)).await {
            Some(s) => s,
            None => panic!(
                "tether up (pid {}) did not stop within 10 s of SIGTERM:\n{}",
                self.pid(),
                self.log()
            ),
        }
    }

    /// SIGKILL: the daemon dies without a word to the edge (its sockets are closed by the OS).
    pub async fn kill(&mut self) -> ExitStatus {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
        }
        self.wait(Duration::from_secs(10))
            .await
            .expect("a killed process exits")
    }

    /// Resident memory (`VmRSS` in /proc/PID/status), in KiB, while it runs.
    pub fn rss_kib(&mut self) -> Option<u64> {
        if self.try_exit().is_some() {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for TetherDaemon {
    fn drop(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_exit().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs git in `dir` with a fixed identity; panics with git's stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.email=e2e@example.com", "-c", "user.name=E2E"])
        .args(args)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `home` a machine ready for sessions: a git checkout (`<home>/repo`, one commit on
/// `main`) linked to the org's project `app` (created), worktrees under `<home>/worktrees`,
/// and `tests/fixtures/fake-agent.py` as the agent preset `fake` (plus `extra_config`, more
/// TOML such as other presets). It logs what it writes to `<home>/agent-logs/<session>.out`
/// ([`agent_transcript`]). Pairs it with `server`; answers the host id.
pub async fn session_machine(
    api: &Api,
    server: &str,
    home: &HostHome,
    name: &str,
    extra_config: &str,
) -> Result<String> {
    let repo = home.path().join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# app\n")?;
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let host_id = pair(api, server, home, name).await?;
    let logs = home.path().join("agent-logs");
    std::fs::create_dir_all(&logs)?;
    let agent = crate::root().join("tests/fixtures/fake-agent.py");
    let config = format!(
        "worktree_dir = {:?}\n\n[presets.fake]\ncommand = {agent:?}\nprompt = \"argv\"\n\
         prompt_args = [\"--prompt\"]\nenv = {{ FAKE_AGENT_LOG_DIR = {logs:?} }}\n{extra_config}",
        home.path().join("worktrees"),
    );
    std::fs::create_dir_all(home.config_dir())?;
    std::fs::write(home.config_dir().join("config.toml"), config)?;
    let link = home.command(&[
        "projects",
        "link",
        &repo.display().to_string(),
        "--project",
        "app",
        "--create",
    ])?;
    // Not blocking the runtime: a proxy the machine talks through may run on it.
    let out = tokio::process::Command::from(link).output().await?;
    if !out.status.success() {
        bail!("projects link: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(host_id)
}

/// A machine like [`session_machine`] with one more preset, `claude-mcp`:
/// `tests/fixtures/fake-claude.py` given its session's MCP config the way the built-in `claude`
/// preset passes it (the file, `--`, then the prompt). Answers the host id and where the agent
/// records what its MCP server answered.
pub async fn mcp_agent_machine(
    api: &Api,
    server: &str,
    home: &HostHome,
    name: &str,
) -> Result<(String, McpLog)> {
    let logs = home.path().join("mcp-logs");
    std::fs::create_dir_all(&logs)?;
    let agent = crate::root().join("tests/fixtures/fake-claude.py");
    let extra = format!(
        "\n[presets.claude-mcp]\ncommand = {agent:?}\nprompt = \"argv\"\n\
         mcp_args = [\"--mcp-config\", \"{{mcp_config}}\", \"--\"]\n\
         env = {{ FAKE_CLAUDE_MCP_LOG = {logs:?} }}\n"
    );
    let host_id = session_machine(api, server, home, name, &extra).await?;
    Ok((host_id, McpLog(logs)))
}

/// What the `claude-mcp` agents' MCP servers answered, per session.
pub struct McpLog(PathBuf);

impl McpLog {
    /// What the MCP server `tether` answered the agent of session `id` (panics with the
    /// server's stderr when the agent recorded nothing).
    pub fn recorded(&self, id: &str) -> Value {
        let path = self.0.join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            let stderr = std::fs::read_to_string(self.0.join(format!("{id}.tether.stderr")));
            panic!("{}: {e}; the server said: {stderr:?}", path.display())
        });
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["servers"]["tether"].clone()
    }
}

/// What the fake agent wrote in session `id` on `home`.
pub fn agent_transcript(home: &HostHome, id: &str) -> Vec<u8> {
    std::fs::read(home.path().join("agent-logs").join(format!("{id}.out"))).unwrap_or_default()
}
