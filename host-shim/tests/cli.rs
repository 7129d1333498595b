//! The built `tether` binary, run as a user would, with its config and state in a temporary
//! folder, against a small in-process stand-in for the edge's REST API (the routes the CLI
//! calls, with the documented shapes). Pairing and the tunnel against the real Worker are in
//! tests/e2e/hosts.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_tether");
const GOOD_KEY: &str = "tk_good_member_key";
const CODE: &str = "K7QP-M2XW";
const POLL_TOKEN: &str = "pt_secret_poll_token";

/// A temporary home for one test: config, state and XDG folders inside it.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn paths(&self) -> tether::paths::Paths {
        tether::paths::Paths::new(self.config_dir(), self.state_dir())
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(EXE);
        c.args(args)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("XDG_STATE_HOME", self.dir.path().join("xdg-state"))
            .env("TETHER_CONFIG_DIR", self.config_dir())
            .env("TETHER_STATE_DIR", self.state_dir())
            .env_remove("TETHER_URL")
            .env_remove("TETHER_KEY")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        c
    }
    async fn run(&self, args: &[&str]) -> Output {
        let out = tokio::time::timeout(Duration::from_secs(60), self.cmd(args).output())
            .await
            .expect("tether did not finish within 60 s")
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "tether {args:?} panicked: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

// ---- a stand-in for the edge ----

#[derive(Default)]
struct Seen {
    pairing_body: Option<Value>,
    polls: u32,
    poll_auth: Vec<String>,
    approved: Vec<String>,
    revoked: Vec<String>,
}

struct Edge {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

/// Serves one request per connection. `clock_offset` shifts the `Date` header.
async fn edge(clock_offset: i64) -> Edge {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = shared.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut lines = head.lines();
                let mut request = lines.next().unwrap_or("").split(' ');
                let method = request.next().unwrap_or("").to_owned();
                let path = request.next().unwrap_or("").to_owned();
                let mut auth = String::new();
                let mut length = 0usize;
                for l in lines {
                    let (k, v) = l.split_once(':').unwrap_or((l, ""));
                    match k.to_ascii_lowercase().as_str() {
                        "authorization" => auth = v.trim().to_owned(),
                        "content-length" => length = v.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                let (status, reply) = route(&method, &path, &auth, &body, &seen);
                let date = shifted_now(clock_offset);
                let text = reply.map(|v| v.to_string()).unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nDate: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len(),
                    httpdate::fmt_http_date(date)
                );
                let _ = stream.get_mut().write_all(response.as_bytes()).await;
            });
        }
    });
    Edge { url, seen }
}

/// Now, shifted by `secs` (either way).
fn shifted_now(secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::now() + d
    } else {
        SystemTime::now() - d
    }
}

fn host() -> Value {
    json!({
        "id": "hst_1", "org_id": "org_1", "name": "build-box", "os": "linux", "arch": "x86_64",
        "public_key": "xyz", "agents": [{"name": "claude", "version": "1.0.33"}],
        "created_by": "mem_1", "created_at": "2026-01-01T00:00:00Z", "revoked_at": null,
        "online": false, "reason": "never connected", "last_seen_at": null, "queued_commands": 2
    })
}

fn error(code: &str, message: &str) -> Option<Value> {
    Some(json!({"error": {"code": code, "message": message}}))
}

fn route(
    method: &str,
    path: &str,
    auth: &str,
    body: &[u8],
    seen: &Mutex<Seen>,
) -> (u16, Option<Value>) {
    let member = auth == format!("Bearer {GOOD_KEY}");
    let mut seen = seen.lock().unwrap();
    match (method, path) {
        ("GET", "/health") => (200, Some(json!({"status": "ok"}))),
        ("GET", "/v1/me") if member => (
            200,
            Some(json!({
                "user_id": "usr_1", "member_id": "mem_1", "role": "owner",
                "org": {"id": "org_1", "name": "Acme", "task_prefix": "ACM",
                        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"},
                "auth": "api_key", "key_id": "key_1"
            })),
        ),
        ("POST", "/v1/pairing") => {
            seen.pairing_body = serde_json::from_slice(body).ok();
            let expires = chrono::DateTime::from_timestamp(
                i64::try_from(
                    (SystemTime::now() + Duration::from_secs(600))
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs(),
                )
                .unwrap(),
                0,
            )
            .unwrap()
            .to_rfc3339();
            (
                201,
                Some(json!({"code": CODE, "expires_at": expires, "poll_token": POLL_TOKEN})),
            )
        }
        ("GET", p) if p == format!("/v1/pairing/{CODE}") => {
            seen.polls += 1;
            seen.poll_auth.push(auth.to_owned());
            if auth != format!("Bearer {POLL_TOKEN}") {
                return (401, error("unauthorized", "bad poll token"));
            }
            if seen.approved.is_empty() {
                // Approve on the member's behalf after the first poll.
                seen.approved.push(CODE.to_owned());
                (200, Some(json!({"status": "pending"})))
            } else {
                (
                    200,
                    Some(json!({"status": "approved", "host_id": "hst_1", "org_id": "org_1"})),
                )
            }
        }
        ("GET", p) if p.starts_with("/v1/pairing/") => {
            (404, error("not_found", "no such pairing code"))
        }
        ("POST", p) if member && p == format!("/v1/pairing/{CODE}/approve") => (201, Some(host())),
        ("POST", p) if member && p.starts_with("/v1/pairing/") && p.ends_with("/approve") => {
            (404, error("not_found", "no such pairing code"))
        }
        // A plain array of hosts, each with its live status flattened in, as the API answers.
        ("GET", "/v1/hosts") if member => (200, Some(json!([host()]))),
        ("DELETE", p) if member && p.starts_with("/v1/hosts/") => {
            seen.revoked
                .push(p.trim_start_matches("/v1/hosts/").to_owned());
            (204, None)
        }
        _ if !member => (401, error("unauthorized", "unknown API key")),
        _ => (404, error("not_found", "no such route")),
    }
}

/// A port nothing listens on.
async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

// ---- the tests ----

#[tokio::test]
async fn every_command_has_help() {
    let home = Home::new();
    let commands: &[&[&str]] = &[
        &[],
        &["login"],
        &["logout"],
        &["pair"],
        &["up"],
        &["service"],
        &["service", "install"],
        &["service", "uninstall"],
        &["status"],
        &["doctor"],
        &["hosts"],
        &["hosts", "list"],
        &["hosts", "approve"],
        &["hosts", "revoke"],
        &["ping"],
        &["projects"],
        &["projects", "link"],
        &["projects", "unlink"],
        &["projects", "list"],
        &["tasks"],
        &["tasks", "list"],
        &["attach"],
        &["worktrees"],
        &["worktrees", "list"],
        &["worktrees", "remove"],
        &["worktrees", "prune"],
        &["worktrees", "import"],
        &["policy"],
        &["policy", "add"],
        &["policy", "list"],
        &["policy", "remove"],
        &["policy", "test"],
        &["hook"],
        &["mcp"],
        &["hooks"],
        &["hooks", "install"],
        &["hooks", "uninstall"],
        &["hooks", "status"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = home.run(&args).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("Usage: tether"), "{args:?}: {text}");
    }
    let login = stdout(&home.run(&["login", "--help"]).await);
    assert!(
        login.contains("TETHER_KEY") && login.contains("--server"),
        "{login}"
    );
    // Nothing was written by asking for help.
    assert!(!home.config_dir().exists() && !home.state_dir().exists());
}

#[tokio::test]
async fn doctor_reports_git_and_the_server() {
    let home = Home::new();
    // No server configured: git is checked, nothing required fails.
    let out = home.run(&["doctor"]).await;
    let text = stdout(&out);
    let git = text.lines().find(|l| l.starts_with("git ")).unwrap();
    assert!(git.contains(" ok "), "{text}");
    assert!(git.chars().any(|c| c.is_ascii_digit()), "no version: {git}");
    for agent in [
        "claude",
        "codex",
        "gemini",
        "opencode",
        "cursor-agent",
        "amp",
        "copilot",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(agent)),
            "{agent}: {text}"
        );
    }
    assert!(out.status.success(), "{text}{}", stderr(&out));

    // A live server: reachable, clock in step.
    let e = edge(0).await;
    let out = home.run(&["doctor", "--server", &e.url]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let server = text.lines().find(|l| l.starts_with("server ")).unwrap();
    assert!(server.contains(" ok ") && server.contains(" ms"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("clock ") && l.contains(" ok ")),
        "{text}"
    );

    // A server whose clock is two minutes ahead: a warning, not a failure.
    let skewed = edge(120).await;
    let out = home.run(&["doctor", "--server", &skewed.url]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let clock = text.lines().find(|l| l.starts_with("clock ")).unwrap();
    assert!(
        clock.contains("warn") && clock.contains("behind"),
        "{clock}"
    );

    // An unreachable server is a required failure.
    let out = home.run(&["doctor", "--server", &dead_url().await]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("server ") && l.contains("FAIL")),
        "{text}"
    );
}

#[tokio::test]
async fn login_against_a_dead_server_fails_cleanly() {
    let home = Home::new();
    let out = home
        .run(&[
            "login",
            "--server",
            &dead_url().await,
            "--key",
            "tk_anything",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("no answer from the server"), "{err}");
    assert!(!home.config_dir().join("config.toml").exists());

    let out = home
        .run(&["login", "--server", "not-a-url", "--key", "tk_x"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid server URL"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn login_status_logout() {
    let home = Home::new();
    let e = edge(0).await;
    let config = home.config_dir().join("config.toml");

    let out = home
        .run(&["login", "--server", &e.url, "--key", "tk_wrong"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused this key"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("unknown API key"), "{}", stderr(&out));
    assert!(!config.exists());

    let out = home
        .run(&["login", "--server", "http://x", "--key", "not-a-key"])
        .await;
    assert!(stderr(&out).contains("not an API key"), "{}", stderr(&out));

    // The key from TETHER_KEY, the server with a trailing slash.
    let mut cmd = home.cmd(&["login", "--server", &format!("{}/", e.url)]);
    cmd.env("TETHER_KEY", GOOD_KEY);
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("owner of Acme"), "{}", stdout(&out));
    assert!(!stdout(&out).contains(GOOD_KEY), "the key was printed");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(GOOD_KEY) && text.contains(&format!("\"{}\"", e.url)),
        "{text}"
    );
    #[cfg(unix)]
    assert_eq!(mode(&config), 0o600);

    // The key from a pipe.
    let mut cmd = home.cmd(&["login", "--server", &e.url]);
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{GOOD_KEY}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let out = home.run(&["status"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("tk_good…") && !text.contains(GOOD_KEY),
        "{text}"
    );
    assert!(text.contains("paired    no"), "{text}");

    let out = home.run(&["logout"]).await;
    assert!(out.status.success());
    assert!(!std::fs::read_to_string(&config).unwrap().contains(GOOD_KEY));
    assert!(stdout(&home.run(&["status"]).await).contains("not logged in"));
    assert!(stdout(&home.run(&["logout"]).await).contains("Not logged in"));
}

#[tokio::test]
async fn pair_then_status_then_up() {
    let home = Home::new();
    let e = edge(0).await;
    let out = home
        .run(&["pair", "--server", &e.url, "--name", "build-box"])
        .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains(&format!("Pairing code:  {CODE}")), "{text}");
    assert!(
        text.contains(&format!("tether hosts approve {CODE}")),
        "{text}"
    );
    assert!(
        text.contains("Paired: this machine is host hst_1 in org org_1"),
        "{text}"
    );
    {
        let seen = e.seen.lock().unwrap();
        let body = seen.pairing_body.clone().unwrap();
        assert_eq!(body["name"], "build-box");
        assert_eq!(body["os"], std::env::consts::OS);
        assert_eq!(body["arch"], std::env::consts::ARCH);
        assert!(body["agents"].is_array());
        assert_eq!(body["public_key"].as_str().unwrap().len(), 43);
        assert!(seen.polls >= 2);
        assert!(
            seen.poll_auth
                .iter()
                .all(|a| a == &format!("Bearer {POLL_TOKEN}"))
        );
    }

    // The identity on disk is the one that was sent, and private.
    let id = tether::identity::Identity::load(&home.paths().key_file()).unwrap();
    assert_eq!(
        Some(id.public_key_base64url().as_str()),
        e.seen.lock().unwrap().pairing_body.as_ref().unwrap()["public_key"].as_str()
    );
    #[cfg(unix)]
    assert_eq!(mode(&home.paths().key_file()), 0o600);

    let text = stdout(&home.run(&["status"]).await);
    assert!(text.contains("paired    yes"), "{text}");
    assert!(text.contains("hst_1 (org org_1)"), "{text}");
    assert!(text.contains(&id.fingerprint()), "{text}");
    assert!(text.contains("not running"), "{text}");

    // Pairing twice needs --force.
    let out = home.run(&["pair", "--server", &e.url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already paired"), "{}", stderr(&out));

    // The daemon starts, holds the state folder, and stops cleanly on SIGTERM.
    let mut up = home.cmd(&["up"]);
    let mut child = up
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("tether daemon started") {
                return l;
            }
        }
        panic!("the daemon exited before starting");
    })
    .await
    .unwrap();
    assert!(started.contains("hst_1"), "{started}");

    let text = stdout(&home.run(&["status"]).await);
    assert!(text.contains("daemon    running"), "{text}");
    let second = home.run(&["up"]).await;
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        rest.push_str(&l);
        rest.push('\n');
    }
    assert!(
        rest.contains("SIGTERM") && rest.contains("stopped"),
        "{rest}"
    );
}

#[tokio::test]
async fn up_without_pairing_asks_for_it() {
    let home = Home::new();
    let out = home.run(&["up"]).await;
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("tether pair"), "{}", stderr(&out));
}

#[cfg(unix)]
#[tokio::test]
async fn up_refuses_a_key_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let paths = home.paths();
    tether::identity::Identity::generate()
        .unwrap()
        .save(&paths.key_file())
        .unwrap();
    let state = tether::state::State::open(&paths.state_db()).await.unwrap();
    state
        .save_pairing(&tether::state::Pairing {
            host_id: "hst_9".into(),
            org_id: "org_9".into(),
            server: "http://127.0.0.1:9".into(),
        })
        .await
        .unwrap();
    drop(state);
    std::fs::set_permissions(paths.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = home.run(&["up"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    let out = home.run(&["doctor"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("identity") && l.contains("FAIL")),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn hosts_commands() {
    let home = Home::new();
    let e = edge(0).await;
    let out = home.run(&["hosts", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not logged in"), "{}", stderr(&out));

    let out = home
        .run(&["login", "--server", &e.url, "--key", GOOD_KEY])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = home.run(&["hosts", "list"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("hst_1") && text.contains("build-box") && text.contains("linux/x86_64"),
        "{text}"
    );
    assert!(
        text.contains("offline (never connected), 2 queued"),
        "{text}"
    );
    let out = home.run(&["hosts", "list", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!([host()]));

    let out = home.run(&["hosts", "approve", CODE]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("Approved {CODE}: host hst_1 (build-box)")),
        "{}",
        stdout(&out)
    );

    // The API's error message, said plainly.
    let out = home.run(&["hosts", "approve", "NOPE-NOPE"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no such pairing code (not_found, HTTP 404)"),
        "{err}"
    );

    let out = home.run(&["hosts", "revoke", "hst_1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(e.seen.lock().unwrap().revoked, vec!["hst_1".to_owned()]);

    // A refused key says how to fix it; the stored key never goes to another server.
    let out = home.run(&["hosts", "list", "--key", "tk_revoked"]).await;
    assert!(stderr(&out).contains("tether login"), "{}", stderr(&out));
    let out = home
        .run(&["hosts", "list", "--server", "http://127.0.0.1:9"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the stored key is for"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn service_install_and_uninstall() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let home = Home::new();
    let out = home.run(&["service", "install"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = home
        .dir
        .path()
        .join("xdg-config/systemd/user/tether.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains(&format!("ExecStart={EXE} up\n")), "{text}");
    assert!(text.contains("Restart=on-failure"), "{text}");
    assert!(
        text.contains(&format!("TETHER_STATE_DIR={}", home.state_dir().display())),
        "{text}"
    );
    assert!(stdout(&out).contains("systemctl --user enable --now tether.service"));

    let out = home.run(&["service", "uninstall"]).await;
    assert!(out.status.success());
    assert!(!unit.exists());
    let out = home.run(&["service", "uninstall"]).await;
    assert!(stdout(&out).contains("No tether.service installed"));
}

/// `tether mcp` as an agent runs it, over real pipes, with no daemon on the machine: it speaks
/// MCP, lists the session tools and answers every call with an error saying why.
#[tokio::test]
async fn mcp_without_a_daemon_lists_the_session_tools_and_says_why_calls_fail() {
    let home = Home::new();
    let mut no_session = home.cmd(&["mcp"]);
    let out = no_session
        .env_remove("TETHER_SESSION_ID")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("TETHER_SESSION_ID"),
        "{}",
        stderr(&out)
    );

    let mut cmd = home.cmd(&["mcp"]);
    let mut child = cmd
        .env("TETHER_SESSION_ID", "ses_1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let messages = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "session_report_progress", "arguments": {"message": "hi"}}}),
    ];
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut answers = Vec::new();
    for m in messages {
        stdin.write_all(format!("{m}\n").as_bytes()).await.unwrap();
        if m.get("id").is_some() {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("an answer within 30 s")
                .unwrap()
                .expect("an answer");
            answers.push(serde_json::from_str::<Value>(&line).unwrap());
        }
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("tether mcp ends when its stdin closes")
        .unwrap();
    assert!(status.success(), "{status}");

    assert_eq!(answers[0]["result"]["serverInfo"]["name"], "tether-local");
    let names: Vec<&str> = answers[1]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["session_report_progress", "session_update_task"]);
    let result = &answers[2]["result"];
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("the daemon is not running"),
        "{result}"
    );
}

#[tokio::test]
async fn tasks_list_reads_the_mirror_offline_and_says_how_current_it_is() {
    use tether::mirror::protocol::Message;
    use tether::mirror::store::Batch;
    let home = Home::new();
    // No state at all: nothing to read, and nothing is created.
    let out = home.run(&["tasks", "list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "mirror not synced yet: start the daemon (tether up)"
    );
    assert!(!home.state_dir().exists());

    // A mirror as a daemon left it (no daemon runs now, no server exists).
    let mirror = tether::mirror::Mirror::open(&home.paths().state_db())
        .await
        .unwrap();
    let load = |table: &str, schema: &str, rows: Vec<Value>| {
        let mut messages: Vec<Message> = rows
            .into_iter()
            .map(|r| Message::Insert {
                key: r["id"].as_str().unwrap().to_owned(),
                value: r.as_object().unwrap().clone(),
            })
            .collect();
        messages.push(Message::UpToDate);
        let batch = Batch {
            handle: "h".into(),
            offset: "3_0".into(),
            cursor: None,
            schema: Some(schema.into()),
            messages,
        };
        (table.to_owned(), batch)
    };
    for (table, batch) in [
        load(
            "task_statuses",
            r#"{"position":{"type":"int4"}}"#,
            vec![
                json!({"id":"sts_1","name":"Todo","category":"unstarted","position":"0"}),
                json!({"id":"sts_2","name":"In Progress","category":"started","position":"1"}),
            ],
        ),
        load(
            "projects",
            "{}",
            vec![json!({"id":"prj_1","name":"App","default_branch":"main"})],
        ),
        load(
            "tasks",
            r#"{"number":{"type":"int4"},"labels":{"type":"jsonb"}}"#,
            vec![
                json!({"id":"tsk_1","number":"1","slug":"CLI-1","title":"Write the docs","priority":"low",
                       "status_id":"sts_1","project_id":"prj_1","assignee_id":null,"labels":"[]"}),
                json!({"id":"tsk_2","number":"2","slug":"CLI-2","title":"Fix the build","priority":"urgent",
                       "status_id":"sts_2","project_id":null,"assignee_id":"mem_1","labels":"[\"ci\"]"}),
            ],
        ),
    ] {
        mirror.apply(&table, &batch).await.unwrap();
    }
    drop(mirror);

    let out = home.run(&["tasks", "list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    // Synced moments ago, but no daemon keeps it live.
    assert!(
        lines[0].starts_with("mirror last synced ") && lines[0].ends_with("(daemon not syncing)"),
        "{text}"
    );
    assert!(lines[1].starts_with("SLUG"), "{text}");
    assert!(
        lines[2].starts_with("CLI-2")
            && lines[2].contains("In Progress")
            && lines[2].contains("urgent"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("CLI-1") && lines[3].ends_with("Write the docs"),
        "{text}"
    );

    let out = home
        .run(&["tasks", "list", "--json", "--status", "todo"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["tasks"][0]["slug"], "CLI-1");
    assert_eq!(v["tasks"][0]["number"], 1);
    assert_eq!(v["tasks"][0]["status"]["name"], "Todo");
    assert_eq!(v["mirror"]["live"], false);
    assert!(
        v["mirror"]["synced_at"].is_string() && v["mirror"]["age_secs"].is_u64(),
        "{v}"
    );

    for (args, want) in [
        (&["--project", "app"][..], vec!["CLI-1"]),
        (&["--assignee", "none"][..], vec!["CLI-1"]),
        (&["--assignee", "mem_1"][..], vec!["CLI-2"]),
        (&["--limit", "1"][..], vec!["CLI-2"]),
    ] {
        let mut a = vec!["tasks", "list", "--json"];
        a.extend_from_slice(args);
        let out = home.run(&a).await;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let slugs: Vec<&str> = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["slug"].as_str().unwrap())
            .collect();
        assert_eq!(slugs, want, "{args:?}");
    }
    let out = home.run(&["tasks", "list", "--status", "Doing"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Todo, In Progress"),
        "{}",
        stderr(&out)
    );
}
