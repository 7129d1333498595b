//! Project links (which host has a checkout of which project) and agent sessions.

use super::{Count, Store, decode_cursor, page_limit, paginate};
use crate::chat;
use crate::error::StoreError;
use crate::org::model::{CreateProject, Page, Project};
use crate::session::{
    self, NewSession, Progress, ProgressReport, ProjectLink, Session, SessionKind, SessionQuery,
    SessionStatus, SessionUpdate, TitleReport,
};
use crate::sql::{Sql, SqlValue};
use crate::time::rfc3339;
use crate::{ids, validate};
use serde::Deserialize;

/// Hosts one project may be linked to.
pub const MAX_LINKS_PER_PROJECT: i64 = 100;
/// Sessions not yet ended, per org.
pub const MAX_ACTIVE_SESSIONS: i64 = 1_000;
/// Sessions kept per org, ended ones included.
pub const MAX_SESSIONS: i64 = 200_000;
/// A checkout path's most bytes.
pub const PATH_MAX: usize = 4096;
/// The most characters kept of a reported reason.
pub const REASON_MAX: usize = 2_000;

#[derive(Deserialize)]
struct LinkRow {
    project_id: String,
    project_name: String,
    host_id: String,
    path: String,
    linked_at: i64,
}

impl From<LinkRow> for ProjectLink {
    fn from(r: LinkRow) -> Self {
        Self {
            project_id: r.project_id,
            project_name: r.project_name,
            host_id: r.host_id,
            path: r.path,
            linked_at: rfc3339(r.linked_at),
        }
    }
}

#[derive(Deserialize)]
struct SessionRow {
    id: String,
    project_id: String,
    host_id: String,
    agent: String,
    prompt: Option<String>,
    task_id: Option<String>,
    branch: Option<String>,
    base_branch: Option<String>,
    worktree: Option<String>,
    status: String,
    reason: Option<String>,
    exit_code: Option<i64>,
    stream_path: String,
    cols: i64,
    rows: i64,
    created_by: String,
    created_at: i64,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    start_by: i64,
    progress_message: Option<String>,
    progress_percent: Option<i64>,
    progress_at: Option<i64>,
    kind: String,
    title: Option<String>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            host_id: r.host_id,
            agent: r.agent,
            kind: SessionKind::parse(&r.kind).unwrap_or_default(),
            title: r.title,
            prompt: r.prompt,
            task_id: r.task_id,
            branch: r.branch,
            base_branch: r.base_branch,
            worktree: r.worktree,
            status: SessionStatus::parse(&r.status).unwrap_or(SessionStatus::Failed),
            reason: r.reason,
            exit_code: r.exit_code.and_then(|c| i32::try_from(c).ok()),
            stream_path: r.stream_path,
            cols: u16::try_from(r.cols).unwrap_or(80),
            rows: u16::try_from(r.rows).unwrap_or(24),
            created_by: r.created_by,
            created_at: rfc3339(r.created_at),
            started_at: r.started_at.map(rfc3339),
            ended_at: r.ended_at.map(rfc3339),
            start_by: rfc3339(r.start_by),
            progress: match (r.progress_message, r.progress_at) {
                (Some(message), Some(at)) => Some(Progress {
                    message,
                    percent: r.progress_percent.and_then(|p| u8::try_from(p).ok()),
                    at: rfc3339(at),
                }),
                _ => None,
            },
        }
    }
}

const LINK_SELECT: &str =
    "SELECT l.project_id, p.name AS project_name, l.host_id, l.path, l.linked_at
     FROM project_links l JOIN projects p ON p.id = l.project_id";

/// The first `max` characters of `s` (reports are truncated, never refused: a refused report
/// would be retried forever).
pub(super) fn clip(s: Option<String>, max: usize) -> Option<String> {
    s.map(|s| {
        s.chars()
            .filter(|c| !c.is_control() || *c == '\n')
            .take(max)
            .collect()
    })
}

impl<S: Sql> Store<'_, S> {
    /// A project by id or by name (case-insensitive).
    fn project_by_key(&self, key: &str) -> Result<Option<Project>, StoreError> {
        if key.starts_with("prj_") {
            return self.project(key).map(Some).or_else(|e| match e {
                StoreError::NotFound { .. } => Ok(None),
                e => Err(e),
            });
        }
        let id: Option<IdRow> = self.sql.query_one(
            "SELECT id FROM projects WHERE name = ? COLLATE NOCASE",
            &[key.into()],
        )?;
        id.map(|r| self.project(&r.id)).transpose()
    }

    pub(super) fn project_required(&self, key: &str) -> Result<Project, StoreError> {
        self.project_by_key(key)?
            .ok_or(StoreError::NotFound { what: "project" })
    }

    pub(super) fn link_project(
        &self,
        project: &str,
        host_id: &str,
        path: &str,
        create: bool,
        now: i64,
    ) -> Result<ProjectLink, StoreError> {
        ids::check(ids::HOST, "host_id", host_id)?;
        let path = validate::line("path", path, PATH_MAX)?;
        if !path.starts_with('/') {
            return Err(StoreError::invalid("path", "must be an absolute path"));
        }
        let project = match self.project_by_key(project)? {
            Some(p) => p,
            None if create => self.create_project(
                CreateProject {
                    name: project.to_owned(),
                    repo_url: None,
                    default_branch: None,
                },
                now,
            )?,
            None => return Err(StoreError::NotFound { what: "project" }),
        };
        let linked = self.count(
            "SELECT count(*) AS n FROM project_links WHERE project_id = ? AND host_id != ?",
            &[project.id.as_str().into(), host_id.into()],
        )?;
        validate::cap(linked, MAX_LINKS_PER_PROJECT, "hosts per project")?;
        self.sql.execute(
            "INSERT INTO project_links (project_id, host_id, path, linked_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (project_id, host_id) DO UPDATE SET path = excluded.path,
                 linked_at = excluded.linked_at",
            &[
                project.id.as_str().into(),
                host_id.into(),
                path.into(),
                now.into(),
            ],
        )?;
        let mut links = self.links(Some(&project.id), Some(host_id))?;
        links.pop().ok_or(StoreError::NotFound { what: "link" })
    }

    pub(super) fn unlink_project(&self, project: &str, host_id: &str) -> Result<(), StoreError> {
        let project = self.project_required(project)?;
        let n = self.sql.execute(
            "DELETE FROM project_links WHERE project_id = ? AND host_id = ?",
            &[project.id.into(), host_id.into()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { what: "link" });
        }
        Ok(())
    }

    fn links(
        &self,
        project_id: Option<&str>,
        host_id: Option<&str>,
    ) -> Result<Vec<ProjectLink>, StoreError> {
        let mut clauses = Vec::new();
        let mut params: Vec<SqlValue> = Vec::new();
        if let Some(p) = project_id {
            clauses.push("l.project_id = ?");
            params.push(p.into());
        }
        if let Some(h) = host_id {
            clauses.push("l.host_id = ?");
            params.push(h.into());
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let rows: Vec<LinkRow> = self.sql.query(
            &format!("{LINK_SELECT}{filter} ORDER BY l.linked_at, l.host_id LIMIT 1000"),
            &params,
        )?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    pub(super) fn list_links(
        &self,
        project: Option<&str>,
        host_id: Option<&str>,
    ) -> Result<Vec<ProjectLink>, StoreError> {
        let project = project.map(|p| self.project_required(p)).transpose()?;
        self.links(project.as_ref().map(|p| p.id.as_str()), host_id)
    }

    /// Queued sessions whose host never picked them up in time fail now, with the reason.
    pub(super) fn expire_queued(&self, now: i64) -> Result<(), StoreError> {
        self.sql.execute(
            "UPDATE sessions SET status = 'failed', ended_at = ?,
                 reason = 'host offline too long: the session was not started in time'
             WHERE status = 'queued' AND start_by + ? < ?",
            &[now.into(), session::START_GRACE_MS.into(), now.into()],
        )?;
        Ok(())
    }

    pub(super) fn create_session(
        &self,
        s: NewSession,
        actor: &str,
        now: i64,
    ) -> Result<Session, StoreError> {
        self.expire_queued(now)?;
        let active = self.count(
            "SELECT count(*) AS n FROM sessions WHERE status IN ('queued', 'starting', 'running')",
            &[],
        )?;
        validate::cap(active, MAX_ACTIVE_SESSIONS, "active sessions per org")?;
        let total = self.count("SELECT count(*) AS n FROM sessions", &[])?;
        validate::cap(total, MAX_SESSIONS, "sessions per org")?;
        let id = ids::new(ids::SESSION);
        let start_by = now + i64::from(s.start_timeout_secs) * 1000;
        let title = s.prompt.as_deref().and_then(chat::fallback_title);
        self.sql.execute(
            "INSERT INTO sessions (id, project_id, host_id, agent, kind, title, prompt, task_id,
                 branch, base_branch, status, stream_path, cols, rows, created_by, created_at,
                 start_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
            &[
                id.as_str().into(),
                s.project_id.into(),
                s.host_id.as_str().into(),
                s.agent.into(),
                s.kind.as_str().into(),
                title.into(),
                s.prompt.into(),
                s.task_id.into(),
                s.branch.into(),
                s.base_branch.into(),
                s.kind.stream_path(&s.host_id, &id).into(),
                i64::from(s.size.cols).into(),
                i64::from(s.size.rows).into(),
                actor.into(),
                now.into(),
                start_by.into(),
            ],
        )?;
        self.session(&id, now)
    }

    pub(super) fn session(&self, id: &str, now: i64) -> Result<Session, StoreError> {
        ids::check(ids::SESSION, "id", id)?;
        self.expire_queued(now)?;
        self.one::<SessionRow>(
            "SELECT * FROM sessions WHERE id = ?",
            &[id.into()],
            "session",
        )
        .map(Into::into)
    }

    pub(super) fn list_sessions(
        &self,
        q: &SessionQuery,
        now: i64,
    ) -> Result<Page<Session>, StoreError> {
        self.expire_queued(now)?;
        let limit = page_limit(q.limit)?;
        let mut sql = String::from("SELECT * FROM sessions WHERE 1 = 1");
        let mut params: Vec<SqlValue> = Vec::new();
        if let Some(status) = q.status {
            sql.push_str(" AND status = ?");
            params.push(status.as_str().into());
        }
        if let Some(kind) = q.kind {
            sql.push_str(" AND kind = ?");
            params.push(kind.as_str().into());
        }
        if let Some(h) = &q.host_id {
            ids::check(ids::HOST, "host_id", h)?;
            sql.push_str(" AND host_id = ?");
            params.push(h.as_str().into());
        }
        if let Some(p) = &q.project_id {
            ids::check(ids::PROJECT, "project_id", p)?;
            sql.push_str(" AND project_id = ?");
            params.push(p.as_str().into());
        }
        if let Some(c) = &q.cursor {
            sql.push_str(" AND id < ?");
            params.push(decode_cursor(c)?.into());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        params.push((limit + 1).into());
        let rows: Vec<SessionRow> = self.sql.query(&sql, &params)?;
        Ok(paginate(rows, limit, |r: &SessionRow| r.id.clone()))
    }

    pub(super) fn update_session(
        &self,
        id: &str,
        host_id: Option<&str>,
        u: SessionUpdate,
        now: i64,
    ) -> Result<Session, StoreError> {
        let current = self.session(id, now)?;
        if host_id.is_some_and(|h| h != current.host_id) {
            // Another host's session does not exist, as far as this host can tell.
            return Err(StoreError::NotFound { what: "session" });
        }
        if host_id.is_none() && !(current.status == SessionStatus::Queued && u.status.is_final()) {
            return Err(StoreError::Conflict {
                code: "session_started",
                message: "the host has the session now; only it can change its status".into(),
            });
        }
        if !current.status.can_become(u.status) {
            return Err(StoreError::Conflict {
                code: "session_ended",
                message: format!(
                    "the session is {} and cannot become {}",
                    current.status.as_str(),
                    u.status.as_str()
                ),
            });
        }
        let created: Count = self
            .sql
            .query_one(
                "SELECT created_at AS n FROM sessions WHERE id = ?",
                &[id.into()],
            )?
            .unwrap_or(Count { n: now });
        // The host's clock says when it happened, kept between creation and now.
        let at = u.at_ms.clamp(created.n, now);
        let started = matches!(u.status, SessionStatus::Running).then_some(at);
        let ended = u.status.is_final().then_some(at);
        self.sql.execute(
            "UPDATE sessions SET status = ?,
                 reason = COALESCE(?, reason),
                 exit_code = COALESCE(?, exit_code),
                 branch = COALESCE(?, branch),
                 worktree = COALESCE(?, worktree),
                 started_at = COALESCE(started_at, ?),
                 ended_at = COALESCE(ended_at, ?)
             WHERE id = ?",
            &[
                u.status.as_str().into(),
                clip(u.reason, REASON_MAX).into(),
                u.exit_code.map(i64::from).into(),
                clip(u.branch, validate::BRANCH_MAX).into(),
                clip(u.worktree, PATH_MAX).into(),
                started.into(),
                ended.into(),
                id.into(),
            ],
        )?;
        self.session(id, now)
    }

    /// The agent of host `host_id`'s session `id` says how far it got (only while it runs).
    pub(super) fn report_progress(
        &self,
        id: &str,
        host_id: &str,
        report: ProgressReport,
        now: i64,
    ) -> Result<Session, StoreError> {
        let current = self.session(id, now)?;
        if current.host_id != host_id {
            return Err(StoreError::NotFound { what: "session" });
        }
        if !matches!(
            current.status,
            SessionStatus::Starting | SessionStatus::Running
        ) {
            return Err(StoreError::Conflict {
                code: "session_not_running",
                message: format!("the session is {}", current.status.as_str()),
            });
        }
        let message = validate::text("message", &report.message, session::MAX_PROGRESS)?;
        if message.trim().is_empty() {
            return Err(StoreError::invalid("message", "must not be empty"));
        }
        if report.percent.is_some_and(|p| p > 100) {
            return Err(StoreError::invalid("percent", "0 to 100"));
        }
        self.sql.execute(
            "UPDATE sessions SET progress_message = ?, progress_percent = ?, progress_at = ?
             WHERE id = ?",
            &[
                message.into(),
                report.percent.map(i64::from).into(),
                now.into(),
                id.into(),
            ],
        )?;
        self.session(id, now)
    }

    /// The host of session `id` names it (the small model's title, replacing the fallback):
    /// one line of 1 to [`chat::MAX_TITLE`] characters. Any status: a title may come late.
    pub(super) fn set_title(
        &self,
        id: &str,
        host_id: &str,
        report: TitleReport,
        now: i64,
    ) -> Result<Session, StoreError> {
        let current = self.session(id, now)?;
        if current.host_id != host_id {
            return Err(StoreError::NotFound { what: "session" });
        }
        let title = validate::line("title", &report.title, chat::MAX_TITLE)?;
        self.sql.execute(
            "UPDATE sessions SET title = ? WHERE id = ?",
            &[title.into(), id.into()],
        )?;
        self.session(id, now)
    }
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}
