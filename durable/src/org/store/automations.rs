//! Scheduled automations: their rows, prompt versions and runs, and the claim the cron makes.

use super::sessions::clip;
use super::{Store, decode_cursor, page_limit, paginate};
use crate::automation::{
    Automation, AutomationPatch, Claim, DISPATCH_TIMEOUT_MS, MAX_AUTOMATIONS, MAX_PROMPT_VERSIONS,
    MAX_RUNS, NewAutomation, PromptVersion, Run, RunOutcome, RunStatus, Schedule, ScheduleState,
    Target, Trigger,
};
use crate::error::StoreError;
use crate::org::model::{Page, PageQuery};
use crate::sql::{Sql, SqlValue};
use crate::time::rfc3339;
use crate::{ids, validate};
use serde::Deserialize;

/// An automation prompt's most characters.
pub const PROMPT_MAX: usize = 20_000;
/// Automations one tick claims per org (the rest are due on the next tick).
pub const CLAIM_MAX: i64 = 25;

#[derive(Deserialize)]
struct AutomationRow {
    id: String,
    name: String,
    rrule: String,
    timezone: String,
    starts_at: String,
    anchor: String,
    project_id: String,
    host: String,
    agent: String,
    base_branch: Option<String>,
    prompt_version: i64,
    prompt: String,
    paused: i64,
    next_run_at: Option<i64>,
    last_run_at: Option<i64>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl AutomationRow {
    fn target(&self) -> Target {
        Target {
            project_id: self.project_id.clone(),
            host: self.host.clone(),
            agent: self.agent.clone(),
            base_branch: self.base_branch.clone(),
        }
    }
}

impl From<AutomationRow> for Automation {
    fn from(r: AutomationRow) -> Self {
        Self {
            target: r.target(),
            id: r.id,
            name: r.name,
            rrule: r.rrule,
            timezone: r.timezone,
            starts_at: r.starts_at,
            prompt: r.prompt,
            prompt_version: r.prompt_version,
            paused: r.paused != 0,
            next_run_at: r.next_run_at.map(rfc3339),
            last_run_at: r.last_run_at.map(rfc3339),
            created_by: r.created_by,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

const AUTOMATION_SELECT: &str = "SELECT a.*, p.prompt FROM automations a
    JOIN automation_prompts p ON p.automation_id = a.id AND p.version = a.prompt_version";

#[derive(Deserialize)]
struct PromptRow {
    version: i64,
    prompt: String,
    active: i64,
    created_by: String,
    created_at: i64,
}

impl From<PromptRow> for PromptVersion {
    fn from(r: PromptRow) -> Self {
        Self {
            version: r.version,
            prompt: r.prompt,
            active: r.active != 0,
            created_by: r.created_by,
            created_at: rfc3339(r.created_at),
        }
    }
}

#[derive(Deserialize)]
struct RunRow {
    id: String,
    automation_id: String,
    /// How it came about (`trigger` is an SQL keyword).
    via: String,
    scheduled_for: Option<i64>,
    status: String,
    session_id: Option<String>,
    error: Option<String>,
    prompt_version: i64,
    created_at: i64,
    finished_at: Option<i64>,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Self {
        Self {
            id: r.id,
            automation_id: r.automation_id,
            trigger: if r.via == "manual" {
                Trigger::Manual
            } else {
                Trigger::Schedule
            },
            scheduled_for: r.scheduled_for.map(rfc3339),
            status: match r.status.as_str() {
                "dispatching" => RunStatus::Dispatching,
                "dispatched" => RunStatus::Dispatched,
                _ => RunStatus::Failed,
            },
            session_id: r.session_id,
            error: r.error,
            prompt_version: r.prompt_version,
            created_at: rfc3339(r.created_at),
            finished_at: r.finished_at.map(rfc3339),
        }
    }
}

fn prompt_text(prompt: &str) -> Result<String, StoreError> {
    let p = validate::text("prompt", prompt, PROMPT_MAX)?;
    if p.trim().is_empty() {
        return Err(StoreError::invalid("prompt", "must not be empty"));
    }
    Ok(p)
}

fn host_key(host: &str) -> Result<String, StoreError> {
    if host == "any" || ids::is_valid(ids::HOST, host) {
        Ok(host.to_owned())
    } else {
        Err(StoreError::invalid("host", "a host id (hst_...) or `any`"))
    }
}

/// A rule, zone and start checked together: the schedule, the rule as stored, the start as
/// stored, and the first run after `now` (`None`: the rule has no occurrence after now).
struct Checked {
    rule: String,
    start: String,
    next: Option<i64>,
}

fn check_schedule(
    rule: &str,
    timezone: &str,
    starts_at: Option<&str>,
    now: i64,
) -> Result<Checked, StoreError> {
    let schedule = Schedule::parse(rule, timezone)?;
    let start = match starts_at {
        Some(s) => Schedule::parse_local("starts_at", s)?,
        // Now, to the minute, in the zone.
        None => schedule
            .local_of(now - now.rem_euclid(60_000))
            .ok_or_else(|| StoreError::invalid("starts_at", "out of range"))?,
    };
    let next = schedule.next_after(start, now)?;
    if next.is_none() {
        return Err(StoreError::invalid(
            "rrule",
            "the rule has no occurrence after now (see its UNTIL and starts_at)",
        ));
    }
    Ok(Checked {
        rule: schedule.rule_text(),
        start: Schedule::format_local(start),
        next,
    })
}

impl<S: Sql> Store<'_, S> {
    fn automation_row(&self, key: &str) -> Result<AutomationRow, StoreError> {
        let (cond, param): (&str, SqlValue) = if key.starts_with("aut_") {
            ids::check(ids::AUTOMATION, "id", key)?;
            ("a.id = ?", key.into())
        } else {
            ("a.name = ? COLLATE NOCASE", key.into())
        };
        self.one(
            &format!("{AUTOMATION_SELECT} WHERE {cond}"),
            &[param],
            "automation",
        )
    }

    /// An automation by id or name.
    pub(super) fn automation(&self, key: &str) -> Result<Automation, StoreError> {
        self.automation_row(key).map(Into::into)
    }

    pub(super) fn list_automations(&self, q: &PageQuery) -> Result<Page<Automation>, StoreError> {
        let limit = page_limit(q.limit)?;
        let after = q
            .cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .unwrap_or_default();
        let rows: Vec<AutomationRow> = self.sql.query(
            &format!("{AUTOMATION_SELECT} WHERE a.id > ? ORDER BY a.id LIMIT ?"),
            &[after.into(), (limit + 1).into()],
        )?;
        Ok(paginate(rows, limit, |r: &AutomationRow| r.id.clone()))
    }

    fn bump_schedule(&self) -> Result<(), StoreError> {
        self.sql.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'automation_schedule'",
            &[],
        )?;
        Ok(())
    }

    /// The earliest run due and the schedule's version, for the directory's index.
    pub(super) fn schedule_state(&self) -> Result<ScheduleState, StoreError> {
        #[derive(Deserialize)]
        struct Due {
            n: Option<i64>,
        }
        let next: Option<Due> = self.sql.query_one(
            "SELECT min(next_run_at) AS n FROM automations WHERE paused = 0",
            &[],
        )?;
        Ok(ScheduleState {
            next_due_ms: next.and_then(|d| d.n),
            version: self.count(
                "SELECT value AS n FROM counters WHERE name = 'automation_schedule'",
                &[],
            )?,
        })
    }

    pub(super) fn create_automation(
        &self,
        a: NewAutomation,
        actor: &str,
        now: i64,
    ) -> Result<Automation, StoreError> {
        let name = validate::line("name", &a.name, validate::NAME_MAX)?;
        let prompt = prompt_text(&a.prompt)?;
        let host = host_key(&a.target.host)?;
        let base_branch = a
            .target
            .base_branch
            .as_deref()
            .map(|b| validate::branch("base_branch", b))
            .transpose()?;
        self.referenced(
            "project",
            ids::PROJECT,
            "projects",
            "project",
            &a.target.project_id,
        )?;
        let checked = check_schedule(&a.rrule, &a.timezone, a.starts_at.as_deref(), now)?;
        validate::cap(
            self.count("SELECT count(*) AS n FROM automations", &[])?,
            MAX_AUTOMATIONS,
            "automations per org",
        )?;
        self.name_taken("automations", "an automation", &name, "")?;
        let id = ids::new(ids::AUTOMATION);
        self.sql.execute(
            "INSERT INTO automations (id, name, rrule, timezone, starts_at, anchor, project_id,
                 host, agent, base_branch, prompt_version, paused, next_run_at, created_by,
                 created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
            &[
                id.as_str().into(),
                name.into(),
                checked.rule.into(),
                a.timezone.into(),
                checked.start.as_str().into(),
                checked.start.into(),
                a.target.project_id.into(),
                host.into(),
                a.target.agent.into(),
                base_branch.into(),
                i64::from(a.paused).into(),
                (if a.paused { None } else { checked.next }).into(),
                actor.into(),
                now.into(),
                now.into(),
            ],
        )?;
        self.sql.execute(
            "INSERT INTO automation_prompts (automation_id, version, prompt, created_by, created_at)
             VALUES (?, 1, ?, ?, ?)",
            &[id.as_str().into(), prompt.into(), actor.into(), now.into()],
        )?;
        self.bump_schedule()?;
        self.automation(&id)
    }

    pub(super) fn update_automation(
        &self,
        key: &str,
        patch: AutomationPatch,
        now: i64,
    ) -> Result<Automation, StoreError> {
        let mut r = self.automation_row(key)?;
        if let Some(name) = patch.name {
            r.name = validate::line("name", &name, validate::NAME_MAX)?;
            self.name_taken("automations", "an automation", &r.name, &r.id)?;
        }
        if let Some(p) = patch.project_id {
            self.referenced("project", ids::PROJECT, "projects", "project", &p)?;
            r.project_id = p;
        }
        if let Some(h) = patch.host {
            r.host = host_key(&h)?;
        }
        if let Some(a) = patch.agent {
            r.agent = a;
        }
        if let Some(b) = patch.base_branch {
            r.base_branch = b
                .as_deref()
                .map(|b| validate::branch("base_branch", b))
                .transpose()?;
        }
        let reschedule =
            patch.rrule.is_some() || patch.timezone.is_some() || patch.starts_at.is_some();
        if reschedule {
            let rule = patch.rrule.unwrap_or(r.rrule);
            let timezone = patch.timezone.unwrap_or(r.timezone);
            let starts_at = patch.starts_at.unwrap_or(r.starts_at);
            let checked = check_schedule(&rule, &timezone, Some(&starts_at), now)?;
            r.rrule = checked.rule;
            r.timezone = timezone;
            r.starts_at = checked.start.clone();
            r.anchor = checked.start;
            r.next_run_at = if r.paused != 0 { None } else { checked.next };
        }
        self.sql.execute(
            "UPDATE automations SET name = ?, rrule = ?, timezone = ?, starts_at = ?, anchor = ?,
                 project_id = ?, host = ?, agent = ?, base_branch = ?, next_run_at = ?,
                 updated_at = ?
             WHERE id = ?",
            &[
                r.name.into(),
                r.rrule.into(),
                r.timezone.into(),
                r.starts_at.into(),
                r.anchor.into(),
                r.project_id.into(),
                r.host.into(),
                r.agent.into(),
                r.base_branch.into(),
                r.next_run_at.into(),
                now.into(),
                r.id.as_str().into(),
            ],
        )?;
        self.bump_schedule()?;
        self.automation(&r.id)
    }

    pub(super) fn delete_automation(&self, key: &str) -> Result<(), StoreError> {
        let r = self.automation_row(key)?;
        for table in ["automation_runs", "automation_prompts"] {
            self.sql.execute(
                &format!("DELETE FROM {table} WHERE automation_id = ?"),
                &[r.id.as_str().into()],
            )?;
        }
        self.sql
            .execute("DELETE FROM automations WHERE id = ?", &[r.id.into()])?;
        self.bump_schedule()
    }

    /// Pauses (no more runs) or resumes (the next occurrence after now; the ones missed while
    /// paused are not run).
    pub(super) fn set_paused(
        &self,
        key: &str,
        paused: bool,
        now: i64,
    ) -> Result<Automation, StoreError> {
        let r = self.automation_row(key)?;
        let next = if paused {
            None
        } else {
            let schedule = Schedule::parse(&r.rrule, &r.timezone)?;
            schedule.next_after(Schedule::parse_local("starts_at", &r.anchor)?, now)?
        };
        self.sql.execute(
            "UPDATE automations SET paused = ?, next_run_at = ?, updated_at = ? WHERE id = ?",
            &[
                i64::from(paused).into(),
                next.into(),
                now.into(),
                r.id.as_str().into(),
            ],
        )?;
        self.bump_schedule()?;
        self.automation(&r.id)
    }

    // ---- prompts ----

    fn prompt_rows(&self, id: &str, version: Option<i64>) -> Result<Vec<PromptRow>, StoreError> {
        Ok(self.sql.query(
            "SELECT p.version, p.prompt, p.version = a.prompt_version AS active, p.created_by,
                 p.created_at
             FROM automation_prompts p JOIN automations a ON a.id = p.automation_id
             WHERE p.automation_id = ? AND (? IS NULL OR p.version = ?)
             ORDER BY p.version DESC",
            &[id.into(), version.into(), version.into()],
        )?)
    }

    /// Every kept version, newest first.
    pub(super) fn prompt_versions(&self, key: &str) -> Result<Vec<PromptVersion>, StoreError> {
        let r = self.automation_row(key)?;
        Ok(self
            .prompt_rows(&r.id, None)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// One version (default: the active one).
    pub(super) fn prompt_version(
        &self,
        key: &str,
        version: Option<i64>,
    ) -> Result<PromptVersion, StoreError> {
        let r = self.automation_row(key)?;
        self.prompt_rows(&r.id, Some(version.unwrap_or(r.prompt_version)))?
            .pop()
            .map(Into::into)
            .ok_or(StoreError::NotFound {
                what: "prompt version",
            })
    }

    /// A new version becomes the active one; the same text as the active one changes nothing.
    /// The oldest inactive versions past [`MAX_PROMPT_VERSIONS`] are dropped.
    pub(super) fn set_prompt(
        &self,
        key: &str,
        prompt: &str,
        actor: &str,
        now: i64,
    ) -> Result<PromptVersion, StoreError> {
        let r = self.automation_row(key)?;
        let prompt = prompt_text(prompt)?;
        if prompt == r.prompt {
            return self.prompt_version(&r.id, None);
        }
        let version = self.count(
            "SELECT max(version) + 1 AS n FROM automation_prompts WHERE automation_id = ?",
            &[r.id.as_str().into()],
        )?;
        self.sql.execute(
            "INSERT INTO automation_prompts (automation_id, version, prompt, created_by, created_at)
             VALUES (?, ?, ?, ?, ?)",
            &[
                r.id.as_str().into(),
                version.into(),
                prompt.into(),
                actor.into(),
                now.into(),
            ],
        )?;
        self.activate(&r.id, version, now)?;
        self.sql.execute(
            "DELETE FROM automation_prompts WHERE automation_id = ?1 AND version != ?2
                 AND version NOT IN (SELECT version FROM automation_prompts
                     WHERE automation_id = ?1 ORDER BY version DESC LIMIT ?3)",
            &[
                r.id.as_str().into(),
                version.into(),
                MAX_PROMPT_VERSIONS.into(),
            ],
        )?;
        self.prompt_version(&r.id, None)
    }

    fn activate(&self, id: &str, version: i64, now: i64) -> Result<(), StoreError> {
        self.sql.execute(
            "UPDATE automations SET prompt_version = ?, updated_at = ? WHERE id = ?",
            &[version.into(), now.into(), id.into()],
        )?;
        Ok(())
    }

    /// An earlier version becomes the active one again (later versions are kept).
    pub(super) fn rollback_prompt(
        &self,
        key: &str,
        version: i64,
        now: i64,
    ) -> Result<PromptVersion, StoreError> {
        let r = self.automation_row(key)?;
        if self.prompt_rows(&r.id, Some(version))?.is_empty() {
            return Err(StoreError::invalid(
                "version",
                format!("automation {} has no prompt version {version}", r.name),
            ));
        }
        self.activate(&r.id, version, now)?;
        self.prompt_version(&r.id, None)
    }

    // ---- runs ----

    fn insert_run(
        &self,
        r: &AutomationRow,
        trigger: Trigger,
        scheduled_for: Option<i64>,
        now: i64,
    ) -> Result<Claim, StoreError> {
        let id = ids::new(ids::RUN);
        self.sql.execute(
            "INSERT INTO automation_runs (id, automation_id, via, scheduled_for, status,
                 prompt_version, created_at)
             VALUES (?, ?, ?, ?, 'dispatching', ?, ?)",
            &[
                id.as_str().into(),
                r.id.as_str().into(),
                (if trigger == Trigger::Manual {
                    "manual"
                } else {
                    "schedule"
                })
                .into(),
                scheduled_for.into(),
                r.prompt_version.into(),
                now.into(),
            ],
        )?;
        self.sql.execute(
            "DELETE FROM automation_runs WHERE automation_id = ?1 AND id NOT IN
                 (SELECT id FROM automation_runs WHERE automation_id = ?1 ORDER BY id DESC LIMIT ?2)",
            &[r.id.as_str().into(), MAX_RUNS.into()],
        )?;
        Ok(Claim {
            run: self.run(&id)?,
            name: r.name.clone(),
            target: r.target(),
            prompt: r.prompt.clone(),
        })
    }

    fn run(&self, id: &str) -> Result<Run, StoreError> {
        ids::check(ids::RUN, "run_id", id)?;
        self.one::<RunRow>(
            "SELECT * FROM automation_runs WHERE id = ?",
            &[id.into()],
            "run",
        )
        .map(Into::into)
    }

    /// Claims what is due at `at` (the cron's tick): for each automation, one run for its
    /// latest missed occurrence, and `next_run_at` moved past `at`, in this one transaction.
    /// Runs whose dispatch never reported back within [`DISPATCH_TIMEOUT_MS`] fail first.
    pub(super) fn claim_due(&self, at: i64) -> Result<Vec<Claim>, StoreError> {
        self.sql.execute(
            "UPDATE automation_runs SET status = 'failed', finished_at = ?,
                 error = 'dispatch_lost: the Worker did not report how the dispatch went'
             WHERE status = 'dispatching' AND created_at < ?",
            &[at.into(), (at - DISPATCH_TIMEOUT_MS).into()],
        )?;
        let due: Vec<AutomationRow> = self.sql.query(
            &format!(
                "{AUTOMATION_SELECT} WHERE a.paused = 0 AND a.next_run_at <= ?
                 ORDER BY a.next_run_at LIMIT ?"
            ),
            &[at.into(), CLAIM_MAX.into()],
        )?;
        let mut claims = Vec::with_capacity(due.len());
        for r in due {
            let Some(scheduled) = r.next_run_at else {
                continue;
            };
            let schedule = Schedule::parse(&r.rrule, &r.timezone)?;
            let anchor = schedule
                .local_of(scheduled)
                .ok_or_else(|| StoreError::invalid("next_run_at", "out of range"))?;
            // A rule that cannot go on (it should not happen: it held when saved) ends here
            // rather than fail every tick.
            let next = schedule.next_after(anchor, at).unwrap_or(None);
            self.sql.execute(
                "UPDATE automations SET anchor = ?, next_run_at = ?, last_run_at = ? WHERE id = ?",
                &[
                    Schedule::format_local(anchor).into(),
                    next.into(),
                    at.into(),
                    r.id.as_str().into(),
                ],
            )?;
            claims.push(self.insert_run(&r, Trigger::Schedule, Some(scheduled), at)?);
        }
        if !claims.is_empty() {
            self.bump_schedule()?;
        }
        Ok(claims)
    }

    /// A run now, on request (paused automations too); the schedule does not move.
    pub(super) fn start_manual_run(&self, key: &str, now: i64) -> Result<Claim, StoreError> {
        let r = self.automation_row(key)?;
        self.sql.execute(
            "UPDATE automations SET last_run_at = ? WHERE id = ?",
            &[now.into(), r.id.as_str().into()],
        )?;
        self.insert_run(&r, Trigger::Manual, None, now)
    }

    /// Records how a claimed run's dispatch went (once).
    pub(super) fn finish_run(
        &self,
        run_id: &str,
        outcome: RunOutcome,
        now: i64,
    ) -> Result<Run, StoreError> {
        let run = self.run(run_id)?;
        if run.status != RunStatus::Dispatching {
            return Err(StoreError::Conflict {
                code: "run_finished",
                message: "this run's outcome is already recorded".into(),
            });
        }
        let (status, session, error) = match outcome {
            RunOutcome::Dispatched { session_id } => ("dispatched", Some(session_id), None),
            RunOutcome::Failed { error } => ("failed", None, clip(Some(error), 2_000)),
        };
        self.sql.execute(
            "UPDATE automation_runs SET status = ?, session_id = ?, error = ?, finished_at = ?
             WHERE id = ?",
            &[
                status.into(),
                session.into(),
                error.into(),
                now.into(),
                run_id.into(),
            ],
        )?;
        self.run(run_id)
    }

    /// An automation's runs, newest first.
    pub(super) fn list_runs(&self, key: &str, q: &PageQuery) -> Result<Page<Run>, StoreError> {
        let r = self.automation_row(key)?;
        let limit = page_limit(q.limit)?;
        let before = match &q.cursor {
            Some(c) => decode_cursor(c)?,
            None => "~".to_owned(),
        };
        let rows: Vec<RunRow> = self.sql.query(
            "SELECT * FROM automation_runs WHERE automation_id = ? AND id < ?
             ORDER BY id DESC LIMIT ?",
            &[r.id.into(), before.into(), (limit + 1).into()],
        )?;
        Ok(paginate(rows, limit, |r: &RunRow| r.id.clone()))
    }
}
