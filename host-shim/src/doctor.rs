//! `tether doctor`: what this machine has and lacks, as a list of [`Check`]s.
//!
//! Tools are found by walking `PATH` ourselves and asked `<tool> --version` directly (never
//! through a shell), with a deadline, stdin closed, and the child killed if it overstays; a CLI
//! that hangs or prompts cannot hang the doctor. The same probe lists the agent CLIs that
//! pairing reports to the edge.

use crate::api::{AgentInfo, ApiClient};
use crate::identity::Identity;
use crate::paths::Paths;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The agent CLIs Tether knows how to run, by executable name.
pub const AGENT_CLIS: &[&str] = &[
    "claude",
    "codex",
    "gemini",
    "opencode",
    "cursor-agent",
    "amp",
    "copilot",
];

/// How long a `--version` may take. Node-based CLIs start slowly on a cold cache.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Server clocks further apart than this break token lifetimes and signatures.
pub const MAX_CLOCK_SKEW_SECS: f64 = 30.0;

/// How a check came out. Only [`Level::Fail`] makes `tether doctor` exit non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Nothing wrong, something worth knowing (an optional tool absent).
    Info,
    Warn,
    Fail,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "-",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub detail: String,
}

impl Check {
    fn new(name: &str, level: Level, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            level,
            detail: detail.into(),
        }
    }
}

/// Every check, in display order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether a required check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.level == Level::Fail)
    }

    /// The checks as an aligned plain-text table.
    pub fn table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .chain(["CHECK".len()])
            .max()
            .unwrap_or(5);
        let mut out = format!("{:width$}  {:6}  DETAIL\n", "CHECK", "STATUS");
        for c in &self.checks {
            out.push_str(&format!(
                "{:width$}  {:6}  {}\n",
                c.name,
                c.level.label(),
                c.detail
            ));
        }
        out
    }
}

/// What probing one executable found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    NotFound,
    Found {
        path: PathBuf,
        /// The version it reported, or why we could not get one.
        version: Result<String, String>,
    },
}

/// The first executable file called `name` in `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    crate::presets::find_program(name, std::env::var_os("PATH").as_deref())
}

/// Finds `name` on `PATH` and runs `<path> --version` with a deadline.
pub async fn probe(name: &str, timeout: Duration) -> Probe {
    let Some(path) = find_on_path(name) else {
        return Probe::NotFound;
    };
    let version = version_of(&path, timeout).await;
    Probe::Found { path, version }
}

async fn version_of(path: &Path, timeout: Duration) -> Result<String, String> {
    let child = tokio::process::Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("running --version: {e}")),
        Err(_) => {
            return Err(format!(
                "--version did not answer within {} s",
                timeout.as_secs()
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stdout.trim().is_empty() {
        stderr
    } else {
        stdout
    };
    let text = strip_ansi(&text);
    match parse_version(&text) {
        Some(v) => Ok(v),
        None if !out.status.success() => Err(format!("--version failed ({})", out.status)),
        None => first_line(&text).ok_or_else(|| "--version printed nothing".to_owned()),
    }
}

/// The version number in a `--version` output: the first word that starts with a digit and
/// has a dot (`git version 2.43.0` -> `2.43.0`, `1.0.33 (Claude Code)` -> `1.0.33`,
/// `v0.20.0` -> `0.20.0`).
pub fn parse_version(output: &str) -> Option<String> {
    output
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | ';' | '"' | '\''))
        .map(|w| w.strip_prefix(['v', 'V']).unwrap_or(w))
        .map(|w| w.trim_end_matches(['.', ':']))
        .find(|w| {
            w.starts_with(|c: char| c.is_ascii_digit())
                && w.contains('.')
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
        })
        .map(str::to_owned)
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(60).collect())
}

/// Drops ANSI escape sequences (`ESC [ ... letter`), which some CLIs print even when piped.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Probes every agent CLI at once.
pub async fn probe_agents(timeout: Duration) -> Vec<(&'static str, Probe)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, name) in AGENT_CLIS.iter().enumerate() {
        set.spawn(async move { (i, *name, probe(name, timeout).await) });
    }
    let mut found = Vec::with_capacity(AGENT_CLIS.len());
    while let Some(Ok(r)) = set.join_next().await {
        found.push(r);
    }
    found.sort_by_key(|(i, _, _)| *i);
    found.into_iter().map(|(_, n, p)| (n, p)).collect()
}

/// The agent CLIs present, with their versions (`unknown` when `--version` did not say), as
/// pairing reports them (versions cut to the API's 100 characters).
pub async fn detect_agents(timeout: Duration) -> Vec<AgentInfo> {
    probe_agents(timeout)
        .await
        .into_iter()
        .filter_map(|(name, p)| match p {
            Probe::NotFound => None,
            Probe::Found { version, .. } => Some(AgentInfo {
                name: name.to_owned(),
                version: version
                    .map(|v| v.chars().take(100).collect())
                    .unwrap_or_else(|_| "unknown".into()),
            }),
        })
        .collect()
}

/// Runs every check. `server` is the edge to test (from the login or the pairing), if any.
pub async fn run(paths: &Paths, server: Option<&str>) -> Report {
    let mut checks = Vec::new();

    // Required: worktrees need git.
    checks.push(match probe("git", VERSION_TIMEOUT).await {
        Probe::NotFound => Check::new("git", Level::Fail, "not found on PATH (worktrees need git)"),
        Probe::Found { path, version } => match version {
            Ok(v) => Check::new("git", Level::Ok, format!("{v}  {}", path.display())),
            Err(e) => Check::new("git", Level::Fail, format!("{}: {e}", path.display())),
        },
    });

    let agents = probe_agents(VERSION_TIMEOUT).await;
    let mut any_agent = false;
    for (name, p) in agents {
        checks.push(match p {
            Probe::NotFound => Check::new(name, Level::Info, "not found"),
            Probe::Found { path, version } => {
                any_agent = true;
                match version {
                    Ok(v) => Check::new(name, Level::Ok, format!("{v}  {}", path.display())),
                    Err(e) => Check::new(name, Level::Warn, format!("{}: {e}", path.display())),
                }
            }
        });
    }
    if !any_agent {
        checks.push(Check::new(
            "agents",
            Level::Warn,
            format!("none of {} found on PATH", AGENT_CLIS.join(", ")),
        ));
    }

    checks.extend(server_checks(server).await);
    checks.push(identity_check(&paths.key_file()));
    checks.push(config_check(&paths.config_file()));
    Report { checks }
}

async fn server_checks(server: Option<&str>) -> Vec<Check> {
    let Some(server) = server else {
        return vec![
            Check::new(
                "server",
                Level::Info,
                "none configured (`tether login --server URL` or `tether pair --server URL`)",
            ),
            Check::new("clock", Level::Info, "skipped (no server)"),
        ];
    };
    let health = match ApiClient::new(server, None) {
        Ok(client) => client.health().await,
        Err(e) => Err(e),
    };
    let health = match health {
        Ok(h) => h,
        Err(e) => {
            return vec![
                Check::new("server", Level::Fail, format!("{server}: {}", chain(&e))),
                Check::new("clock", Level::Info, "skipped (server unreachable)"),
            ];
        }
    };
    let reach = Check::new(
        "server",
        Level::Ok,
        format!("{server}  {} ms", health.latency.as_millis()),
    );
    let clock = match health.clock_skew_secs() {
        None => Check::new("clock", Level::Warn, "the server sent no Date header"),
        Some(skew) if skew.abs() > MAX_CLOCK_SKEW_SECS => Check::new(
            "clock",
            Level::Warn,
            format!(
                "this machine's clock is {:.0} s {} the server's (limit {MAX_CLOCK_SKEW_SECS:.0} s): \
                 tokens and signatures may be refused; enable NTP",
                skew.abs(),
                if skew > 0.0 { "behind" } else { "ahead of" }
            ),
        ),
        Some(skew) => Check::new(
            "clock",
            Level::Ok,
            format!(
                "within {:.1} s of the server's (Date has 1 s resolution)",
                skew.abs()
            ),
        ),
    };
    vec![reach, clock]
}

fn identity_check(path: &Path) -> Check {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::new(
            "identity",
            Level::Warn,
            format!(
                "no host key yet at {} (`tether pair` creates it)",
                path.display()
            ),
        ),
        Err(e) => Check::new("identity", Level::Fail, format!("{}: {e}", path.display())),
        Ok(_) => match Identity::load(path) {
            Ok(id) => Check::new(
                "identity",
                Level::Ok,
                format!(
                    "fingerprint {}  {}{}",
                    id.fingerprint(),
                    path.display(),
                    std::fs::metadata(path)
                        .ok()
                        .and_then(|m| crate::files::mode(&m))
                        .map(|m| format!(" (mode {m:04o})"))
                        .unwrap_or_default()
                ),
            ),
            Err(e) => Check::new("identity", Level::Fail, chain(&e)),
        },
    }
}

fn config_check(path: &Path) -> Check {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => {
            return Check::new(
                "config",
                Level::Info,
                format!("none at {} (not logged in)", path.display()),
            );
        }
    };
    match crate::config::Config::load(path) {
        Err(e) => Check::new("config", Level::Fail, chain(&e)),
        Ok(c) => match crate::files::mode(&meta) {
            Some(m) if c.key.is_some() && m & 0o077 != 0 => Check::new(
                "config",
                Level::Warn,
                format!(
                    "{} holds an API key and has mode {m:04o}; fix it with `chmod 600 {}`",
                    path.display(),
                    path.display()
                ),
            ),
            _ => Check::new(
                "config",
                Level::Ok,
                format!(
                    "{}{}",
                    path.display(),
                    if c.key.is_some() { " (logged in)" } else { "" }
                ),
            ),
        },
    }
}

/// An error and its sources on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parses_versions() {
        let cases = [
            ("git version 2.43.0\n", Some("2.43.0")),
            ("git version 2.39.3 (Apple Git-145)", Some("2.39.3")),
            ("1.0.33 (Claude Code)\n", Some("1.0.33")),
            ("codex-cli 0.20.0", Some("0.20.0")),
            ("0.1.18\n", Some("0.1.18")),
            ("v0.3.58", Some("0.3.58")),
            ("2025.08.09-d8191f3\n", Some("2025.08.09-d8191f3")),
            (
                "GitHub Copilot CLI 0.0.328.\nCommit: 1a2b3c",
                Some("0.0.328"),
            ),
            (
                "amp 0.0.1754000000-g1234abc",
                Some("0.0.1754000000-g1234abc"),
            ),
            ("opencode version: 0.5.1, built today", Some("0.5.1")),
            ("no numbers here", None),
            ("build 42", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_version(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn strips_ansi() {
        assert_eq!(strip_ansi("\u{1b}[1;32m1.2.3\u{1b}[0m"), "1.2.3");
        assert_eq!(
            parse_version(&strip_ansi("\u{1b}[1mv2.0.1\u{1b}[0m")).as_deref(),
            Some("2.0.1")
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn probes_a_real_tool_and_survives_a_hanging_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let good = write("good-tool", "#!/bin/sh\necho 'good-tool 1.2.3'\n");
        let slow = write("slow-tool", "#!/bin/sh\nexec sleep 30\n");
        let bad = write("bad-tool", "#!/bin/sh\necho oops >&2\nexit 3\n");
        assert_eq!(
            version_of(&good, VERSION_TIMEOUT).await.as_deref(),
            Ok("1.2.3")
        );
        let started = std::time::Instant::now();
        let err = version_of(&slow, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.contains("did not answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let err = version_of(&bad, VERSION_TIMEOUT).await.unwrap_err();
        assert!(err.contains("failed"), "{err}");
    }

    #[test]
    fn table_lines_up() {
        let r = Report {
            checks: vec![
                Check::new("git", Level::Ok, "2.43.0"),
                Check::new("cursor-agent", Level::Info, "not found"),
                Check::new("server", Level::Fail, "down"),
            ],
        };
        assert!(r.failed());
        let t = r.table();
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.find("  ").is_some()));
        assert!(t.contains("cursor-agent  -       not found"), "{t}");
        assert!(t.contains("git           ok      2.43.0"), "{t}");
    }
}
