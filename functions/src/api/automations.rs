//! `/v1/automations`: agent sessions started on a schedule (an RRULE in an IANA time zone),
//! with versioned prompts and a log of runs; and the cron's tick that runs what is due.
//!
//! The automations live in the org's object, which computes occurrences and claims due runs
//! atomically (see `tether_durable::automation`). The directory keeps one row per org saying
//! when it next has something due, so a tick asks only those orgs' objects; every change here
//! refreshes that row with the object's answer.

use super::sessions::{self, StartRequest, agent_name};
use super::{org_answer, org_answer_as, org_call, org_data};
use crate::auth::Principal;
use crate::backend::Backend;
use crate::directory;
use crate::error::ApiError;
use crate::http::{self as h, Request, Response};
use http::StatusCode;
use serde::Deserialize;
use tether_durable::automation::{
    Automation, AutomationPatch, Claim, NewAutomation, PromptVersion, Run, RunOutcome, Scheduled,
    Target,
};
use tether_durable::error::ErrorBody;
use tether_durable::org::OrgOp;
use tether_durable::org::model::{Page, PageQuery, patch};

/// A new automation.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAutomation {
    /// A name unique in the org (at most 200 characters).
    pub name: String,
    /// An RFC 5545 recurrence rule without DTSTART, e.g. `FREQ=DAILY;BYHOUR=9;BYMINUTE=0` or
    /// `FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=7`. Not SECONDLY, no COUNT (use UNTIL).
    pub rrule: String,
    /// The IANA time zone the rule is read in, e.g. `Europe/Berlin` (default `UTC`).
    pub timezone: Option<String>,
    /// Where occurrences are counted from: a local date and time in `timezone` such as
    /// `2026-11-23T09:00` (default: now). Fields the rule does not set (the minute of an
    /// hourly rule, the weekday of a weekly one) come from it.
    pub starts_at: Option<String>,
    /// The project (id or name) whose checkout the agent works in.
    pub project: String,
    /// A host id, or `any` (the default): the first online host with the project linked.
    pub host: Option<String>,
    /// The agent preset on the host, e.g. `claude` or `codex`.
    pub agent: String,
    /// What the agent is asked each run (at most 20 000 characters); version 1.
    pub prompt: String,
    /// The branch each run's worktree starts from (default: the checkout's current one).
    pub base_branch: Option<String>,
    /// Create it paused.
    #[serde(default)]
    pub paused: bool,
}

/// Changes to an automation; the prompt changes through `PUT .../prompt`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAutomation {
    pub name: Option<String>,
    /// A new rule: occurrences are counted again from `starts_at`.
    pub rrule: Option<String>,
    pub timezone: Option<String>,
    pub starts_at: Option<String>,
    /// The project's id or name.
    pub project: Option<String>,
    /// A host id or `any`.
    pub host: Option<String>,
    pub agent: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "patch")]
    #[schema(value_type = Option<String>)]
    pub base_branch: Option<Option<String>>,
}

/// A new prompt version, which becomes the active one.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPrompt {
    pub prompt: String,
}

/// Make an earlier prompt version the active one again.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub version: i64,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A version number (default: the active one).
    pub version: Option<i64>,
}

/// `any`, or one of the org's hosts (a 422 otherwise).
async fn host(app: &impl Backend, p: &Principal, host: &str) -> Result<String, ApiError> {
    if host == "any" {
        return Ok(host.to_owned());
    }
    match directory::hosts::host(app.db(), &p.org_id, host).await {
        Ok(h) if h.revoked_at.is_none() => Ok(h.id),
        Ok(_) => Err(ApiError::invalid("host", "this host was revoked")),
        Err(e) if e.status.is_client_error() => {
            Err(ApiError::invalid("host", "a host id of this org, or `any`"))
        }
        Err(e) => Err(e),
    }
}

/// A call that moves the org's schedule, on behalf of `actor`: its answer comes with the
/// schedule as it then stands, which the directory's row of due orgs records.
async fn scheduling<T: serde::de::DeserializeOwned>(
    app: &impl Backend,
    org_id: &str,
    actor: &str,
    op: OrgOp,
) -> Result<T, ApiError> {
    let s: Scheduled<T> =
        org_answer_as(app, org_id, actor, OrgOp::WithSchedule(Box::new(op))).await?;
    directory::automations::record(app.db(), org_id, s.schedule).await?;
    Ok(s.answer)
}

/// A member's change that moves the schedule.
async fn changed<T: serde::de::DeserializeOwned>(
    app: &impl Backend,
    p: &Principal,
    op: OrgOp,
) -> Result<T, ApiError> {
    scheduling(app, &p.org_id, &p.member_id, op).await
}

pub(super) async fn create_with(
    app: &impl Backend,
    p: &Principal,
    input: CreateAutomation,
) -> Result<Automation, ApiError> {
    let target = Target {
        project_id: org_data::project_in_body(app, p, &input.project).await?,
        host: host(app, p, input.host.as_deref().unwrap_or("any")).await?,
        agent: agent_name(&input.agent)?,
        base_branch: input.base_branch,
    };
    changed(
        app,
        p,
        OrgOp::CreateAutomation(NewAutomation {
            name: input.name,
            rrule: input.rrule,
            timezone: input.timezone.unwrap_or_else(|| "UTC".into()),
            starts_at: input.starts_at,
            target,
            prompt: input.prompt,
            paused: input.paused,
        }),
    )
    .await
}

pub(super) async fn update_with(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    input: UpdateAutomation,
) -> Result<Automation, ApiError> {
    let project_id = match &input.project {
        Some(k) => Some(org_data::project_in_body(app, p, k).await?),
        None => None,
    };
    let host = match &input.host {
        Some(h) => Some(host(app, p, h).await?),
        None => None,
    };
    let patch = AutomationPatch {
        name: input.name,
        rrule: input.rrule,
        timezone: input.timezone,
        starts_at: input.starts_at,
        project_id,
        host,
        agent: input.agent.as_deref().map(agent_name).transpose()?,
        base_branch: input.base_branch,
    };
    changed(
        app,
        p,
        OrgOp::UpdateAutomation {
            key: key.to_owned(),
            patch,
        },
    )
    .await
}

pub(super) async fn delete_with(
    app: &impl Backend,
    p: &Principal,
    key: &str,
) -> Result<(), ApiError> {
    changed(
        app,
        p,
        OrgOp::DeleteAutomation {
            key: key.to_owned(),
        },
    )
    .await
}

pub(super) async fn set_paused(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    paused: bool,
) -> Result<Automation, ApiError> {
    changed(
        app,
        p,
        OrgOp::SetAutomationPaused {
            key: key.to_owned(),
            paused,
        },
    )
    .await
}

/// A branch per run: the automation's name as a slug and the run id's tail, so runs never
/// collide on a worktree.
fn run_branch(name: &str, run_id: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let tail = run_id.get(run_id.len().saturating_sub(8)..).unwrap_or("");
    if slug.is_empty() {
        format!("tether/auto-{tail}")
    } else {
        format!("tether/auto-{slug}-{tail}")
    }
}

/// Starts a claimed run's session and records how that went.
async fn dispatch(app: &impl Backend, org_id: &str, claim: Claim) -> Result<Run, ApiError> {
    let Claim {
        run,
        name,
        target,
        prompt,
    } = claim;
    let input = StartRequest {
        project: target.project_id,
        host: Some(target.host),
        agent: target.agent,
        kind: None,
        prompt: Some(prompt),
        task: None,
        prompt_template: None,
        branch: Some(run_branch(&name, &run.id)),
        base_branch: target.base_branch,
        cols: None,
        rows: None,
        start_timeout_secs: None,
    };
    let outcome = match sessions::start(app, org_id, &run.automation_id, input).await {
        Ok(s) => RunOutcome::Dispatched { session_id: s.id },
        Err(e) => RunOutcome::Failed {
            error: format!("{}: {}", e.body.error.code, e.body.error.message),
        },
    };
    let finish = OrgOp::FinishRun {
        run_id: run.id,
        outcome,
    };
    org_answer_as(app, org_id, &run.automation_id, finish).await
}

pub(super) async fn run_now(app: &impl Backend, p: &Principal, key: &str) -> Result<Run, ApiError> {
    let claim: Claim = org_answer(
        app,
        p,
        OrgOp::StartManualRun {
            key: key.to_owned(),
        },
    )
    .await?;
    dispatch(app, &p.org_id, claim).await
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    pub orgs: usize,
    pub dispatched: usize,
    pub failed: usize,
    pub errors: Vec<String>,
}

/// The cron's tick at `at` (Unix ms, the scheduled time): every org with something due claims
/// it (its object moves the schedule on in the same transaction, so a retried tick runs
/// nothing twice), the org's row in the index is refreshed from the same answer, and each run's
/// session is started.
/// One org's failure does not stop the others.
pub async fn tick(app: &impl Backend, at: i64) -> Result<Tick, ApiError> {
    let mut t = Tick::default();
    for org_id in directory::automations::due(app.db(), at).await? {
        t.orgs += 1;
        let claims: Result<Vec<Claim>, _> =
            scheduling(app, &org_id, "cron", OrgOp::ClaimDueAutomations { at }).await;
        match claims {
            Ok(claims) => {
                for claim in claims {
                    match dispatch(app, &org_id, claim).await {
                        Ok(run) if run.session_id.is_some() => t.dispatched += 1,
                        Ok(_) => t.failed += 1,
                        Err(e) => t.errors.push(format!("{org_id}: {e}")),
                    }
                }
            }
            Err(e) => t.errors.push(format!("{org_id}: {e}")),
        }
    }
    Ok(t)
}

// ---- routes ----

#[utoipa::path(get, path = "/v1/automations", tag = "automations", params(PageQuery),
    responses((status = 200, body = Page<Automation>), (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(app: &impl Backend, p: &Principal, req: &Request) -> Result<Response, ApiError> {
    let q: PageQuery = h::query(req)?;
    Ok(h::json_bytes(
        StatusCode::OK,
        org_call(app, p, OrgOp::ListAutomations(q)).await?,
    ))
}

/// Creates an automation; its first run is the rule's first occurrence after now.
#[utoipa::path(post, path = "/v1/automations", tag = "automations", request_body = CreateAutomation,
    responses((status = 201, body = Automation), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    app: &impl Backend,
    p: &Principal,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: CreateAutomation = h::body(req)?;
    Ok(h::json(
        StatusCode::CREATED,
        &create_with(app, p, input).await?,
    ))
}

/// An automation by id or name.
#[utoipa::path(get, path = "/v1/automations/{id_or_name}", tag = "automations",
    params(("id_or_name" = String, Path)),
    responses((status = 200, body = Automation), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(app: &impl Backend, p: &Principal, key: &str) -> Result<Response, ApiError> {
    let body = org_call(app, p, OrgOp::GetAutomation { key: key.into() }).await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

#[utoipa::path(patch, path = "/v1/automations/{id_or_name}", tag = "automations",
    params(("id_or_name" = String, Path)), request_body = UpdateAutomation,
    responses((status = 200, body = Automation), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: UpdateAutomation = h::body(req)?;
    Ok(h::json(
        StatusCode::OK,
        &update_with(app, p, key, input).await?,
    ))
}

/// Deletes an automation with its prompt versions and runs (sessions it started stay).
#[utoipa::path(delete, path = "/v1/automations/{id_or_name}", tag = "automations",
    params(("id_or_name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(app: &impl Backend, p: &Principal, key: &str) -> Result<Response, ApiError> {
    delete_with(app, p, key).await?;
    Ok(h::no_content())
}

/// Pauses an automation: no runs until it is resumed.
#[utoipa::path(post, path = "/v1/automations/{id_or_name}/pause", tag = "automations",
    params(("id_or_name" = String, Path)),
    responses((status = 200, body = Automation), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn pause(app: &impl Backend, p: &Principal, key: &str) -> Result<Response, ApiError> {
    Ok(h::json(
        StatusCode::OK,
        &set_paused(app, p, key, true).await?,
    ))
}

/// Resumes an automation at its next occurrence after now (missed ones are not run).
#[utoipa::path(post, path = "/v1/automations/{id_or_name}/resume", tag = "automations",
    params(("id_or_name" = String, Path)),
    responses((status = 200, body = Automation), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn resume(app: &impl Backend, p: &Principal, key: &str) -> Result<Response, ApiError> {
    Ok(h::json(
        StatusCode::OK,
        &set_paused(app, p, key, false).await?,
    ))
}

/// Runs an automation now (paused ones too); the schedule does not move. The run says whether
/// its session started and, if not, why.
#[utoipa::path(post, path = "/v1/automations/{id_or_name}/run", tag = "automations",
    params(("id_or_name" = String, Path)),
    responses((status = 201, body = Run), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn run(app: &impl Backend, p: &Principal, key: &str) -> Result<Response, ApiError> {
    Ok(h::json(StatusCode::CREATED, &run_now(app, p, key).await?))
}

/// An automation's runs, newest first.
#[utoipa::path(get, path = "/v1/automations/{id_or_name}/runs", tag = "automations",
    params(("id_or_name" = String, Path), PageQuery),
    responses((status = 200, body = Page<Run>), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn runs(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let page: PageQuery = h::query(req)?;
    let body = org_call(
        app,
        p,
        OrgOp::ListRuns {
            key: key.into(),
            page,
        },
    )
    .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

/// A prompt version (default: the active one).
#[utoipa::path(get, path = "/v1/automations/{id_or_name}/prompt", tag = "automations",
    params(("id_or_name" = String, Path), VersionQuery),
    responses((status = 200, body = PromptVersion), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn prompt(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let q: VersionQuery = h::query(req)?;
    let body = org_call(
        app,
        p,
        OrgOp::GetPromptVersion {
            key: key.into(),
            version: q.version,
        },
    )
    .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

/// Saves a new prompt version and makes it the active one (the same text changes nothing).
#[utoipa::path(put, path = "/v1/automations/{id_or_name}/prompt", tag = "automations",
    params(("id_or_name" = String, Path)), request_body = SetPrompt,
    responses((status = 200, body = PromptVersion), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn set_prompt(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: SetPrompt = h::body(req)?;
    let body = org_call(
        app,
        p,
        OrgOp::SetPrompt {
            key: key.into(),
            prompt: input.prompt,
        },
    )
    .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

/// Every kept prompt version, newest first, the active one marked.
#[utoipa::path(get, path = "/v1/automations/{id_or_name}/prompts", tag = "automations",
    params(("id_or_name" = String, Path)),
    responses((status = 200, body = Vec<PromptVersion>), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn prompts(app: &impl Backend, p: &Principal, key: &str) -> Result<Response, ApiError> {
    let body = org_call(app, p, OrgOp::ListPromptVersions { key: key.into() }).await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

/// Makes an earlier prompt version the active one again.
#[utoipa::path(post, path = "/v1/automations/{id_or_name}/prompt/rollback", tag = "automations",
    params(("id_or_name" = String, Path)), request_body = Rollback,
    responses((status = 200, body = PromptVersion), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn rollback(
    app: &impl Backend,
    p: &Principal,
    key: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let input: Rollback = h::body(req)?;
    let body = org_call(
        app,
        p,
        OrgOp::RollbackPrompt {
            key: key.into(),
            version: input.version,
        },
    )
    .await?;
    Ok(h::json_bytes(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::run_branch;

    #[test]
    fn each_run_gets_its_own_valid_branch() {
        let id = "run_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d";
        assert_eq!(
            run_branch("Nightly triage!", id),
            "tether/auto-nightly-triage-6a7b8c9d"
        );
        assert_eq!(run_branch("!!!", id), "tether/auto-6a7b8c9d");
        let long = run_branch(&"x".repeat(500), id);
        assert!(long.len() < 70, "{long}");
        for name in ["Nightly triage!", "!!!", "a..b", "ünïcödé ✓"] {
            assert!(
                tether_durable::validate::branch("b", &run_branch(name, id)).is_ok(),
                "{name}"
            );
        }
    }
}
