//! Chat sessions' routes: follow-up messages (`POST /v1/sessions/{id}/messages`) and members'
//! answers to approval requests (`POST /v1/sessions/{id}/approvals/{request}`, listed with
//! `GET /v1/sessions/{id}/approvals`).
//!
//! Both reach the session's daemon as tunnel requests ([`chat::MESSAGE`], [`chat::APPROVE`]):
//! they only make sense while it is there (503 otherwise). The daemon decides whether an
//! approval answer counts (the request is its own); the org records the ones it took.

use super::sessions::{check_running, host_of, session};
use super::{org_answer, org_call};
use crate::auth::Principal;
use crate::backend::{Backend, Tunnels};
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use serde::Deserialize;
use tether_durable::chat::{
    self, Answerer, ApprovalAnswer, ApprovalOutcome, ApprovalRecord, AttachmentFile, ChatMessage,
    Decision, Delivered,
};
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::session::{Session, SessionKind};
use tether_durable::{ids, validate};

/// How long a follow-up or an approval answer waits for the host.
const DEADLINE_MS: u32 = 10_000;

/// A follow-up for a running chat session.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// The message, 1 to 100 000 characters.
    pub text: String,
    /// Files for the agent (at most 8, 256 KiB each and 512 KiB together, decoded): they land
    /// in the worktree under `.tether/attachments/<message id>/`, names made safe and unique.
    #[serde(default)]
    pub attachments: Vec<AttachmentFile>,
}

/// A member's answer to an approval request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// `allow` or `deny`.
    pub decision: Decision,
    /// Why, one line of at most 1000 characters (shown to the agent on a deny).
    pub reason: Option<String>,
}

/// 409 `not_chat` unless `s` is a chat session (`hint` says what to do instead).
fn check_chat(s: &Session, hint: &str) -> Result<(), ApiError> {
    match s.kind {
        SessionKind::Chat => Ok(()),
        SessionKind::Terminal => Err(ApiError::conflict(
            "not_chat",
            format!("this is a terminal session: {hint}"),
        )),
    }
}

/// A follow-up's files, checked: names made safe and unique, the data as given.
fn attachments(files: Vec<AttachmentFile>) -> Result<Vec<AttachmentFile>, ApiError> {
    if files.len() > chat::MAX_ATTACHMENTS {
        return Err(ApiError::invalid(
            "attachments",
            format!("at most {} files", chat::MAX_ATTACHMENTS),
        ));
    }
    let mut total = 0;
    for (i, f) in files.iter().enumerate() {
        let field = format!("attachments[{i}].data_base64");
        let bytes = STANDARD
            .decode(f.data_base64.as_bytes())
            .map_err(|_| ApiError::invalid(&field, "is not base64"))?;
        if bytes.len() > chat::MAX_ATTACHMENT_BYTES {
            return Err(ApiError::invalid(
                &field,
                format!(
                    "a file is at most {} bytes (256 KiB), this one is {}",
                    chat::MAX_ATTACHMENT_BYTES,
                    bytes.len()
                ),
            ));
        }
        total += bytes.len();
    }
    if total > chat::MAX_ATTACHMENTS_TOTAL {
        return Err(ApiError::invalid(
            "attachments",
            format!(
                "the files are at most {} bytes (512 KiB) together, these are {total}",
                chat::MAX_ATTACHMENTS_TOTAL
            ),
        ));
    }
    let names = chat::unique_filenames(files.iter().map(|f| f.name.as_str())).map_err(|bad| {
        let i = files.iter().position(|f| f.name == bad).unwrap_or(0);
        ApiError::invalid(
            &format!("attachments[{i}].name"),
            format!("{bad:?} is not a usable file name (letters, digits, '.', '_', '-')"),
        )
    })?;
    Ok(files
        .into_iter()
        .zip(names)
        .map(|(f, name)| AttachmentFile {
            name,
            data_base64: f.data_base64,
        })
        .collect())
}

/// Sends a follow-up to a running chat session's agent (through the tunnel; 503 while the
/// host is offline). The daemon answers once the message is in the agent's input and in the
/// session's stream.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path)), request_body = MessageRequest,
    responses((status = 202, body = Delivered, description = "the agent has the message"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "`not_chat`, or the session is not running"),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn message(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: MessageRequest = h::body(req)?;
    Ok(h::json_bytes(
        StatusCode::ACCEPTED,
        send_message(app, p, id, input).await?,
    ))
}

/// `POST /v1/sessions/{id}/messages` (and the MCP tool) on a decoded body: the daemon's
/// [`Delivered`].
pub(super) async fn send_message(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    input: MessageRequest,
) -> Result<Vec<u8>, ApiError> {
    let text = validate::text("text", &input.text, chat::MAX_MESSAGE)?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid("text", "must not be empty"));
    }
    let files = attachments(input.attachments)?;
    let s = session(app, p, id).await?;
    check_chat(&s, "use /input")?;
    check_running(&s)?;
    let body = serde_json::to_value(ChatMessage {
        session_id: s.id.clone(),
        message_id: ids::new(chat::MESSAGE_ID_PREFIX),
        text,
        attachments: files,
        sent_by: p.member_id.clone(),
    })
    .map_err(|e| ApiError::internal(&e))?;
    app.tunnels()
        .rpc(&host_of(&s, p), chat::MESSAGE, &body, DEADLINE_MS)
        .await
}

/// Answers an approval request of a chat session (members only: an agent cannot approve
/// itself). The daemon takes the first answer; the org records who gave it.
#[utoipa::path(post, path = "/v1/sessions/{id}/approvals/{request}", tag = "sessions",
    params(("id" = String, Path), ("request" = String, Path, description = "`apr_...`")),
    request_body = ApprovalRequest,
    responses((status = 200, body = ApprovalRecord),
              (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "`members_only`, or `role_too_low` for this request"),
              (status = 404, body = ErrorBody, description = "no such session, or `approval_not_found`"),
              (status = 409, body = ErrorBody, description = "`not_chat`, `session_ended` or `already_answered`"),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn approve(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    request: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: ApprovalRequest = h::body(req)?;
    Ok(h::json(
        StatusCode::OK,
        &answer_approval(app, p, id, request, input).await?,
    ))
}

/// Who answered an approval before, for a message.
fn who(a: &Answerer) -> String {
    match a {
        Answerer::Member { id, .. } => id.clone(),
        Answerer::Timeout => "its timeout".to_owned(),
        Answerer::SessionEnded => "the session ending".to_owned(),
        Answerer::Withdrawn => "its withdrawal".to_owned(),
    }
}

/// `POST /v1/sessions/{id}/approvals/{request}` (and the MCP tool) on a decoded body: the
/// recorded answer.
pub(super) async fn answer_approval(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    request: &str,
    input: ApprovalRequest,
) -> Result<ApprovalRecord, ApiError> {
    if p.is_host() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "members_only",
            "approvals are answered by members, not by machines or their agents",
        ));
    }
    ids::check(chat::APPROVAL_ID_PREFIX, "request", request)?;
    let reason = match input.reason.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) => Some(validate::line("reason", r, chat::MAX_REASON)?),
    };
    let s = session(app, p, id).await?;
    check_chat(&s, "it has no approvals")?;
    if s.status.is_final() {
        return Err(ApiError::conflict(
            "session_ended",
            format!(
                "the session is {}: its requests were answered when it ended",
                s.status.as_str()
            ),
        ));
    }
    let role = p.role.as_str();
    let body = serde_json::to_value(ApprovalAnswer {
        session_id: s.id.clone(),
        request_id: request.to_owned(),
        decision: input.decision,
        reason: reason.clone(),
        answered_by: Answerer::Member {
            id: p.member_id.clone(),
            role: role.to_owned(),
        },
    })
    .map_err(|e| ApiError::internal(&e))?;
    let answer = app
        .tunnels()
        .rpc(&host_of(&s, p), chat::APPROVE, &body, DEADLINE_MS)
        .await?;
    let outcome: ApprovalOutcome = serde_json::from_slice(&answer).map_err(|e| {
        tracing::warn!(error = %e, session = %s.id, "the host's approval answer does not parse");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_host_answer",
            "the host answered something this API does not understand",
        )
    })?;
    let decision = match outcome {
        ApprovalOutcome::Answered { decision, .. } => decision,
        // The same member's same answer again (a retry after a failure on the way back, say)
        // is answered like the first, and recorded if it was not (the record keeps the first).
        ApprovalOutcome::AlreadyAnswered {
            decision,
            answered_by: Answerer::Member { id, .. },
        } if decision == input.decision && id == p.member_id => decision,
        ApprovalOutcome::Unknown => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "approval_not_found",
                format!("session {} has no approval request {request}", s.id),
            ));
        }
        ApprovalOutcome::AlreadyAnswered {
            decision,
            answered_by,
        } => {
            return Err(ApiError::conflict(
                "already_answered",
                format!(
                    "this request was answered already: {} by {}",
                    match decision {
                        Decision::Allow => "allowed",
                        Decision::Deny => "denied",
                    },
                    who(&answered_by)
                ),
            )
            .with_details(serde_json::json!({
                "decision": decision,
                "answered_by": answered_by,
            })));
        }
        ApprovalOutcome::RoleTooLow { required } => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "role_too_low",
                format!("this request needs the {required} role or higher; you are {role}"),
            )
            .with_details(serde_json::json!({ "required": required })));
        }
    };
    org_answer(
        app,
        p,
        OrgOp::RecordApproval {
            session_id: s.id,
            request_id: request.to_owned(),
            decision,
            reason,
            role: role.to_owned(),
        },
    )
    .await
}

/// The answers members gave a session's approval requests, newest first (at most 200).
#[utoipa::path(get, path = "/v1/sessions/{id}/approvals", tag = "sessions",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<ApprovalRecord>), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn approvals(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    let body = org_call(
        app,
        p,
        OrgOp::ListApprovals {
            session_id: id.to_owned(),
        },
    )
    .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}
