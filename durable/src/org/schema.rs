//! The Org Durable Object's SQLite schema, as ordered migrations recorded in `meta`.

use crate::sql::{Sql, SqlError};

/// One step of the schema: its SQL, then the change log's triggers for the tables it logs (or
/// logs anew), each with its columns as of this step ([`log_triggers`]).
struct Migration {
    sql: &'static str,
    logs: &'static [(&'static str, &'static [&'static str])],
}

impl Migration {
    const fn sql(sql: &'static str) -> Self {
        Self { sql, logs: &[] }
    }

    /// The whole script.
    fn script(&self) -> String {
        let mut script = self.sql.to_owned();
        for (table, columns) in self.logs {
            script.push_str(&log_triggers(table, columns));
        }
        script
    }
}

/// The synced tables' columns when the change log began (migration 9).
#[rustfmt::skip]
const LOGGED_9: &[(&str, &[&str])] = &[
    ("tasks", &[
        "id", "number", "slug", "title", "description", "priority", "status_id", "project_id",
        "assignee_id", "labels", "created_by", "created_at", "updated_at",
    ]),
    ("task_statuses", &[
        "id", "name", "category", "color", "position", "created_at", "updated_at",
    ]),
    ("projects", &["id", "name", "repo_url", "default_branch", "created_at", "updated_at"]),
    ("hosts", &[
        "id", "name", "os", "arch", "agents", "created_by", "created_at", "revoked_at",
    ]),
    ("sessions", SESSIONS_9),
    ("automations", &[
        "id", "name", "rrule", "timezone", "starts_at", "anchor", "project_id", "host", "agent",
        "base_branch", "prompt_version", "paused", "next_run_at", "last_run_at", "created_by",
        "created_at", "updated_at",
    ]),
];

#[rustfmt::skip]
const SESSIONS_9: &[&str] = &[
    "id", "project_id", "host_id", "agent", "prompt", "task_id", "branch", "base_branch",
    "worktree", "status", "reason", "exit_code", "stream_path", "cols", "rows", "created_by",
    "created_at", "started_at", "ended_at", "start_by", "progress_message", "progress_percent",
    "progress_at",
];

/// Sessions' columns from migration 10 (chat sessions): `kind` and `title` added.
#[rustfmt::skip]
const SESSIONS_10: &[&str] = &[
    "id", "project_id", "host_id", "agent", "prompt", "task_id", "branch", "base_branch",
    "worktree", "status", "reason", "exit_code", "stream_path", "cols", "rows", "created_by",
    "created_at", "started_at", "ended_at", "start_by", "progress_message", "progress_percent",
    "progress_at", "kind", "title",
];

/// The triggers that append every write to `table` to the change log, in the writing
/// transaction: its row (`row`: new, `old`: previous) as JSON of `columns`, keyed by `id`. An
/// update that changes none of `columns` logs nothing. Any earlier triggers of the table are
/// dropped first, so a later migration logs new columns by naming the table again.
fn log_triggers(table: &str, columns: &[&str]) -> String {
    let row = |of: &str| {
        let fields: Vec<String> = columns
            .iter()
            .map(|c| format!("'{c}', {of}.\"{c}\""))
            .collect();
        format!("json_object({})", fields.join(", "))
    };
    let changed: Vec<String> = columns
        .iter()
        .map(|c| format!("OLD.\"{c}\" IS NOT NEW.\"{c}\""))
        .collect();
    let changed = changed.join(" OR ");
    let (new, old) = (row("NEW"), row("OLD"));
    let now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
    let into = "INSERT INTO changes (tbl, op, key, row, old, at) VALUES";
    format!(
        "
DROP TRIGGER IF EXISTS changes_{table}_insert;
DROP TRIGGER IF EXISTS changes_{table}_update;
DROP TRIGGER IF EXISTS changes_{table}_delete;
CREATE TRIGGER changes_{table}_insert AFTER INSERT ON {table} BEGIN
    {into} ('{table}', 'insert', NEW.id, {new}, NULL, {now});
END;
CREATE TRIGGER changes_{table}_update AFTER UPDATE ON {table} WHEN {changed} BEGIN
    {into} ('{table}', 'update', NEW.id, {new}, {old}, {now});
END;
CREATE TRIGGER changes_{table}_delete AFTER DELETE ON {table} BEGIN
    {into} ('{table}', 'delete', OLD.id, NULL, {old}, {now});
END;
"
    )
}

/// Each entry moves the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[Migration] = &[
    Migration::sql(
        r"
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('task_number', 0), ('task_count', 0);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    repo_url TEXT,
    default_branch TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX projects_name ON projects (name COLLATE NOCASE);

CREATE TABLE task_statuses (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL
        CHECK (category IN ('backlog', 'unstarted', 'started', 'completed', 'canceled')),
    color TEXT NOT NULL,
    position INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX task_statuses_name ON task_statuses (name COLLATE NOCASE);

INSERT INTO task_statuses (id, name, category, color, position, created_at, updated_at)
SELECT 'sts_' || lower(hex(randomblob(16))), name, category, color, position,
       CAST(strftime('%s', 'now') AS INTEGER) * 1000, CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM (SELECT 'Backlog' AS name, 'backlog' AS category, '#95a2b3' AS color, 0 AS position
      UNION ALL SELECT 'Todo', 'unstarted', '#e2e2e2', 1
      UNION ALL SELECT 'In Progress', 'started', '#f2c94c', 2
      UNION ALL SELECT 'Done', 'completed', '#5e6ad2', 3
      UNION ALL SELECT 'Canceled', 'canceled', '#95a2b3', 4);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    number INTEGER NOT NULL UNIQUE,
    slug TEXT NOT NULL UNIQUE COLLATE NOCASE,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    priority TEXT NOT NULL,
    status_id TEXT NOT NULL REFERENCES task_statuses (id),
    project_id TEXT REFERENCES projects (id),
    assignee_id TEXT,
    labels TEXT NOT NULL,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX tasks_status ON tasks (status_id, number);
CREATE INDEX tasks_assignee ON tasks (assignee_id, number);
CREATE INDEX tasks_project ON tasks (project_id, number);
",
    ),
    Migration::sql(
        r"
CREATE TABLE streams (
    path TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
",
    ),
    Migration::sql(
        r"
CREATE TABLE project_links (
    project_id TEXT NOT NULL,
    host_id TEXT NOT NULL,
    path TEXT NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, host_id)
);
CREATE INDEX project_links_host ON project_links (host_id);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    host_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    prompt TEXT,
    task_id TEXT,
    branch TEXT,
    base_branch TEXT,
    worktree TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    exit_code INTEGER,
    stream_path TEXT NOT NULL,
    cols INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    start_by INTEGER NOT NULL
);
CREATE INDEX sessions_status ON sessions (status, start_by);
CREATE INDEX sessions_host ON sessions (host_id, id);
CREATE INDEX sessions_project ON sessions (project_id, id);
",
    ),
    Migration::sql(
        r"
CREATE TABLE org_policies (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    wasm BLOB NOT NULL,
    config TEXT NOT NULL,
    failure TEXT NOT NULL CHECK (failure IN ('deny', 'allow')),
    position INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE policy_decisions (
    id INTEGER PRIMARY KEY,
    host_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    session_id TEXT,
    agent TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN
        ('user-prompt-submit', 'pre-tool-use', 'post-tool-use', 'session-start', 'stop')),
    policy TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'deny', 'ask', 'rewrite', 'failed')),
    reason TEXT,
    duration_us INTEGER NOT NULL,
    at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (host_id, seq)
);
CREATE INDEX policy_decisions_at ON policy_decisions (at, id);
CREATE INDEX policy_decisions_session ON policy_decisions (session_id, at, id);
INSERT INTO counters (name, value) VALUES ('decision_count', 0);
",
    ),
    Migration::sql(
        r"
CREATE TABLE mcp_calls (
    id INTEGER PRIMARY KEY,
    member_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    args_sha256 TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    at INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('mcp_call_count', 0);
",
    ),
    Migration::sql(
        r"
ALTER TABLE sessions ADD COLUMN progress_message TEXT;
ALTER TABLE sessions ADD COLUMN progress_percent INTEGER;
ALTER TABLE sessions ADD COLUMN progress_at INTEGER;
",
    ),
    Migration::sql(
        r"
CREATE TABLE automations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    rrule TEXT NOT NULL,
    timezone TEXT NOT NULL,
    -- The first occurrence, local time in the zone, as given.
    starts_at TEXT NOT NULL,
    -- Where occurrences are counted from now: starts_at, then each claimed occurrence.
    anchor TEXT NOT NULL,
    project_id TEXT NOT NULL,
    host TEXT NOT NULL,
    agent TEXT NOT NULL,
    base_branch TEXT,
    prompt_version INTEGER NOT NULL,
    paused INTEGER NOT NULL,
    next_run_at INTEGER,
    last_run_at INTEGER,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX automations_name ON automations (name COLLATE NOCASE);
CREATE INDEX automations_due ON automations (paused, next_run_at);

CREATE TABLE automation_prompts (
    automation_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (automation_id, version)
);

CREATE TABLE automation_runs (
    id TEXT PRIMARY KEY,
    automation_id TEXT NOT NULL,
    via TEXT NOT NULL CHECK (via IN ('schedule', 'manual')),
    scheduled_for INTEGER,
    status TEXT NOT NULL CHECK (status IN ('dispatching', 'dispatched', 'failed')),
    session_id TEXT,
    error TEXT,
    prompt_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX automation_runs_of ON automation_runs (automation_id, id);
CREATE INDEX automation_runs_open ON automation_runs (status, created_at);
INSERT INTO counters (name, value) VALUES ('automation_schedule', 0);
",
    ),
    Migration {
        sql: r#"
-- Machines, mirrored from the directory (D1) so they sync like the org's own rows.
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    agents TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- The change log the shapes are served from. The triggers (`log_triggers`) append to it in the very
-- transaction that writes a synced table; `row` and `old` are the new and previous rows as
-- JSON of native values. Compaction deletes a prefix (meta 'sync_purged_through').
CREATE TABLE changes (
    lsn INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    key TEXT NOT NULL,
    row TEXT,
    old TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX changes_tbl ON changes (tbl, lsn);
"#,
        logs: LOGGED_9,
    },
    Migration {
        sql: r#"
-- Chat sessions: what a session shows, and its title (the sessions' log triggers are made again
-- with them).
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'terminal';
ALTER TABLE sessions ADD COLUMN title TEXT;

-- Members' answers to chat sessions' approval requests, as the daemons took them.
CREATE TABLE approvals (
    request_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'deny')),
    reason TEXT,
    answered_by TEXT NOT NULL,
    role TEXT NOT NULL,
    answered_at INTEGER NOT NULL
);
CREATE INDEX approvals_session ON approvals (session_id, answered_at);
"#,
        logs: &[("sessions", SESSIONS_10)],
    },
];

#[derive(serde::Deserialize)]
struct Version {
    value: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    /// The org was deleted; only its tombstone is left.
    Destroyed,
}

/// Brings the database up to the newest schema. Cheap when it already is.
pub fn migrate(sql: &impl Sql) -> Result<State, SqlError> {
    sql.execute_script(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )?;
    if sql
        .query_one::<Version>("SELECT value FROM meta WHERE key = 'destroyed'", &[])?
        .is_some()
    {
        return Ok(State::Destroyed);
    }
    let current: usize = sql
        .query_one::<Version>("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
        .and_then(|v| v.value.parse().ok())
        .unwrap_or(0);
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        sql.transaction(|| {
            sql.execute_script(&migration.script())?;
            sql.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[((i + 1).to_string()).into()],
            )
            .map(drop)
        })?;
    }
    Ok(State::Ready)
}
