//! `/v1/sessions`: start an agent on a host, list and read sessions, type into one, resize or
//! stop it; and the host's side: linking its checkouts to projects and reporting how its
//! sessions are doing.
//!
//! A session's record lives in the org's object; its terminal in its own stream
//! (`hosts/{host}/sessions/{id}/terminal`), or for a chat session its JSON events
//! (`.../chat`), created here so readers can wait on it before the first byte; the start and
//! stop travel as the host's persisted commands, input and resizes as tunnel requests (they
//! only make sense while the host is there). Chat sessions' follow-ups and approvals are in
//! [`super::chat`].

use super::{decode, org_answer, org_answer_as, org_call};
use crate::auth::{HostPrincipal, Principal};
use crate::backend::{Backend, HostRef, StreamStore, Tunnels};
use crate::directory::hosts;
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use serde::Deserialize;
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::org::model::{Page, Task, UpdateTask};
use tether_durable::session::{
    self, Input, NewSession, ProgressReport, ProjectLink, Resize, Session, SessionKind,
    SessionQuery, SessionStatus, SessionUpdate, Size, StartSession, Stop, TaskRef, TitleReport,
};
use tether_durable::stream::Offset;
use tether_durable::time::now_ms;
use tether_durable::validate;

/// How long an input or resize waits for the host.
const INPUT_DEADLINE_MS: u32 = 5_000;
/// A prompt template's most characters.
const TEMPLATE_MAX: usize = 10_000;
/// The template a task's prompt is rendered with, unless the request brings its own.
pub const DEFAULT_TASK_TEMPLATE: &str = "You are working on task {{slug}}: {{title}}\n\n\
Priority: {{priority}}\nStatus: {{status}}\nLabels: {{labels}}\n\n{{description}}";

/// Start a session.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The project: its id or its name.
    pub project: String,
    /// A host id, or `any` (the default): the first online host that has the project linked.
    pub host: Option<String>,
    /// The agent preset on the host: claude, codex, gemini, opencode, cursor-agent, amp,
    /// copilot, their `-yolo` variants, or a custom preset from the host's config.
    pub agent: String,
    /// `terminal` (the default: the agent in a terminal, its bytes in the stream) or `chat`
    /// (the agent in its structured mode, its events as JSON in the stream; follow-ups with
    /// `POST /v1/sessions/{id}/messages`).
    pub kind: Option<SessionKind>,
    /// What to ask the agent (at most 100 000 characters). With `task`, added after the task.
    pub prompt: Option<String>,
    /// A task (id or slug such as `TET-12`) whose title, slug, priority, status, labels and
    /// description make the prompt, through `prompt_template`.
    pub task: Option<String>,
    /// Placeholders: {{title}} {{slug}} {{priority}} {{status}} {{labels}} {{description}}.
    pub prompt_template: Option<String>,
    /// The worktree's branch. Default: `tether/<task slug>-<title>` or from the prompt.
    pub branch: Option<String>,
    /// The branch the worktree starts from. Default: the checkout's current branch.
    pub base_branch: Option<String>,
    /// Terminal size, 1 to 1000 each; default 120 x 40.
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    /// How long to wait for an offline host before failing the session (default 600 s).
    pub start_timeout_secs: Option<u32>,
}

/// Keystrokes: `data` (text) or `data_base64` (any bytes), at most 64 KiB.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputRequest {
    pub data: Option<String>,
    pub data_base64: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// Recorded as the reason (default "stopped by <member>").
    pub reason: Option<String>,
}

/// A host registers its checkout of a project.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The project's id or name.
    pub project: String,
    /// The checkout's absolute path on the host.
    pub path: String,
    /// Create the project (named `project`) when it does not exist.
    #[serde(default)]
    pub create: bool,
}

pub(super) fn agent_name(agent: &str) -> Result<String, ApiError> {
    let ok = (1..=64).contains(&agent.len())
        && agent
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(agent.to_owned())
    } else {
        Err(ApiError::invalid(
            "agent",
            "a preset name: 1 to 64 of a-z, 0-9, '-', '_', '.'",
        ))
    }
}

fn prompt_text(field: &str, text: &str) -> Result<String, ApiError> {
    Ok(validate::text(field, text, session::MAX_PROMPT)?)
}

/// Fills a task into the template. Unknown placeholders stay as they are.
pub fn render_task(template: &str, task: &Task) -> String {
    let labels = if task.labels.is_empty() {
        "none".to_owned()
    } else {
        task.labels.join(", ")
    };
    [
        ("{{title}}", task.title.as_str()),
        ("{{slug}}", task.slug.as_str()),
        ("{{priority}}", task.priority.as_str()),
        ("{{status}}", task.status.name.as_str()),
        ("{{labels}}", labels.as_str()),
        ("{{description}}", task.description.as_str()),
    ]
    .iter()
    .fold(template.to_owned(), |text, (k, v)| text.replace(k, v))
}

/// The host that runs a new session: the one asked for (it must have the project linked), or
/// the first online one that has it.
async fn choose_host(
    app: &impl Backend,
    org_id: &str,
    links: &[ProjectLink],
    asked: Option<&str>,
) -> Result<String, ApiError> {
    let project = links.first().map_or("", |l| l.project_name.as_str());
    match asked {
        Some(id) if id != "any" => {
            let host = super::hosts::live_host(app, org_id, id).await?;
            if !links.iter().any(|l| l.host_id == host.id) {
                return Err(ApiError::conflict(
                    "project_not_linked",
                    format!(
                        "host {} has no checkout of project {project:?}: run `tether projects link PATH --project {project:?}` there",
                        host.id
                    ),
                ));
            }
            Ok(host.id)
        }
        _ => {
            // One directory read for the org's hosts, then the tunnels of the linked ones in
            // link order until one is online.
            let registered = hosts::hosts(app.db(), org_id).await?;
            let mut offline = Vec::new();
            for link in links {
                let Some(host) = registered
                    .iter()
                    .find(|h| h.id == link.host_id && h.revoked_at.is_none())
                else {
                    continue;
                };
                let status = app
                    .tunnels()
                    .status(&HostRef {
                        host_id: &host.id,
                        org_id: &host.org_id,
                    })
                    .await?;
                if status.online {
                    return Ok(host.id.clone());
                }
                offline.push(serde_json::json!({"host_id": host.id, "reason": status.reason}));
            }
            Err(ApiError::conflict(
                "no_host_online",
                format!("no online host has project {project:?} linked"),
            )
            .with_details(serde_json::json!({ "hosts": offline })))
        }
    }
}

/// Starts an agent session: recorded as `queued`, its stream created, the start
/// command queued for the host (delivered now, or when the host comes back before
/// `start_timeout_secs`).
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = StartRequest,
    responses((status = 201, body = Session), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "no online host has the project, or the host has no checkout of it"),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: StartRequest = h::body(req)?;
    let s = start(app, &p.org_id, &p.member_id, input).await?;
    Ok(h::json(StatusCode::CREATED, &s))
}

/// Starts a session for `actor` (a member, or a webhook for the task it just created): the
/// whole of `POST /v1/sessions` but the request and the answer.
pub(super) async fn start(
    app: &impl Backend,
    org_id: &str,
    actor: &str,
    input: StartRequest,
) -> Result<Session, ApiError> {
    let agent = agent_name(&input.agent)?;
    let kind = input.kind.unwrap_or_default();
    let size = Size {
        cols: input.cols.unwrap_or(120),
        rows: input.rows.unwrap_or(40),
    };
    if !size.valid() {
        return Err(ApiError::invalid("cols", "cols and rows: 1 to 1000"));
    }
    let timeout = input
        .start_timeout_secs
        .unwrap_or(session::DEFAULT_START_TIMEOUT_SECS);
    if !(1..=session::MAX_START_TIMEOUT_SECS).contains(&timeout) {
        return Err(ApiError::invalid(
            "start_timeout_secs",
            format!("1 to {}", session::MAX_START_TIMEOUT_SECS),
        ));
    }
    let branch = input
        .branch
        .as_deref()
        .map(|b| validate::branch("branch", b))
        .transpose()?;
    let base_branch = input
        .base_branch
        .as_deref()
        .map(|b| validate::branch("base_branch", b))
        .transpose()?;
    let extra = input
        .prompt
        .as_deref()
        .map(|t| prompt_text("prompt", t))
        .transpose()?;
    let template = input
        .prompt_template
        .as_deref()
        .map(|t| validate::text("prompt_template", t, TEMPLATE_MAX))
        .transpose()?;
    if template.is_some() && input.task.is_none() {
        return Err(ApiError::invalid(
            "prompt_template",
            "applies to a task: give `task` too",
        ));
    }
    let project = validate::line("project", &input.project, validate::NAME_MAX)?;
    let links: Vec<ProjectLink> = org_answer_as(
        app,
        org_id,
        actor,
        OrgOp::ListLinks {
            project: Some(project),
            host_id: None,
        },
    )
    .await?;
    let Some(project_id) = links.first().map(|l| l.project_id.clone()) else {
        return Err(ApiError::conflict(
            "project_not_linked",
            "no host has a checkout of this project: run `tether projects link PATH` on one",
        ));
    };
    let task: Option<Task> = match &input.task {
        Some(key) => Some(
            org_answer_as(
                app,
                org_id,
                actor,
                OrgOp::GetTask {
                    key: key.to_owned(),
                },
            )
            .await?,
        ),
        None => None,
    };
    let prompt = match (&task, extra) {
        (Some(t), extra) => {
            let mut text = render_task(template.as_deref().unwrap_or(DEFAULT_TASK_TEMPLATE), t);
            if let Some(extra) = extra.filter(|e| !e.trim().is_empty()) {
                text.push_str("\n\n");
                text.push_str(&extra);
            }
            Some(prompt_text("prompt", &text)?)
        }
        (None, extra) => extra.filter(|e| !e.is_empty()),
    };
    let host_id = choose_host(app, org_id, &links, input.host.as_deref()).await?;
    let s: Session = org_answer_as(
        app,
        org_id,
        actor,
        OrgOp::CreateSession(NewSession {
            project_id: project_id.clone(),
            host_id: host_id.clone(),
            agent: agent.clone(),
            kind,
            prompt: prompt.clone(),
            task_id: task.as_ref().map(|t| t.id.clone()),
            branch: branch.clone(),
            base_branch: base_branch.clone(),
            size,
            start_timeout_secs: timeout,
        }),
    )
    .await?;
    let host = HostRef {
        host_id: &host_id,
        org_id,
    };
    let start = StartSession {
        session_id: s.id.clone(),
        project_id,
        agent,
        kind,
        prompt,
        task: task.map(|t| TaskRef {
            id: t.id,
            slug: t.slug,
            title: t.title,
        }),
        branch,
        base_branch,
        stream_path: s.stream_path.clone(),
        cols: size.cols,
        rows: size.rows,
        start_by_ms: now_ms() + i64::from(timeout) * 1000,
    };
    let queued = async {
        app.stream_store()
            .create(org_id, &s.stream_path, kind.content_type())
            .await?;
        let body = serde_json::to_value(&start).map_err(|e| ApiError::internal(&e))?;
        app.tunnels()
            .command(&host, &format!("start-{}", s.id), session::START, &body)
            .await
    };
    if let Err(e) = queued.await {
        // Recorded, but it can never start: say so in the record too.
        let _ = fail(
            app,
            org_id,
            actor,
            &s.id,
            &format!("could not queue the start: {}", e.body.error.message),
        )
        .await;
        return Err(e);
    }
    Ok(s)
}

async fn fail(
    app: &impl Backend,
    org_id: &str,
    actor: &str,
    id: &str,
    reason: &str,
) -> Result<Session, ApiError> {
    org_answer_as(
        app,
        org_id,
        actor,
        OrgOp::UpdateSession {
            id: id.to_owned(),
            host_id: None,
            update: SessionUpdate {
                status: SessionStatus::Failed,
                reason: Some(reason.to_owned()),
                exit_code: None,
                branch: None,
                worktree: None,
                at_ms: now_ms(),
            },
        },
    )
    .await
}

#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(SessionQuery),
    responses((status = 200, body = Page<Session>), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(app: &impl Backend, p: &Principal, req: &Request) -> Result<Response, ApiError> {
    let q: SessionQuery = h::query(req)?;
    Ok(h::json_bytes(
        StatusCode::OK,
        org_call(app, p, OrgOp::ListSessions(q)).await?,
    ))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    Ok(h::json_bytes(
        StatusCode::OK,
        org_call(app, p, OrgOp::GetSession { id: id.to_owned() }).await?,
    ))
}

pub(super) async fn session(
    app: &impl Backend,
    p: &Principal,
    id: &str,
) -> Result<Session, ApiError> {
    org_answer(app, p, OrgOp::GetSession { id: id.to_owned() }).await
}

/// A running session's host, or 409 when there is no agent to talk to.
/// A running terminal session (input and resizes): 409 `not_terminal` for a chat session.
async fn running(app: &impl Backend, p: &Principal, id: &str) -> Result<Session, ApiError> {
    let s = session(app, p, id).await?;
    if s.kind == session::SessionKind::Chat {
        return Err(ApiError::conflict(
            "not_terminal",
            "this is a chat session: send it messages with /messages",
        ));
    }
    check_running(&s)?;
    Ok(s)
}

/// 409 `session_not_running` unless the session has an agent to talk to.
pub(super) fn check_running(s: &Session) -> Result<(), ApiError> {
    if matches!(s.status, SessionStatus::Starting | SessionStatus::Running) {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "session_not_running",
            format!("the session is {}", s.status.as_str()),
        ))
    }
}

/// Types into the session's terminal (through the tunnel; 503 while the host is offline).
#[utoipa::path(post, path = "/v1/sessions/{id}/input", tag = "sessions", params(("id" = String, Path)),
    request_body = InputRequest,
    responses((status = 200, description = "{written}"), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn input(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: InputRequest = h::body(req)?;
    Ok(h::json_bytes(
        StatusCode::OK,
        send_input(app, p, id, input).await?,
    ))
}

/// `POST /v1/sessions/{id}/input` (and the MCP tool) on a decoded body: the host's answer.
pub(super) async fn send_input(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    input: InputRequest,
) -> Result<Vec<u8>, ApiError> {
    let bytes = match (input.data, input.data_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| ApiError::invalid("data_base64", "is not base64"))?,
        _ => {
            return Err(ApiError::invalid(
                "data",
                "give exactly one of `data` and `data_base64`",
            ));
        }
    };
    if bytes.is_empty() || bytes.len() > session::MAX_INPUT {
        return Err(ApiError::invalid(
            "data",
            format!("1 to {} bytes", session::MAX_INPUT),
        ));
    }
    let s = running(app, p, id).await?;
    let body = serde_json::to_value(Input {
        session_id: s.id.clone(),
        data_base64: STANDARD.encode(&bytes),
    })
    .map_err(|e| ApiError::internal(&e))?;
    app.tunnels()
        .rpc(&host_of(&s, p), session::INPUT, &body, INPUT_DEADLINE_MS)
        .await
}

#[utoipa::path(post, path = "/v1/sessions/{id}/resize", tag = "sessions", params(("id" = String, Path)),
    request_body = Size,
    responses((status = 200, description = "{cols, rows}"), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn resize(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let size: Size = h::body(req)?;
    if !size.valid() {
        return Err(ApiError::invalid("cols", "cols and rows: 1 to 1000"));
    }
    let s = running(app, p, id).await?;
    let body = serde_json::to_value(Resize {
        session_id: s.id.clone(),
        size,
    })
    .map_err(|e| ApiError::internal(&e))?;
    let answer = app
        .tunnels()
        .rpc(&host_of(&s, p), session::RESIZE, &body, INPUT_DEADLINE_MS)
        .await?;
    Ok(h::json_bytes(StatusCode::OK, answer))
}

/// Stops a session: a queued one at once, a started one through its host (a command, so it
/// also reaches a host that is briefly away). Stopping an ended session changes nothing.
#[utoipa::path(post, path = "/v1/sessions/{id}/stop", tag = "sessions", params(("id" = String, Path)),
    request_body = StopRequest,
    responses((status = 202, body = Session, description = "the stop is on its way (or done)"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn stop(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: StopRequest = if req.body().is_empty() {
        StopRequest::default()
    } else {
        h::body(req)?
    };
    Ok(h::json(
        StatusCode::ACCEPTED,
        &stop_session(app, p, id, input).await?,
    ))
}

/// `POST /v1/sessions/{id}/stop` (and the MCP tool) on a decoded body: the session as it is
/// now.
pub(super) async fn stop_session(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    input: StopRequest,
) -> Result<Session, ApiError> {
    let reason = match input.reason {
        Some(r) => validate::line("reason", &r, 500)?,
        None => format!("stopped by {}", p.member_id),
    };
    let mut s = session(app, p, id).await?;
    if s.status.is_final() {
        return Ok(s);
    }
    let body = serde_json::to_value(Stop {
        session_id: s.id.clone(),
        reason: reason.clone(),
    })
    .map_err(|e| ApiError::internal(&e))?;
    if s.status == SessionStatus::Queued {
        s = org_answer(
            app,
            p,
            OrgOp::UpdateSession {
                id: s.id.clone(),
                host_id: None,
                update: SessionUpdate {
                    status: SessionStatus::Stopped,
                    reason: Some(reason),
                    exit_code: None,
                    branch: None,
                    worktree: None,
                    at_ms: now_ms(),
                },
            },
        )
        .await?;
    }
    // Also to a host that has not started it yet: its start command may be on its way.
    app.tunnels()
        .command(
            &host_of(&s, p),
            &format!("stop-{}", s.id),
            session::STOP,
            &body,
        )
        .await?;
    Ok(s)
}

/// The most terminal bytes one read through MCP answers.
pub const TERMINAL_READ_MAX: u32 = 64 * 1024;

/// A stretch of a session's terminal output, as text.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct TerminalText {
    pub session_id: String,
    /// The byte offset the text starts at.
    pub offset: u64,
    /// Where the next read starts.
    pub next_offset: u64,
    /// The bytes as UTF-8 (invalid sequences replaced); terminal escapes included.
    pub text: String,
    /// Whether this reaches the end of what the agent has written so far.
    pub up_to_date: bool,
}

/// Reads up to `max_bytes` of a session's terminal from byte `offset`, without waiting (the
/// MCP tool; streaming readers use `/v1/stream/...`). A read never ends inside a UTF-8
/// character: the next one starts at its first byte.
pub(super) async fn read_terminal(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    offset: u64,
    max_bytes: u32,
) -> Result<TerminalText, ApiError> {
    if !(1..=TERMINAL_READ_MAX).contains(&max_bytes) {
        return Err(ApiError::invalid(
            "max_bytes",
            format!("1 to {TERMINAL_READ_MAX}"),
        ));
    }
    let from = i64::try_from(offset).map_err(|_| ApiError::invalid("offset", "is too large"))?;
    let s = session(app, p, id).await?;
    let chunk = app
        .stream_store()
        .read(&p.org_id, &s.stream_path, &Offset(from).to_string())
        .await?;
    let all = chunk.bytes.len();
    let bytes = chunk
        .bytes
        .get(..all.min(max_bytes as usize))
        .unwrap_or_default();
    let bytes = match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            bytes.get(..e.valid_up_to()).unwrap_or_default()
        }
        _ => bytes,
    };
    Ok(TerminalText {
        session_id: s.id,
        offset,
        next_offset: offset + bytes.len() as u64,
        text: String::from_utf8_lossy(bytes).into_owned(),
        up_to_date: chunk.up_to_date && bytes.len() == all,
    })
}

pub(super) fn host_of<'a>(s: &'a Session, p: &'a Principal) -> HostRef<'a> {
    HostRef {
        host_id: &s.host_id,
        org_id: &p.org_id,
    }
}

// ---- the host's side (host token) ----

pub(super) fn own_host(host: &HostPrincipal, id: &str) -> Result<(), ApiError> {
    if host.host_id == id {
        Ok(())
    } else {
        Err(ApiError::forbidden("this token is for another host"))
    }
}

async fn host_call(
    app: &impl Backend,
    host: &HostPrincipal,
    op: OrgOp,
) -> Result<Vec<u8>, ApiError> {
    super::org_call_as(app, &host.org_id, &host.host_id, op).await
}

/// The host links its checkout at `path` to a project (host token).
#[utoipa::path(post, path = "/v1/hosts/{id}/links", tag = "sessions", params(("id" = String, Path)),
    request_body = LinkRequest,
    responses((status = 200, body = ProjectLink), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("host_token" = [])))]
pub async fn link(
    app: &impl Backend,
    host: &HostPrincipal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    own_host(host, id)?;
    let input: LinkRequest = h::body(req)?;
    let project = validate::line("project", &input.project, validate::NAME_MAX)?;
    let body = host_call(
        app,
        host,
        OrgOp::LinkProject {
            project,
            host_id: host.host_id.clone(),
            path: input.path,
            create: input.create,
        },
    )
    .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

/// The host drops its link to a project (host token).
#[utoipa::path(delete, path = "/v1/hosts/{id}/links/{project}", tag = "sessions",
    params(("id" = String, Path), ("project" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("host_token" = [])))]
pub async fn unlink(
    app: &impl Backend,
    host: &HostPrincipal,
    id: &str,
    project: &str,
) -> Result<Response, ApiError> {
    own_host(host, id)?;
    host_call(
        app,
        host,
        OrgOp::UnlinkProject {
            project: project.to_owned(),
            host_id: host.host_id.clone(),
        },
    )
    .await?;
    Ok(h::no_content())
}

/// The projects a host has checkouts of (members).
#[utoipa::path(get, path = "/v1/hosts/{id}/links", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, body = Vec<ProjectLink>), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn links(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    let host = hosts::host(app.db(), &p.org_id, id).await?;
    let body = org_call(
        app,
        p,
        OrgOp::ListLinks {
            project: None,
            host_id: Some(host.id),
        },
    )
    .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

/// The host reports a session's status change (host token). 409 when the session has already
/// ended: the report is moot, do not retry it.
#[utoipa::path(post, path = "/v1/hosts/{id}/sessions/{session}/status", tag = "sessions",
    params(("id" = String, Path), ("session" = String, Path)), request_body = SessionUpdate,
    responses((status = 200, body = Session), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("host_token" = [])))]
pub async fn report(
    app: &impl Backend,
    host: &HostPrincipal,
    id: &str,
    session_id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    host_session_op(app, host, id, req, |update| OrgOp::UpdateSession {
        id: session_id.to_owned(),
        host_id: Some(host.host_id.clone()),
        update,
    })
    .await
}

/// A host's word about one of its own sessions: the body decoded, made the Org object's op,
/// its answer (the session) passed through.
async fn host_session_op<B: serde::de::DeserializeOwned>(
    app: &impl Backend,
    host: &HostPrincipal,
    id: &str,
    req: &Request,
    op: impl FnOnce(B) -> OrgOp,
) -> Result<Response, ApiError> {
    own_host(host, id)?;
    let body: B = h::body(req)?;
    Ok(h::json_bytes(
        StatusCode::OK,
        host_call(app, host, op(body)).await?,
    ))
}

/// The agent of one of the host's running sessions reports its progress (host token; the
/// daemon's local MCP server for that agent).
#[utoipa::path(post, path = "/v1/hosts/{id}/sessions/{session}/progress", tag = "sessions",
    params(("id" = String, Path), ("session" = String, Path)), request_body = ProgressReport,
    responses((status = 200, body = Session), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the session is not running"),
              (status = 422, body = ErrorBody)),
    security(("host_token" = [])))]
pub async fn progress(
    app: &impl Backend,
    host: &HostPrincipal,
    id: &str,
    session_id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    host_session_op(app, host, id, req, |report: ProgressReport| {
        OrgOp::ReportProgress {
            id: session_id.to_owned(),
            host_id: host.host_id.clone(),
            report,
        }
    })
    .await
}

/// The host names one of its sessions (host token): the small model's title, replacing the
/// fallback made from the prompt. One line, 1 to 80 characters.
#[utoipa::path(put, path = "/v1/hosts/{id}/sessions/{session}/title", tag = "sessions",
    params(("id" = String, Path), ("session" = String, Path)), request_body = TitleReport,
    responses((status = 200, body = Session), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("host_token" = [])))]
pub async fn title(
    app: &impl Backend,
    host: &HostPrincipal,
    id: &str,
    session_id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    host_session_op(app, host, id, req, |report: TitleReport| {
        OrgOp::SetSessionTitle {
            id: session_id.to_owned(),
            host_id: host.host_id.clone(),
            report,
        }
    })
    .await
}

/// The agent of one of the host's sessions updates the task it was started for (host token;
/// the daemon's local MCP server for that agent). 409 `no_task` for a session without one.
#[utoipa::path(patch, path = "/v1/hosts/{id}/sessions/{session}/task", tag = "sessions",
    params(("id" = String, Path), ("session" = String, Path)), request_body = UpdateTask,
    responses((status = 200, body = Task), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("host_token" = [])))]
pub async fn update_own_task(
    app: &impl Backend,
    host: &HostPrincipal,
    id: &str,
    session_id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    own_host(host, id)?;
    let patch: UpdateTask = h::body(req)?;
    let s: Session = decode(
        &host_call(
            app,
            host,
            OrgOp::GetSession {
                id: session_id.to_owned(),
            },
        )
        .await?,
    )?;
    if s.host_id != host.host_id {
        return Err(ApiError::not_found("session"));
    }
    let Some(task) = s.task_id else {
        return Err(ApiError::conflict(
            "no_task",
            "this session was started without a task",
        ));
    };
    let p = Principal::for_host(host);
    Ok(h::json_bytes(
        StatusCode::OK,
        super::org_data::update_task_with(app, &p, &task, patch).await?,
    ))
}

/// The host's worktrees, answered by its daemon through the tunnel.
#[utoipa::path(get, path = "/v1/hosts/{id}/worktrees", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, description = "the daemon's list"), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn worktrees(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    Ok(h::json_bytes(
        StatusCode::OK,
        worktrees_of(app, p, id).await?,
    ))
}

/// The daemon's list of a host's worktrees (`GET /v1/hosts/{id}/worktrees`, the MCP tool).
pub(super) async fn worktrees_of(
    app: &impl Backend,
    p: &Principal,
    id: &str,
) -> Result<Vec<u8>, ApiError> {
    let host = hosts::host(app.db(), &p.org_id, id).await?;
    app.tunnels()
        .rpc(
            &HostRef {
                host_id: &host.id,
                org_id: &host.org_id,
            },
            session::WORKTREES,
            &serde_json::json!({}),
            10_000,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_fills_the_template() {
        let task: Task = serde_json::from_value(serde_json::json!({
            "id": "tsk_1", "number": 12, "slug": "TET-12", "title": "Fix login",
            "description": "It 500s.", "priority": "high",
            "status": {"id": "sts_1", "name": "Todo", "category": "unstarted"},
            "project_id": null, "assignee_id": null, "labels": ["bug", "auth"],
            "created_by": null, "created_at": "x", "updated_at": "x"
        }))
        .unwrap();
        let text = render_task(DEFAULT_TASK_TEMPLATE, &task);
        for part in [
            "TET-12",
            "Fix login",
            "high",
            "Todo",
            "bug, auth",
            "It 500s.",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert_eq!(
            render_task("{{title}} {{unknown}}", &task),
            "Fix login {{unknown}}"
        );
        assert!(agent_name("codex-yolo").is_ok());
        for bad in ["", "Claude", "a b", "x;rm", &"a".repeat(65)] {
            assert!(agent_name(bad).is_err(), "{bad}");
        }
    }
}
