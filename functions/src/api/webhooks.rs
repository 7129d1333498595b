//! `/v1/webhooks`: per-org configurations that turn GitHub, Slack and Linear events into tasks
//! (and optionally agent sessions); and `/webhooks/{provider}/{id}`, where the providers
//! deliver them, authenticated by their signature instead of a member's credential.
//!
//! A delivery is checked in this order: the webhook exists, is enabled and is the provider's
//! (else 404); the body's size (413); the signature over the raw bytes (401) before any JSON is
//! read; the event. Its id is recorded in D1 before the task is created, so a retry or a
//! concurrent duplicate finds it and does nothing; a failure on our side forgets it again.

use super::{org_answer_as, org_data, sessions};
use crate::auth::{Principal, Role};
use crate::backend::Backend;
use crate::directory::{self, hosts, webhooks as rows};
use crate::error::ApiError;
use crate::http::{self as h, MAX_BODY, Request, Response};
use crate::webhooks::{self, Outcome, Provider, Rejection, Rules, TaskDraft};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tether_durable::error::{ErrorBody, ErrorDetail};
use tether_durable::org::OrgOp;
use tether_durable::org::model::patch;
use tether_durable::org::model::{CreateTask, Task};
use tether_durable::session::Session;
use tether_durable::time::now_ms;
use tether_durable::validate;

pub use rows::{Webhook, WebhookSession, WebhookWithSecret};

const DEFAULT_MENTION: &str = "@tether";
const MENTION_MAX: usize = 64;
const SECRET_MIN: usize = 8;
const SECRET_MAX: usize = 256;
const DELIVERY_ID_MAX: usize = 200;

/// A new webhook.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub provider: Provider,
    /// Default: "<provider> webhook".
    pub name: Option<String>,
    /// The project new tasks go to: its id or its name.
    pub project: String,
    /// Comments mentioning this become tasks (GitHub, Linear). Default `@tether`.
    pub mention: Option<String>,
    /// Issues given this label become tasks (GitHub); Linear issues need it when set.
    pub label: Option<String>,
    /// Required for Slack and Linear (the signing secret they issue); for GitHub generated
    /// (32 random bytes, hex) when absent.
    pub secret: Option<String>,
    /// Start an agent session for every new task.
    pub session: Option<WebhookSession>,
}

/// A change to a webhook; absent fields stay, `null` clears `label` and `session`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub name: Option<String>,
    pub mention: Option<String>,
    #[serde(default, deserialize_with = "patch")]
    #[schema(value_type = Option<String>)]
    pub label: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch")]
    #[schema(value_type = Option<WebhookSession>)]
    pub session: Option<Option<WebhookSession>>,
    /// A disabled webhook answers its deliveries 404.
    pub disabled: Option<bool>,
}

/// A new secret: required for Slack and Linear, generated for GitHub when absent.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    pub secret: Option<String>,
}

/// What a delivery did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivered {
    /// `created`, `duplicate`, `ignored`.
    pub status: String,
    pub task: Option<Task>,
    pub session: Option<Session>,
    /// Why the configured session did not start (the task exists regardless).
    pub session_error: Option<ErrorDetail>,
    /// For `ignored`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn mention(value: &str) -> Result<String, ApiError> {
    let v = validate::line("mention", value, MENTION_MAX)?;
    if v.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid("mention", "one word, such as @tether"));
    }
    Ok(v)
}

fn label(value: &str) -> Result<String, ApiError> {
    Ok(validate::line("label", value, validate::LABEL_MAX)?)
}

fn secret(value: &str) -> Result<String, ApiError> {
    let ok = (SECRET_MIN..=SECRET_MAX).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ApiError::invalid(
            "secret",
            format!("{SECRET_MIN} to {SECRET_MAX} printable ASCII characters, no spaces"),
        ))
    }
}

/// The given secret, or for GitHub a new one; Slack and Linear issue their own.
fn secret_for(provider: Provider, given: Option<&str>) -> Result<String, ApiError> {
    match (given, provider) {
        (Some(s), _) => secret(s),
        (None, Provider::Github) => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
            Ok(hex::encode(bytes))
        }
        (None, _) => Err(ApiError::invalid(
            "secret",
            format!(
                "required for {}: the signing secret it shows for your app or webhook",
                provider.as_str()
            ),
        )),
    }
}

async fn session_config(
    app: &impl Backend,
    org_id: &str,
    s: WebhookSession,
) -> Result<WebhookSession, ApiError> {
    let agent = sessions::agent_name(&s.agent).map_err(|_| {
        ApiError::invalid(
            "session.agent",
            "a preset name: 1 to 64 of a-z, 0-9, '-', '_', '.'",
        )
    })?;
    let host = match s.host.as_deref() {
        None | Some("any") => None,
        Some(id) => match hosts::host(app.db(), org_id, id).await {
            Ok(host) => Some(host.id),
            Err(e) if e.status.is_client_error() => {
                return Err(ApiError::invalid(
                    "session.host",
                    "no such host in this org (give a host id, or `any`)",
                ));
            }
            Err(e) => return Err(e),
        },
    };
    Ok(WebhookSession { agent, host })
}

/// The org's webhooks (members; never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<Webhook>), (status = 401, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(app: &impl Backend, p: &Principal) -> Result<Response, ApiError> {
    Ok(h::json(
        StatusCode::OK,
        &rows::list(app.db(), &p.org_id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Webhook), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    Ok(h::json(
        StatusCode::OK,
        &rows::get(app.db(), &p.org_id, id).await?,
    ))
}

/// Creates a webhook (admin). The answer is the only one with the secret (and `url_path`, the
/// address to give the provider).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookWithSecret), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "limit_exceeded: at most 20 per org"),
              (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let input: CreateWebhook = h::body(req)?;
    let name = match &input.name {
        Some(n) => validate::line("name", n, validate::NAME_MAX)?,
        None => format!("{} webhook", input.provider.as_str()),
    };
    let mention = mention(input.mention.as_deref().unwrap_or(DEFAULT_MENTION))?;
    let label = input.label.as_deref().map(label).transpose()?;
    let secret = secret_for(input.provider, input.secret.as_deref())?;
    let session = match input.session {
        Some(s) => Some(session_config(app, &p.org_id, s).await?),
        None => None,
    };
    let project_id = org_data::project_in_body(app, p, &input.project).await?;
    let fields = rows::Fields {
        name,
        project_id,
        mention,
        label,
        session,
    };
    let created = rows::create(
        app.db(),
        &p.org_id,
        &p.member_id,
        input.provider,
        fields,
        secret,
        now_ms(),
    )
    .await?;
    Ok(h::json(StatusCode::CREATED, &created))
}

/// Changes a webhook (admin).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body = UpdateWebhook,
    responses((status = 200, body = Webhook), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let patch: UpdateWebhook = h::body(req)?;
    let (mut fields, disabled) = rows::fields(app.db(), &p.org_id, id).await?;
    if let Some(n) = &patch.name {
        fields.name = validate::line("name", n, validate::NAME_MAX)?;
    }
    if let Some(m) = &patch.mention {
        fields.mention = mention(m)?;
    }
    if let Some(l) = patch.label {
        fields.label = l.as_deref().map(label).transpose()?;
    }
    if let Some(s) = patch.session {
        fields.session = match s {
            Some(s) => Some(session_config(app, &p.org_id, s).await?),
            None => None,
        };
    }
    let disabled = patch.disabled.unwrap_or(disabled);
    let w = rows::update(app.db(), &p.org_id, id, fields, disabled, now_ms()).await?;
    Ok(h::json(StatusCode::OK, &w))
}

/// Deletes a webhook (admin): its deliveries answer 404 from now on.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(app: &impl Backend, p: &Principal, id: &str) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    rows::delete(app.db(), &p.org_id, id).await?;
    Ok(h::no_content())
}

/// Replaces the signing secret (admin); the answer shows the new one.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate", tag = "webhooks", params(("id" = String, Path)),
    request_body = RotateSecret,
    responses((status = 200, body = WebhookWithSecret), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn rotate(
    app: &impl Backend,
    p: &Principal,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    p.require(Role::Admin)?;
    let input: RotateSecret = if req.body().iter().all(u8::is_ascii_whitespace) {
        RotateSecret::default()
    } else {
        h::body(req)?
    };
    let current = rows::get(app.db(), &p.org_id, id).await?;
    let secret = secret_for(current.provider, input.secret.as_deref())?;
    let rotated = rows::rotate(app.db(), &p.org_id, id, secret).await?;
    Ok(h::json(StatusCode::OK, &rotated))
}

// ---- deliveries ----

fn rejected(r: Rejection) -> ApiError {
    match r {
        Rejection::Signature => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the signature does not match",
        ),
        Rejection::Timestamp => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "stale_request",
            "the timestamp is outside the accepted window",
        ),
    }
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn delivery_id<'a>(id: Option<&'a str>, what: &str) -> Result<&'a str, ApiError> {
    match id.map(str::trim) {
        Some(id)
            if !id.is_empty()
                && id.len() <= DELIVERY_ID_MAX
                && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(id)
        }
        _ => Err(ApiError::bad_request(
            "missing_delivery_id",
            format!("{what} is required (at most {DELIVERY_ID_MAX} printable characters)"),
        )),
    }
}

/// Receives a provider's delivery (no member credential: the provider's signature).
#[utoipa::path(post, path = "/webhooks/{provider}/{id}", tag = "webhooks",
    params(("provider" = Provider, Path), ("id" = String, Path),
           ("X-Hub-Signature-256" = Option<String>, Header, description = "GitHub: sha256=<hex HMAC-SHA256>"),
           ("X-GitHub-Event" = Option<String>, Header), ("X-GitHub-Delivery" = Option<String>, Header),
           ("X-Slack-Signature" = Option<String>, Header, description = "Slack: v0=<hex HMAC-SHA256 of v0:{timestamp}:{body}>"),
           ("X-Slack-Request-Timestamp" = Option<String>, Header, description = "Slack: within 5 minutes of now"),
           ("Linear-Signature" = Option<String>, Header, description = "Linear: <hex HMAC-SHA256>"),
           ("Linear-Delivery" = Option<String>, Header)),
    request_body(content = Value, description = "the provider's event payload, as sent"),
    responses((status = 201, body = Delivered, description = "a task was created"),
              (status = 200, description = "a duplicate (`{\"status\":\"duplicate\"}`), a ping (`pong`) or Slack's `{challenge}`"),
              (status = 202, body = Delivered, description = "ignored, with the reason"),
              (status = 400, body = ErrorBody, description = "malformed JSON or no delivery id"),
              (status = 401, body = ErrorBody, description = "invalid_signature or stale_request"),
              (status = 404, body = ErrorBody, description = "unknown or disabled webhook, or another provider's"),
              (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn deliver(
    app: &impl Backend,
    req: &Request,
    provider: &str,
    id: &str,
) -> Result<Response, ApiError> {
    let target = match Provider::parse(provider) {
        Some(provider) => rows::for_delivery(app.db(), id)
            .await?
            .filter(|t| t.webhook.provider == provider),
        None => None,
    }
    .ok_or_else(|| ApiError::not_found("webhook"))?;
    let body = req.body();
    if body.len() > MAX_BODY {
        return Err(h::too_large(MAX_BODY));
    }
    let now = now_ms();
    let secret = target.secret.as_str();
    let hook = &target.webhook;
    match hook.provider {
        Provider::Github => {
            webhooks::verify_github(secret, header(req, "x-hub-signature-256"), body)
        }
        Provider::Slack => webhooks::verify_slack(
            secret,
            header(req, "x-slack-request-timestamp"),
            header(req, "x-slack-signature"),
            body,
            now.div_euclid(1000),
        ),
        Provider::Linear => webhooks::verify_linear(secret, header(req, "linear-signature"), body),
    }
    .map_err(rejected)?;
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?;
    let rules = Rules {
        mention: &hook.mention,
        label: hook.label.as_deref(),
    };
    let (outcome, delivery) = match hook.provider {
        Provider::Github => {
            let delivery = delivery_id(header(req, "x-github-delivery"), "X-GitHub-Delivery")?;
            let event = header(req, "x-github-event").unwrap_or("");
            (webhooks::github(event, &payload, rules), Some(delivery))
        }
        Provider::Slack => (
            webhooks::slack(&payload),
            payload.get("event_id").and_then(Value::as_str),
        ),
        Provider::Linear => {
            webhooks::linear_fresh(&payload, now).map_err(rejected)?;
            let delivery = delivery_id(header(req, "linear-delivery"), "Linear-Delivery")?;
            (webhooks::linear(&payload, rules), Some(delivery))
        }
    };
    let draft = match outcome {
        Outcome::Reply(answer) => return Ok(h::json(StatusCode::OK, &answer)),
        Outcome::Ignored(reason) => {
            return Ok(h::json(
                StatusCode::ACCEPTED,
                &json!({"status": "ignored", "reason": reason}),
            ));
        }
        Outcome::Task(draft) => draft,
    };
    let delivery = delivery_id(delivery, "the delivery id (Slack: event_id)")?;
    if !rows::record_delivery(app.db(), &hook.id, delivery, now).await? {
        return Ok(h::json(StatusCode::OK, &json!({"status": "duplicate"})));
    }
    match act(app, &target, draft).await {
        Ok(done) => Ok(h::json(StatusCode::CREATED, &done)),
        Err(e) => {
            if e.status.is_server_error() {
                // Our failure: let the provider's retry try again.
                let _ = rows::forget_delivery(app.db(), &hook.id, delivery).await;
            }
            Err(e)
        }
    }
}

/// Creates the task in the webhook's project (as the webhook) and, when configured, starts
/// its session; a session that cannot start leaves the task and says why.
async fn act(
    app: &impl Backend,
    target: &rows::DeliveryTarget,
    draft: TaskDraft,
) -> Result<Delivered, ApiError> {
    let hook = &target.webhook;
    let org_id = target.org_id.as_str();
    let prefix = directory::org(app.db(), org_id).await?.task_prefix;
    let op = OrgOp::CreateTask {
        task: CreateTask {
            title: draft.title,
            description: Some(draft.description),
            priority: None,
            status_id: None,
            project_id: Some(hook.project_id.clone()),
            assignee_id: None,
            labels: Some(vec![hook.provider.as_str().to_owned()]),
        },
        prefix,
    };
    let task: Task = org_answer_as(app, org_id, &hook.id, op).await?;
    let (session, session_error) = match &hook.session {
        None => (None, None),
        Some(cfg) => {
            let start = sessions::StartRequest {
                project: hook.project_id.clone(),
                host: cfg.host.clone(),
                agent: cfg.agent.clone(),
                kind: None,
                prompt: None,
                task: Some(task.id.clone()),
                prompt_template: None,
                branch: None,
                base_branch: None,
                cols: None,
                rows: None,
                start_timeout_secs: None,
            };
            match sessions::start(app, org_id, &hook.id, start).await {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.body.error)),
            }
        }
    };
    Ok(Delivered {
        status: "created".into(),
        task: Some(task),
        session,
        session_error,
        reason: None,
    })
}
