//! The org store: every [`OrgOp`] as SQL over [`Sql`], each call in one transaction.

mod approvals;
mod automations;
mod changes;
mod mcp_audit;
mod policies;
mod sessions;

use super::model::{
    CreateProject, CreateTask, CreateTaskStatus, Page, PageQuery, Priority, Project,
    StatusCategory, Task, TaskQuery, TaskStatus, TaskStatusRef, UpdateProject, UpdateTask,
    UpdateTaskStatus,
};
use super::{OrgCall, OrgOp, schema};
use crate::automation::Scheduled;
use crate::error::StoreError;
use crate::mcp::MAX_CALLS;
use crate::policy::MAX_DECISIONS;
use crate::sql::{Sql, SqlValue};
use crate::stream::MAX_STREAMS_PER_ORG;
use crate::time::rfc3339;
use crate::{ids, validate};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Caps on how many rows an org may hold.
pub const MAX_PROJECTS: i64 = 1_000;
pub const MAX_STATUSES: i64 = 50;
pub const MAX_TASKS: i64 = 500_000;

/// The org store over one SQLite database.
pub struct Store<'a, S> {
    sql: &'a S,
}

#[derive(Deserialize)]
struct ProjectRow {
    id: String,
    name: String,
    repo_url: Option<String>,
    default_branch: String,
    created_at: i64,
    updated_at: i64,
}

impl From<ProjectRow> for Project {
    fn from(r: ProjectRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            repo_url: r.repo_url,
            default_branch: r.default_branch,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Deserialize)]
struct StatusRow {
    id: String,
    name: String,
    category: StatusCategory,
    color: String,
    position: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<StatusRow> for TaskStatus {
    fn from(r: StatusRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            category: r.category,
            color: r.color,
            position: r.position,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Deserialize)]
struct TaskRow {
    id: String,
    number: i64,
    slug: String,
    title: String,
    description: String,
    priority: Priority,
    status_id: String,
    status_name: String,
    status_category: StatusCategory,
    project_id: Option<String>,
    assignee_id: Option<String>,
    labels: String,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Self {
        Self {
            id: r.id,
            number: r.number,
            slug: r.slug,
            title: r.title,
            description: r.description,
            priority: r.priority,
            status: TaskStatusRef {
                id: r.status_id,
                name: r.status_name,
                category: r.status_category,
            },
            project_id: r.project_id,
            assignee_id: r.assignee_id,
            labels: serde_json::from_str(&r.labels).unwrap_or_default(),
            created_by: r.created_by,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Deserialize)]
struct Count {
    n: i64,
}

const TASK_SELECT: &str = "SELECT t.id, t.number, t.slug, t.title, t.description, t.priority,
    t.status_id, s.name AS status_name, s.category AS status_category, t.project_id,
    t.assignee_id, t.labels, t.created_by, t.created_at, t.updated_at
    FROM tasks t JOIN task_statuses s ON s.id = t.status_id";

const STATUS_ORDER: &str = "ORDER BY CASE category WHEN 'backlog' THEN 0 WHEN 'unstarted' THEN 1
    WHEN 'started' THEN 2 WHEN 'completed' THEN 3 ELSE 4 END, position, id";

/// The answer's JSON, serialised once, straight from the typed value: the Worker passes these
/// bytes through to the client.
fn json<T: Serialize>(v: T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(&v)?)
}

fn page_limit(limit: Option<u32>) -> Result<i64, StoreError> {
    match limit.unwrap_or(validate::PAGE_DEFAULT) {
        n @ 1..=validate::PAGE_MAX => Ok(i64::from(n)),
        _ => Err(StoreError::BadRequest {
            field: "limit".into(),
            message: format!("must be between 1 and {}", validate::PAGE_MAX),
        }),
    }
}

fn decode_cursor(cursor: &str) -> Result<String, StoreError> {
    super::model::cursor::decode(cursor).ok_or_else(|| StoreError::BadRequest {
        field: "cursor".into(),
        message: "is not a cursor this API issued".into(),
    })
}

/// Splits `rows` (fetched with one extra) into a page and the cursor of the next one.
fn paginate<T, R>(mut rows: Vec<R>, limit: i64, key: impl Fn(&R) -> String) -> Page<T>
where
    R: Into<T>,
{
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if more {
        rows.last().map(|r| super::model::cursor::encode(&key(r)))
    } else {
        None
    };
    Page {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }
}

fn is_slug(key: &str) -> bool {
    key.split_once('-').is_some_and(|(prefix, num)| {
        (2..=6).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_alphabetic())
            && (1..=12).contains(&num.len())
            && num.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Where-clause for a task id or slug.
fn task_key(key: &str) -> Result<(&'static str, SqlValue), StoreError> {
    if key.starts_with("tsk_") {
        ids::check(ids::TASK, "id", key)?;
        Ok(("t.id = ?", key.into()))
    } else if is_slug(key) {
        Ok(("t.slug = ?", key.into()))
    } else {
        Err(StoreError::BadRequest {
            field: "id".into(),
            message: "expected a task id (tsk_...) or a slug such as TET-12".into(),
        })
    }
}

impl<'a, S: Sql> Store<'a, S> {
    /// Opens the store, migrating the schema first.
    pub fn open(sql: &'a S) -> Result<Self, StoreError> {
        if schema::migrate(sql)? == schema::State::Destroyed {
            return Err(StoreError::NotFound { what: "org" });
        }
        Ok(Self { sql })
    }

    /// Wraps a database that [`Store::open`] has already migrated and found live. The Durable
    /// Object opens once per instance instead of re-checking the schema on every call.
    pub fn migrated(sql: &'a S) -> Self {
        Self { sql }
    }

    /// Carries out one call atomically and answers its result as JSON.
    pub fn call(&self, call: OrgCall, now: i64) -> Result<Vec<u8>, StoreError> {
        let destroys = matches!(call.op, OrgOp::Destroy);
        self.sql.transaction(|| {
            let answer = self.dispatch(call, now)?;
            if !destroys {
                self.compact_if_due(now)?;
            }
            Ok(answer)
        })
    }

    fn dispatch(&self, call: OrgCall, now: i64) -> Result<Vec<u8>, StoreError> {
        let OrgCall { org_id, actor, op } = call;
        match op {
            OrgOp::ListProjects(q) => json(self.list_projects(&q)?),
            OrgOp::GetProject { id } => json(self.project(&id)?),
            OrgOp::FindProject { key } => json(self.project_required(&key)?),
            OrgOp::CreateProject(input) => json(self.create_project(input, now)?),
            OrgOp::UpdateProject { id, patch } => json(self.update_project(&id, patch, now)?),
            OrgOp::DeleteProject { id } => self.delete_project(&id).and_then(json),
            OrgOp::ListStatuses => json(self.statuses()?),
            OrgOp::CreateStatus(input) => json(self.create_status(input, now)?),
            OrgOp::UpdateStatus { id, patch } => json(self.update_status(&id, patch, now)?),
            OrgOp::DeleteStatus { id, replace_with } => self
                .delete_status(&id, replace_with.as_deref(), now)
                .and_then(json),
            OrgOp::ListTasks(q) => json(self.list_tasks(&q)?),
            OrgOp::GetTask { key } => json(self.task(&key)?),
            OrgOp::CreateTask { task, prefix } => {
                json(self.create_task(task, &prefix, &actor, now)?)
            }
            OrgOp::UpdateTask { key, patch } => json(self.update_task(&key, patch, now)?),
            OrgOp::DeleteTask { key } => self.delete_task(&key).and_then(json),
            OrgOp::UnassignMember { member_id } => {
                let n = self.sql.execute(
                    "UPDATE tasks SET assignee_id = NULL, updated_at = ? WHERE assignee_id = ?",
                    &[now.into(), member_id.into()],
                )?;
                json(serde_json::json!({ "unassigned": n }))
            }
            OrgOp::RegisterStream { path, incarnation } => {
                let known = self.count(
                    "SELECT count(*) AS n FROM streams WHERE path = ?",
                    &[path.as_str().into()],
                )? > 0;
                if known {
                    self.sql.execute(
                        "UPDATE streams SET incarnation = ? WHERE path = ?",
                        &[incarnation.into(), path.into()],
                    )?;
                } else {
                    validate::cap(
                        self.count("SELECT count(*) AS n FROM streams", &[])?,
                        MAX_STREAMS_PER_ORG,
                        "streams per org",
                    )?;
                    self.sql.execute(
                        "INSERT INTO streams (path, incarnation, created_at) VALUES (?, ?, ?)",
                        &[path.into(), incarnation.into(), now.into()],
                    )?;
                }
                json(())
            }
            OrgOp::UnregisterStream { path, incarnation } => {
                self.sql.execute(
                    "DELETE FROM streams WHERE path = ? AND incarnation = ?",
                    &[path.into(), incarnation.into()],
                )?;
                json(())
            }
            OrgOp::LinkProject {
                project,
                host_id,
                path,
                create,
            } => json(self.link_project(&project, &host_id, &path, create, now)?),
            OrgOp::UnlinkProject { project, host_id } => {
                self.unlink_project(&project, &host_id).and_then(json)
            }
            OrgOp::ListLinks { project, host_id } => {
                json(self.list_links(project.as_deref(), host_id.as_deref())?)
            }
            OrgOp::CreateSession(s) => json(self.create_session(s, &actor, now)?),
            OrgOp::GetSession { id } => json(self.session(&id, now)?),
            OrgOp::ListSessions(q) => json(self.list_sessions(&q, now)?),
            OrgOp::UpdateSession {
                id,
                host_id,
                update,
            } => json(self.update_session(&id, host_id.as_deref(), update, now)?),
            OrgOp::ReportProgress {
                id,
                host_id,
                report,
            } => json(self.report_progress(&id, &host_id, report, now)?),
            OrgOp::SetSessionTitle {
                id,
                host_id,
                report,
            } => json(self.set_title(&id, &host_id, report, now)?),
            OrgOp::RecordApproval {
                session_id,
                request_id,
                decision,
                reason,
                role,
            } => {
                let answer = approvals::NewApproval {
                    session_id: &session_id,
                    request_id: &request_id,
                    decision,
                    reason: reason.as_deref(),
                    member: &actor,
                    role: &role,
                };
                json(self.record_approval(answer, now)?)
            }
            OrgOp::ListApprovals { session_id } => json(self.list_approvals(&session_id, now)?),
            OrgOp::ListAutomations(q) => json(self.list_automations(&q)?),
            OrgOp::GetAutomation { key } => json(self.automation(&key)?),
            OrgOp::CreateAutomation(a) => json(self.create_automation(a, &actor, now)?),
            OrgOp::UpdateAutomation { key, patch } => {
                json(self.update_automation(&key, patch, now)?)
            }
            OrgOp::DeleteAutomation { key } => self.delete_automation(&key).and_then(json),
            OrgOp::SetAutomationPaused { key, paused } => json(self.set_paused(&key, paused, now)?),
            OrgOp::ListPromptVersions { key } => json(self.prompt_versions(&key)?),
            OrgOp::GetPromptVersion { key, version } => json(self.prompt_version(&key, version)?),
            OrgOp::SetPrompt { key, prompt } => json(self.set_prompt(&key, &prompt, &actor, now)?),
            OrgOp::RollbackPrompt { key, version } => {
                json(self.rollback_prompt(&key, version, now)?)
            }
            OrgOp::ClaimDueAutomations { at } => json(self.claim_due(at)?),
            OrgOp::StartManualRun { key } => json(self.start_manual_run(&key, now)?),
            OrgOp::FinishRun { run_id, outcome } => json(self.finish_run(&run_id, outcome, now)?),
            OrgOp::ListRuns { key, page } => json(self.list_runs(&key, &page)?),
            OrgOp::WithSchedule(op) => {
                let answer = self.dispatch(
                    OrgCall {
                        org_id,
                        actor,
                        op: *op,
                    },
                    now,
                )?;
                let answer: Box<serde_json::value::RawValue> = serde_json::from_slice(&answer)?;
                json(Scheduled {
                    answer,
                    schedule: self.schedule_state()?,
                })
            }
            OrgOp::ListPolicies => json(self.list_policies()?),
            OrgOp::GetPolicy { name } => json(self.policy(&name)?),
            OrgOp::PutPolicy(p) => json(self.put_policy(p, &actor, now)?),
            OrgOp::UpdatePolicy { name, patch } => json(self.update_policy(&name, patch, now)?),
            OrgOp::DeletePolicy { name } => self.delete_policy(&name).and_then(json),
            OrgOp::PolicyWasm { name, sha256 } => json(self.policy_wasm(&name, sha256.as_deref())?),
            OrgOp::RecordDecisions { host_id, decisions } => {
                json(self.record_decisions(&host_id, decisions, now, MAX_DECISIONS)?)
            }
            OrgOp::ListDecisions(q) => json(self.list_decisions(&q)?),
            OrgOp::RecordToolCall(report) => self
                .record_tool_call(&actor, report, now, MAX_CALLS)
                .and_then(json),
            OrgOp::ListToolCalls(q) => json(self.list_tool_calls(&q)?),
            OrgOp::PutHost(host) => self.put_host(&host).and_then(json),
            OrgOp::SyncHosts { hosts } => self.sync_hosts(&hosts).and_then(json),
            OrgOp::CompactChanges { keep } => json(self.compact(keep, now)?),
            OrgOp::Destroy => {
                self.sql.execute_script(
                    "DROP TABLE automation_runs; DROP TABLE automation_prompts; DROP TABLE automations;
                     DROP TABLE mcp_calls; DROP TABLE policy_decisions; DROP TABLE org_policies;
                     DROP TABLE approvals; DROP TABLE sessions; DROP TABLE project_links; DROP TABLE streams; DROP TABLE tasks; DROP TABLE task_statuses; DROP TABLE projects;
                     DROP TABLE counters; DROP TABLE hosts; DROP TABLE changes; DELETE FROM meta;
                     INSERT INTO meta (key, value) VALUES ('destroyed', '1');",
                )?;
                json(())
            }
        }
    }

    fn count(&self, sql: &str, params: &[SqlValue]) -> Result<i64, StoreError> {
        Ok(self.sql.query_one::<Count>(sql, params)?.map_or(0, |c| c.n))
    }

    fn one<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
        what: &'static str,
    ) -> Result<T, StoreError> {
        self.sql
            .query_one(sql, params)?
            .ok_or(StoreError::NotFound { what })
    }

    // ---- projects ----

    fn list_projects(&self, q: &PageQuery) -> Result<Page<Project>, StoreError> {
        let limit = page_limit(q.limit)?;
        let after = q
            .cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .unwrap_or_default();
        let rows: Vec<ProjectRow> = self.sql.query(
            "SELECT * FROM projects WHERE id > ? ORDER BY id LIMIT ?",
            &[after.into(), (limit + 1).into()],
        )?;
        Ok(paginate(rows, limit, |r: &ProjectRow| r.id.clone()))
    }

    fn project(&self, id: &str) -> Result<Project, StoreError> {
        ids::check(ids::PROJECT, "id", id)?;
        self.one::<ProjectRow>(
            "SELECT * FROM projects WHERE id = ?",
            &[id.into()],
            "project",
        )
        .map(Into::into)
    }

    /// 409 `name_taken` when another row of `table` (not `except`) has the name, any case.
    fn name_taken(
        &self,
        table: &str,
        what: &str,
        name: &str,
        except: &str,
    ) -> Result<(), StoreError> {
        let n = self.count(
            &format!("SELECT count(*) AS n FROM {table} WHERE name = ? COLLATE NOCASE AND id != ?"),
            &[name.into(), except.into()],
        )?;
        if n > 0 {
            return Err(StoreError::Conflict {
                code: "name_taken",
                message: format!("{what} named {name:?} already exists"),
            });
        }
        Ok(())
    }

    fn create_project(&self, input: CreateProject, now: i64) -> Result<Project, StoreError> {
        let name = validate::line("name", &input.name, validate::NAME_MAX)?;
        let repo_url = input
            .repo_url
            .as_deref()
            .map(|u| validate::repo_url("repo_url", u))
            .transpose()?;
        let branch = validate::branch(
            "default_branch",
            input.default_branch.as_deref().unwrap_or("main"),
        )?;
        let projects = self.count("SELECT count(*) AS n FROM projects", &[])?;
        validate::cap(projects, MAX_PROJECTS, "projects per org")?;
        self.name_taken("projects", "a project", &name, "")?;
        let id = ids::new(ids::PROJECT);
        self.sql.execute(
            "INSERT INTO projects (id, name, repo_url, default_branch, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)",
            &[
                id.clone().into(),
                name.into(),
                repo_url.into(),
                branch.into(),
                now.into(),
                now.into(),
            ],
        )?;
        self.project(&id)
    }

    fn update_project(
        &self,
        id: &str,
        patch: UpdateProject,
        now: i64,
    ) -> Result<Project, StoreError> {
        let mut p = self.project(id)?;
        if let Some(name) = patch.name {
            p.name = validate::line("name", &name, validate::NAME_MAX)?;
            self.name_taken("projects", "a project", &p.name, id)?;
        }
        if let Some(url) = patch.repo_url {
            p.repo_url = url
                .as_deref()
                .map(|u| validate::repo_url("repo_url", u))
                .transpose()?;
        }
        if let Some(b) = patch.default_branch {
            p.default_branch = validate::branch("default_branch", &b)?;
        }
        self.sql.execute(
            "UPDATE projects SET name = ?, repo_url = ?, default_branch = ?, updated_at = ? WHERE id = ?",
            &[p.name.into(), p.repo_url.into(), p.default_branch.into(), now.into(), id.into()],
        )?;
        self.project(id)
    }

    fn delete_project(&self, id: &str) -> Result<(), StoreError> {
        self.project(id)?;
        self.sql.execute(
            "UPDATE tasks SET project_id = NULL WHERE project_id = ?",
            &[id.into()],
        )?;
        self.sql.execute(
            "DELETE FROM project_links WHERE project_id = ?",
            &[id.into()],
        )?;
        self.sql
            .execute("DELETE FROM projects WHERE id = ?", &[id.into()])?;
        Ok(())
    }

    // ---- task statuses ----

    fn statuses(&self) -> Result<Vec<TaskStatus>, StoreError> {
        let rows: Vec<StatusRow> = self
            .sql
            .query(&format!("SELECT * FROM task_statuses {STATUS_ORDER}"), &[])?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    fn status(&self, id: &str) -> Result<TaskStatus, StoreError> {
        ids::check(ids::STATUS, "id", id)?;
        self.one::<StatusRow>(
            "SELECT * FROM task_statuses WHERE id = ?",
            &[id.into()],
            "task status",
        )
        .map(Into::into)
    }

    /// A row named in a request body: a missing one is a validation error (422), not a 404.
    fn referenced(
        &self,
        field: &str,
        prefix: &str,
        table: &str,
        what: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let sql = format!("SELECT count(*) AS n FROM {table} WHERE id = ?");
        if !ids::is_valid(prefix, id) || self.count(&sql, &[id.into()])? == 0 {
            return Err(StoreError::invalid(
                field,
                format!("no such {what} in this org"),
            ));
        }
        Ok(())
    }

    fn create_status(&self, input: CreateTaskStatus, now: i64) -> Result<TaskStatus, StoreError> {
        let name = validate::line("name", &input.name, validate::NAME_MAX)?;
        let color = validate::color("color", input.color.as_deref().unwrap_or("#95a2b3"))?;
        let statuses = self.count("SELECT count(*) AS n FROM task_statuses", &[])?;
        validate::cap(statuses, MAX_STATUSES, "task statuses per org")?;
        self.name_taken("task_statuses", "a task status", &name, "")?;
        let position = match input.position {
            Some(p) => p,
            None => self.count(
                "SELECT coalesce(max(position) + 1, 0) AS n FROM task_statuses",
                &[],
            )?,
        };
        let id = ids::new(ids::STATUS);
        self.sql.execute(
            "INSERT INTO task_statuses (id, name, category, color, position, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            &[
                id.clone().into(),
                name.into(),
                input.category.as_str().into(),
                color.into(),
                position.into(),
                now.into(),
                now.into(),
            ],
        )?;
        self.status(&id)
    }

    fn update_status(
        &self,
        id: &str,
        patch: UpdateTaskStatus,
        now: i64,
    ) -> Result<TaskStatus, StoreError> {
        let mut s = self.status(id)?;
        if let Some(name) = patch.name {
            s.name = validate::line("name", &name, validate::NAME_MAX)?;
            self.name_taken("task_statuses", "a task status", &s.name, id)?;
        }
        if let Some(c) = patch.color {
            s.color = validate::color("color", &c)?;
        }
        s.category = patch.category.unwrap_or(s.category);
        s.position = patch.position.unwrap_or(s.position);
        self.sql.execute(
            "UPDATE task_statuses SET name = ?, category = ?, color = ?, position = ?, updated_at = ?
             WHERE id = ?",
            &[s.name.into(), s.category.as_str().into(), s.color.into(), s.position.into(), now.into(), id.into()],
        )?;
        self.status(id)
    }

    fn delete_status(
        &self,
        id: &str,
        replace_with: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.status(id)?;
        if self.count("SELECT count(*) AS n FROM task_statuses", &[])? <= 1 {
            return Err(StoreError::Conflict {
                code: "last_status",
                message: "an org needs at least one task status".into(),
            });
        }
        let used = self.count(
            "SELECT count(*) AS n FROM tasks WHERE status_id = ?",
            &[id.into()],
        )?;
        match replace_with {
            Some(to) => {
                self.referenced(
                    "replace_with",
                    ids::STATUS,
                    "task_statuses",
                    "task status",
                    to,
                )?;
                if to == id {
                    return Err(StoreError::invalid(
                        "replace_with",
                        "must name another status",
                    ));
                }
                self.sql.execute(
                    "UPDATE tasks SET status_id = ?, updated_at = ? WHERE status_id = ?",
                    &[to.into(), now.into(), id.into()],
                )?;
            }
            None if used > 0 => {
                return Err(StoreError::Conflict {
                    code: "status_in_use",
                    message: format!(
                        "{used} tasks use this status: pass replace_with to move them"
                    ),
                });
            }
            None => {}
        }
        self.sql
            .execute("DELETE FROM task_statuses WHERE id = ?", &[id.into()])?;
        Ok(())
    }

    fn default_status(&self) -> Result<String, StoreError> {
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        self.sql
            .query_one::<Id>(
                "SELECT id FROM task_statuses ORDER BY CASE category WHEN 'unstarted' THEN 0
                 WHEN 'backlog' THEN 1 ELSE 2 END, position, id LIMIT 1",
                &[],
            )?
            .map(|r| r.id)
            .ok_or(StoreError::Conflict {
                code: "no_status",
                message: "the org has no task statuses".into(),
            })
    }

    // ---- tasks ----

    fn list_tasks(&self, q: &TaskQuery) -> Result<Page<Task>, StoreError> {
        let limit = page_limit(q.limit)?;
        let mut sql = format!("{TASK_SELECT} WHERE 1 = 1");
        let mut params: Vec<SqlValue> = Vec::new();
        if let Some(c) = &q.cursor {
            let n: i64 = decode_cursor(c)?
                .parse()
                .map_err(|_| StoreError::BadRequest {
                    field: "cursor".into(),
                    message: "is not a cursor this API issued".into(),
                })?;
            sql.push_str(" AND t.number < ?");
            params.push(n.into());
        }
        if let Some(s) = &q.status_id {
            ids::check(ids::STATUS, "status_id", s)?;
            sql.push_str(" AND t.status_id = ?");
            params.push(s.into());
        }
        if let Some(c) = q.status_category {
            sql.push_str(" AND s.category = ?");
            params.push(c.as_str().into());
        }
        match q.assignee_id.as_deref() {
            Some("none") => sql.push_str(" AND t.assignee_id IS NULL"),
            Some(a) => {
                ids::check(ids::MEMBER, "assignee_id", a)?;
                sql.push_str(" AND t.assignee_id = ?");
                params.push(a.into());
            }
            None => {}
        }
        if let Some(p) = &q.project_id {
            ids::check(ids::PROJECT, "project_id", p)?;
            sql.push_str(" AND t.project_id = ?");
            params.push(p.into());
        }
        if let Some(l) = &q.label {
            let l = validate::line("label", l, validate::LABEL_MAX)?;
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM json_each(t.labels) j WHERE j.value = ? COLLATE NOCASE)",
            );
            params.push(l.into());
        }
        if let Some(p) = q.priority {
            sql.push_str(" AND t.priority = ?");
            params.push(p.as_str().into());
        }
        sql.push_str(" ORDER BY t.number DESC LIMIT ?");
        params.push((limit + 1).into());
        let rows: Vec<TaskRow> = self.sql.query(&sql, &params)?;
        Ok(paginate(rows, limit, |r: &TaskRow| r.number.to_string()))
    }

    fn task(&self, key: &str) -> Result<Task, StoreError> {
        let (cond, param) = task_key(key)?;
        self.one::<TaskRow>(&format!("{TASK_SELECT} WHERE {cond}"), &[param], "task")
            .map(Into::into)
    }

    fn check_references(
        &self,
        status_id: Option<&str>,
        project_id: Option<&str>,
        assignee_id: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(s) = status_id {
            self.referenced("status_id", ids::STATUS, "task_statuses", "task status", s)?;
        }
        if let Some(p) = project_id {
            self.referenced("project_id", ids::PROJECT, "projects", "project", p)?;
        }
        // Membership itself is checked by the Worker against the directory.
        if assignee_id.is_some_and(|a| !ids::is_valid(ids::MEMBER, a)) {
            return Err(StoreError::invalid("assignee_id", "not a member id"));
        }
        Ok(())
    }

    fn create_task(
        &self,
        input: CreateTask,
        prefix: &str,
        actor: &str,
        now: i64,
    ) -> Result<Task, StoreError> {
        let title = validate::line("title", &input.title, validate::TITLE_MAX)?;
        let description = validate::text(
            "description",
            input.description.as_deref().unwrap_or(""),
            validate::DESCRIPTION_MAX,
        )?;
        let labels = validate::labels("labels", input.labels.as_deref().unwrap_or(&[]))?;
        self.check_references(
            input.status_id.as_deref(),
            input.project_id.as_deref(),
            input.assignee_id.as_deref(),
        )?;
        let status_id = match input.status_id {
            Some(s) => s,
            None => self.default_status()?,
        };
        let tasks = self.count(
            "SELECT value AS n FROM counters WHERE name = 'task_count'",
            &[],
        )?;
        validate::cap(tasks, MAX_TASKS, "tasks per org")?;
        self.sql.execute(
            "UPDATE counters SET value = value + 1 WHERE name IN ('task_number', 'task_count')",
            &[],
        )?;
        let number = self.count(
            "SELECT value AS n FROM counters WHERE name = 'task_number'",
            &[],
        )?;
        let id = ids::new(ids::TASK);
        self.sql.execute(
            "INSERT INTO tasks (id, number, slug, title, description, priority, status_id, project_id,
                                assignee_id, labels, created_by, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                id.clone().into(),
                number.into(),
                format!("{prefix}-{number}").into(),
                title.into(),
                description.into(),
                input.priority.unwrap_or(Priority::None).as_str().into(),
                status_id.into(),
                input.project_id.into(),
                input.assignee_id.into(),
                serde_json::to_string(&labels).unwrap_or_else(|_| "[]".into()).into(),
                actor.into(),
                now.into(),
                now.into(),
            ],
        )?;
        self.task(&id)
    }

    fn update_task(&self, key: &str, patch: UpdateTask, now: i64) -> Result<Task, StoreError> {
        let mut t = self.task(key)?;
        if let Some(title) = patch.title {
            t.title = validate::line("title", &title, validate::TITLE_MAX)?;
        }
        if let Some(d) = patch.description {
            t.description = validate::text("description", &d, validate::DESCRIPTION_MAX)?;
        }
        if let Some(l) = patch.labels {
            t.labels = validate::labels("labels", &l)?;
        }
        self.check_references(
            patch.status_id.as_deref(),
            patch.project_id.as_ref().and_then(|p| p.as_deref()),
            patch.assignee_id.as_ref().and_then(|a| a.as_deref()),
        )?;
        let status_id = patch.status_id.unwrap_or(t.status.id);
        let project_id = patch.project_id.unwrap_or(t.project_id);
        let assignee_id = patch.assignee_id.unwrap_or(t.assignee_id);
        self.sql.execute(
            "UPDATE tasks SET title = ?, description = ?, priority = ?, status_id = ?, project_id = ?,
                              assignee_id = ?, labels = ?, updated_at = ?
             WHERE id = ?",
            &[
                t.title.into(),
                t.description.into(),
                patch.priority.unwrap_or(t.priority).as_str().into(),
                status_id.into(),
                project_id.into(),
                assignee_id.into(),
                serde_json::to_string(&t.labels).unwrap_or_else(|_| "[]".into()).into(),
                now.into(),
                t.id.clone().into(),
            ],
        )?;
        self.task(&t.id)
    }

    fn delete_task(&self, key: &str) -> Result<(), StoreError> {
        let t = self.task(key)?;
        self.sql
            .execute("DELETE FROM tasks WHERE id = ?", &[t.id.into()])?;
        self.sql.execute(
            "UPDATE counters SET value = value - 1 WHERE name = 'task_count'",
            &[],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
