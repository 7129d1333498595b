//! The daemon's control socket (`<state dir>/control.sock`, a Unix socket only its owner can
//! open): how `tether hook` asks the daemon's policies about an agent's event, how
//! `tether policy add|remove` make it reload them, and how an agent's `tether mcp` reaches the
//! edge's tools through the daemon ([`crate::mcp`]).
//!
//! One request per connection: the client writes a JSON [`Request`] and closes its writing
//! half; the daemon answers one JSON document and closes. The agent's environment is frozen
//! when it starts, so the socket is found by a fixed name in the state folder (the daemon puts
//! `TETHER_STATE_DIR` in every agent's environment), never by anything that changes when the
//! daemon restarts.

use crate::guardrails::Guardrails;
use crate::hooks::Agent;
use crate::hooks::protocol::{self, Answer, Payload};
use crate::mcp::McpAnswer;
use crate::mcp::relay::Relay;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// The most bytes of a request: the largest hook input plus room for the envelope.
pub const MAX_REQUEST: usize = protocol::MAX_INPUT + 64 * 1024;
/// How long the daemon waits for a client to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once; the rest wait their turn. Below the policy host's pool of
/// instances, so a burst of hooks queues instead of failing.
const CONCURRENT: usize = 16;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Judge an agent's hook event; the answer is an [`Answer`].
    Hook {
        agent: String,
        /// The Tether session the agent runs in (its `TETHER_SESSION_ID`).
        session: String,
        /// The hook's stdin, as the agent wrote it.
        input: String,
    },
    /// Reload the policies; the answer is a [`Reloaded`].
    Reload,
    /// An MCP request of the agent of session `session` (its `tether mcp`); the answer is an
    /// [`McpAnswer`]. Refused unless the daemon runs that session.
    Mcp {
        session: String,
        /// `tools/list` or `tools/call`.
        method: String,
        /// The request's `params` (`null` when it had none).
        #[serde(default)]
        params: serde_json::Value,
    },
}

/// The answer to [`Request::Reload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The policies in force, in order (empty on error).
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the daemon knows about the agents it runs.
pub trait SessionGate: Send + Sync {
    /// Whether `id` is a session this daemon runs now (hooks of anything else are let be, MCP
    /// requests for anything else refused).
    fn is_live(&self, id: &str) -> bool;
    /// Whether `prompt` is the dispatched prompt of session `id` that the policies already
    /// judged before the agent started (the agent's own hook then reports it again); true
    /// once.
    fn already_judged(&self, id: &str, prompt: &str) -> bool;
    /// For a chat session this daemon runs: asks the org's members about what a policy
    /// answered "ask" to, and resolves to their answer (or the timeout's default). None for
    /// any other session: its agent asks its own user, at the terminal.
    fn ask_member(&self, _id: &str, _ask: Ask) -> Option<AskFuture> {
        None
    }
}

/// An approval's answer, as the hook needs it.
pub type AskFuture = std::pin::Pin<Box<dyn Future<Output = Verdict> + Send>>;
pub use crate::sessions::chat::{Ask, Verdict};

/// While an answer takes long (a member's approval), the daemon writes a space this often:
/// the client's read timeout applies between bytes, and JSON ignores leading whitespace.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Serves the socket until the task is dropped.
#[cfg(unix)]
pub async fn serve(
    listener: tokio::net::UnixListener,
    guardrails: Arc<Guardrails>,
    sessions: Arc<dyn SessionGate>,
    mcp: Arc<Relay>,
) {
    let turns = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "the control socket failed to accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (guardrails, sessions, mcp, turns) = (
            guardrails.clone(),
            sessions.clone(),
            mcp.clone(),
            turns.clone(),
        );
        tokio::spawn(async move {
            let Ok(turn) = turns.acquire_owned().await else {
                return;
            };
            if let Err(e) = handle(stream, &guardrails, sessions.as_ref(), &mcp, turn).await {
                debug!(error = %e, "a control connection failed");
            }
        });
    }
}

/// Binds the socket at `path`, replacing a stale one (the caller holds the state folder's
/// lock, so no other daemon owns it), readable and writable by the owner only.
#[cfg(unix)]
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(unix)]
async fn handle(
    mut stream: tokio::net::UnixStream,
    guardrails: &Guardrails,
    sessions: &dyn SessionGate,
    mcp: &Relay,
    turn: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut limited = (&mut stream).take(MAX_REQUEST as u64 + 1);
    tokio::time::timeout(READ_TIMEOUT, limited.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let work = answer(&buf, guardrails, sessions, mcp, turn);
    tokio::pin!(work);
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let answer = loop {
        tokio::select! {
            a = &mut work => break a,
            _ = keepalive.tick() => stream.write_all(b" ").await?,
        }
    };
    stream.write_all(&answer.unwrap_or_default()).await?;
    stream.shutdown().await
}

/// The answer to one request, serialised.
#[cfg(unix)]
async fn answer(
    buf: &[u8],
    guardrails: &Guardrails,
    sessions: &dyn SessionGate,
    mcp: &Relay,
    turn: tokio::sync::OwnedSemaphorePermit,
) -> serde_json::Result<Vec<u8>> {
    if buf.len() > MAX_REQUEST {
        serde_json::to_vec(&refused("the request is too large"))
    } else {
        match serde_json::from_slice::<Request>(buf) {
            Ok(Request::Hook {
                agent,
                session,
                input,
            }) => serde_json::to_vec(
                &hook(guardrails, sessions, &agent, &session, &input, turn).await,
            ),
            Ok(Request::Reload) => serde_json::to_vec(&match guardrails.reload().await {
                Ok(policies) => Reloaded {
                    policies,
                    error: None,
                },
                Err(e) => Reloaded {
                    policies: Vec::new(),
                    error: Some(e.to_string()),
                },
            }),
            Ok(Request::Mcp {
                session,
                method,
                params,
            }) => serde_json::to_vec(&if sessions.is_live(&session) {
                mcp.answer(&session, &method, params).await
            } else {
                McpAnswer::Error(rmcp::model::ErrorData::invalid_request(
                    format!(
                        "session {session:?} is not running on this machine: Tether's tools \
                         answer only the agents of the sessions its daemon runs"
                    ),
                    None,
                ))
            }),
            Err(e) => serde_json::to_vec(&refused(&format!("not a request: {e}"))),
        }
    }
}

/// An answer that reports a problem without blocking the agent (any exit code but 2).
fn refused(why: &str) -> Answer {
    Answer {
        exit_code: 1,
        stdout: String::new(),
        stderr: format!("tether hook: {why}\n"),
    }
}

/// The agent's answer to one hook event. In a chat session, what a policy answers "ask" to
/// waits for a member's answer (`turn`, the caller's place in the socket's queue, is given up
/// meanwhile, so waiting approvals never hold up other hooks).
pub async fn hook(
    guardrails: &Guardrails,
    sessions: &dyn SessionGate,
    agent: &str,
    session: &str,
    input: &str,
    turn: tokio::sync::OwnedSemaphorePermit,
) -> Answer {
    let Some(agent) = Agent::parse(agent) else {
        return refused(&format!("unknown agent {agent:?}"));
    };
    let event = match protocol::parse(agent, input.as_bytes()) {
        Ok(Some(event)) => event,
        Ok(None) => return Answer::default(),
        Err(e) => return refused(&e.to_string()),
    };
    if !sessions.is_live(session) {
        return Answer::default();
    }
    if let Payload::Prompt(p) = &event.payload
        && sessions.already_judged(session, p)
    {
        return Answer::default();
    }
    let combined = guardrails.judge(session, event.clone()).await;
    if let protocol::Verdict::Ask(reason) = &combined.verdict {
        let (tool, input) = match &event.payload {
            Payload::ToolCall {
                tool_name,
                tool_input,
            } => (tool_name.clone(), tool_input.clone()),
            Payload::Prompt(p) => ("prompt".to_owned(), serde_json::json!({ "prompt": p })),
            _ => {
                return protocol::answer(&event, &combined.verdict, combined.context.as_deref());
            }
        };
        let ask = Ask {
            tool,
            input,
            // The approval shows against the call the hook is about.
            tool_use_id: event.tool_use_id.clone(),
            source: tether_durable::chat::ApprovalSource::Guardrail,
            reason: Some(reason.clone()),
        };
        if let Some(waiting) = sessions.ask_member(session, ask) {
            drop(turn);
            let verdict = waiting.await;
            return match verdict.decision {
                tether_durable::chat::Decision::Allow => protocol::approved(
                    &event,
                    "allowed by a member of the org",
                    combined.context.as_deref(),
                ),
                tether_durable::chat::Decision::Deny => protocol::answer(
                    &event,
                    &protocol::Verdict::Deny(verdict.denial()),
                    combined.context.as_deref(),
                ),
            };
        }
    }
    protocol::answer(&event, &combined.verdict, combined.context.as_deref())
}

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens: the daemon is not running (or runs without the socket).
    #[error("the daemon is not running")]
    NotRunning(std::io::Error),
    #[error("the daemon did not answer: {0}")]
    Io(std::io::Error),
    #[error("the daemon's answer is not understood: {0}")]
    Answer(serde_json::Error),
}

/// Sends `request` to the daemon at `socket` and reads its answer, blocking, within `timeout`.
#[cfg(unix)]
pub fn call<T: serde::de::DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, ClientError> {
    use std::os::unix::net::UnixStream;
    let mut stream = UnixStream::connect(socket).map_err(ClientError::NotRunning)?;
    let io = ClientError::Io;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let body = serde_json::to_vec(request).map_err(ClientError::Answer)?;
    stream.write_all(&body).map_err(io)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_REQUEST as u64)
        .read_to_end(&mut answer)
        .map_err(io)?;
    serde_json::from_slice(&answer).map_err(ClientError::Answer)
}

/// Without Unix sockets there is no daemon to ask: hooks answer by the failure mode.
#[cfg(not(unix))]
pub fn call<T: serde::de::DeserializeOwned>(
    _socket: &Path,
    _request: &Request,
    _timeout: Duration,
) -> Result<T, ClientError> {
    Err(ClientError::NotRunning(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no control socket on this platform",
    )))
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use super::*;
    use crate::paths::Paths;
    use crate::policy::Limits;
    use crate::state::State;
    use serde_json::json;

    /// Session `ses_live` runs; its dispatched prompt "judged" was judged already.
    pub(crate) struct Gate(pub(crate) std::sync::Mutex<bool>);

    impl SessionGate for Gate {
        fn is_live(&self, id: &str) -> bool {
            id == "ses_live"
        }
        fn already_judged(&self, id: &str, prompt: &str) -> bool {
            let mut first = self.0.lock().unwrap();
            let judged = id == "ses_live" && prompt == "judged" && *first;
            *first &= !judged;
            judged
        }
    }

    /// A relay whose edge is not there (nothing listens on the discard port).
    pub(crate) fn offline_relay() -> Arc<Relay> {
        let http = reqwest::Client::new();
        let identity = crate::identity::Identity::generate().unwrap();
        let auth =
            crate::host_auth::HostAuth::new("http://127.0.0.1:9", "hst_1", identity, http.clone());
        Arc::new(Relay::new(Arc::new(auth), http))
    }

    #[test]
    fn mcp_requests_and_answers_keep_their_shape() {
        let request = Request::Mcp {
            session: "ses_1".into(),
            method: "tools/call".into(),
            params: json!({"name": "tasks_list", "arguments": {}}),
        };
        let wire = serde_json::to_value(&request).unwrap();
        assert_eq!(
            wire,
            json!({"op": "mcp", "session": "ses_1", "method": "tools/call",
                   "params": {"name": "tasks_list", "arguments": {}}})
        );
        assert_eq!(serde_json::from_value::<Request>(wire).unwrap(), request);
        // A request without params (tools/list) has null ones.
        let list: Request =
            serde_json::from_value(json!({"op": "mcp", "session": "s", "method": "tools/list"}))
                .unwrap();
        assert!(matches!(
            list,
            Request::Mcp {
                params: serde_json::Value::Null,
                ..
            }
        ));

        let answers = [
            (
                McpAnswer::Result(json!({"tools": []})),
                json!({"result": {"tools": []}}),
            ),
            (
                McpAnswer::Error(rmcp::model::ErrorData::invalid_params("no tool x", None)),
                json!({"error": {"code": -32602, "message": "no tool x"}}),
            ),
        ];
        for (answer, wire) in answers {
            assert_eq!(serde_json::to_value(&answer).unwrap(), wire);
            assert_eq!(serde_json::from_value::<McpAnswer>(wire).unwrap(), answer);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mcp_requests_are_relayed_for_live_sessions_only() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("config"), dir.path().join("state"));
        let state = Arc::new(State::open_in_memory().await.unwrap());
        let guardrails = Arc::new(
            Guardrails::load(paths.clone(), state, Limits::default())
                .await
                .unwrap(),
        );
        crate::paths::ensure_private_dir(&paths.state_dir).unwrap();
        let socket = paths.control_socket();
        let server = tokio::spawn(serve(
            bind(&socket).unwrap(),
            guardrails,
            Arc::new(Gate(std::sync::Mutex::new(true))),
            offline_relay(),
        ));
        let ask = |session: &str, method: &str, params: serde_json::Value| {
            let socket = socket.clone();
            let request = Request::Mcp {
                session: session.into(),
                method: method.into(),
                params,
            };
            tokio::task::spawn_blocking(move || {
                call::<McpAnswer>(&socket, &request, Duration::from_secs(30)).unwrap()
            })
        };
        let refused = ask("ses_other", "tools/list", json!(null)).await.unwrap();
        let McpAnswer::Error(e) = refused else {
            panic!("{refused:?}");
        };
        assert!(e.message.contains("not running on this machine"), "{e:?}");

        // A live session: the edge is away, so the session tools alone are listed.
        let McpAnswer::Result(list) = ask("ses_live", "tools/list", json!(null)).await.unwrap()
        else {
            panic!("no list");
        };
        let names: Vec<&str> = list["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["session_report_progress", "session_update_task"]);
        let McpAnswer::Result(call) = ask(
            "ses_live",
            "tools/call",
            json!({"name": "session_report_progress", "arguments": {"message": "hi"}}),
        )
        .await
        .unwrap() else {
            panic!("no result");
        };
        assert_eq!(call["isError"], true);
        assert!(
            call["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("edge_unreachable"),
            "{call}"
        );
        server.abort();
    }

    fn prompt(text: &str) -> String {
        json!({"session_id": "c", "cwd": "/w", "hook_event_name": "UserPromptSubmit", "prompt": text})
            .to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hooks_are_judged_through_the_socket_for_live_sessions_only() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("config"), dir.path().join("state"));
        let policy = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../wasm-plugins/dist/secret-guard.wasm");
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::write(
            paths.config_file(),
            format!("[[policies]]\npath = {:?}\n", policy.display().to_string()),
        )
        .unwrap();
        let state = Arc::new(State::open_in_memory().await.unwrap());
        let guardrails = Arc::new(
            Guardrails::load(paths.clone(), state.clone(), Limits::default())
                .await
                .unwrap(),
        );
        crate::paths::ensure_private_dir(&paths.state_dir).unwrap();
        let socket = paths.control_socket();
        let server = tokio::spawn(serve(
            bind(&socket).unwrap(),
            guardrails,
            Arc::new(Gate(std::sync::Mutex::new(true))),
            offline_relay(),
        ));
        let ask = |session: &str, input: String| {
            let socket = socket.clone();
            let request = Request::Hook {
                agent: "claude-code".into(),
                session: session.into(),
                input,
            };
            tokio::task::spawn_blocking(move || {
                call::<Answer>(&socket, &request, Duration::from_secs(10)).unwrap()
            })
        };
        let key = "deploy with AKIAIOSFODNN7EXAMPLE";
        let denied = ask("ses_live", prompt(key)).await.unwrap();
        assert_eq!(denied.exit_code, 2, "{denied:?}");
        assert!(
            !denied.stderr.contains("AKIAIOSFODNN7EXAMPLE"),
            "{denied:?}"
        );
        // Not a session this daemon runs: let be.
        let other = ask("ses_other", prompt(key)).await.unwrap();
        assert_eq!(other, Answer::default());
        // The dispatched prompt is not judged twice; a second submission of it is.
        let first = ask("ses_live", prompt("judged")).await.unwrap();
        assert_eq!(first, Answer::default());
        let decisions = state.unreported_decisions(100).await.unwrap();
        assert_eq!(decisions.len(), 1, "only the denied prompt was judged");
        assert_eq!(
            (
                decisions[0].agent.as_str(),
                decisions[0].session_id.as_deref()
            ),
            ("claude-code", Some("ses_live"))
        );
        ask("ses_live", prompt("judged")).await.unwrap();
        assert_eq!(state.unreported_decisions(100).await.unwrap().len(), 2);
        // Garbage is answered, without blocking the agent.
        let bad = ask("ses_live", "{".into()).await.unwrap();
        assert_eq!(bad.exit_code, 1);
        let socket2 = socket.clone();
        let reloaded = tokio::task::spawn_blocking(move || {
            call::<Reloaded>(&socket2, &Request::Reload, Duration::from_secs(10)).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(reloaded.policies, ["secret-guard"]);
        server.abort();
    }
}
