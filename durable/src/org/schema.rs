//! The Org Durable Object's SQLite schema, as ordered migrations recorded in `meta`.

use crate::sql::{Sql, SqlError};

/// Each entry moves the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
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
    r"
CREATE TABLE streams (
    path TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
",
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
    r"
ALTER TABLE sessions ADD COLUMN progress_message TEXT;
ALTER TABLE sessions ADD COLUMN progress_percent INTEGER;
ALTER TABLE sessions ADD COLUMN progress_at INTEGER;
",
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
    r#"
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

-- The change log the shapes are served from. The triggers below append to it in the very
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

CREATE TRIGGER changes_tasks_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('tasks', 'insert', NEW.id,
        json_object('id', NEW."id", 'number', NEW."number", 'slug', NEW."slug",
        'title', NEW."title", 'description', NEW."description", 'priority', NEW."priority",
        'status_id', NEW."status_id", 'project_id', NEW."project_id",
        'assignee_id', NEW."assignee_id", 'labels', NEW."labels",
        'created_by', NEW."created_by", 'created_at', NEW."created_at",
        'updated_at', NEW."updated_at"), NULL,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_tasks_update AFTER UPDATE ON tasks WHEN
    OLD."id" IS NOT NEW."id" OR OLD."number" IS NOT NEW."number" OR
    OLD."slug" IS NOT NEW."slug" OR OLD."title" IS NOT NEW."title" OR
    OLD."description" IS NOT NEW."description" OR OLD."priority" IS NOT NEW."priority" OR
    OLD."status_id" IS NOT NEW."status_id" OR OLD."project_id" IS NOT NEW."project_id" OR
    OLD."assignee_id" IS NOT NEW."assignee_id" OR OLD."labels" IS NOT NEW."labels" OR
    OLD."created_by" IS NOT NEW."created_by" OR OLD."created_at" IS NOT NEW."created_at" OR
    OLD."updated_at" IS NOT NEW."updated_at"
BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('tasks', 'update', NEW.id,
        json_object('id', NEW."id", 'number', NEW."number", 'slug', NEW."slug",
        'title', NEW."title", 'description', NEW."description", 'priority', NEW."priority",
        'status_id', NEW."status_id", 'project_id', NEW."project_id",
        'assignee_id', NEW."assignee_id", 'labels', NEW."labels",
        'created_by', NEW."created_by", 'created_at', NEW."created_at",
        'updated_at', NEW."updated_at"),
        json_object('id', OLD."id", 'number', OLD."number", 'slug', OLD."slug",
        'title', OLD."title", 'description', OLD."description", 'priority', OLD."priority",
        'status_id', OLD."status_id", 'project_id', OLD."project_id",
        'assignee_id', OLD."assignee_id", 'labels', OLD."labels",
        'created_by', OLD."created_by", 'created_at', OLD."created_at",
        'updated_at', OLD."updated_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_tasks_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('tasks', 'delete', OLD.id, NULL,
        json_object('id', OLD."id", 'number', OLD."number", 'slug', OLD."slug",
        'title', OLD."title", 'description', OLD."description", 'priority', OLD."priority",
        'status_id', OLD."status_id", 'project_id', OLD."project_id",
        'assignee_id', OLD."assignee_id", 'labels', OLD."labels",
        'created_by', OLD."created_by", 'created_at', OLD."created_at",
        'updated_at', OLD."updated_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_task_statuses_insert AFTER INSERT ON task_statuses BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('task_statuses', 'insert', NEW.id,
        json_object('id', NEW."id", 'name', NEW."name", 'category', NEW."category",
        'color', NEW."color", 'position', NEW."position", 'created_at', NEW."created_at",
        'updated_at', NEW."updated_at"), NULL,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_task_statuses_update AFTER UPDATE ON task_statuses WHEN
    OLD."id" IS NOT NEW."id" OR OLD."name" IS NOT NEW."name" OR
    OLD."category" IS NOT NEW."category" OR OLD."color" IS NOT NEW."color" OR
    OLD."position" IS NOT NEW."position" OR OLD."created_at" IS NOT NEW."created_at" OR
    OLD."updated_at" IS NOT NEW."updated_at"
BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('task_statuses', 'update', NEW.id,
        json_object('id', NEW."id", 'name', NEW."name", 'category', NEW."category",
        'color', NEW."color", 'position', NEW."position", 'created_at', NEW."created_at",
        'updated_at', NEW."updated_at"),
        json_object('id', OLD."id", 'name', OLD."name", 'category', OLD."category",
        'color', OLD."color", 'position', OLD."position", 'created_at', OLD."created_at",
        'updated_at', OLD."updated_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_task_statuses_delete AFTER DELETE ON task_statuses BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('task_statuses', 'delete', OLD.id, NULL,
        json_object('id', OLD."id", 'name', OLD."name", 'category', OLD."category",
        'color', OLD."color", 'position', OLD."position", 'created_at', OLD."created_at",
        'updated_at', OLD."updated_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_projects_insert AFTER INSERT ON projects BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('projects', 'insert', NEW.id,
        json_object('id', NEW."id", 'name', NEW."name", 'repo_url', NEW."repo_url",
        'default_branch', NEW."default_branch", 'created_at', NEW."created_at",
        'updated_at', NEW."updated_at"), NULL,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_projects_update AFTER UPDATE ON projects WHEN
    OLD."id" IS NOT NEW."id" OR OLD."name" IS NOT NEW."name" OR
    OLD."repo_url" IS NOT NEW."repo_url" OR OLD."default_branch" IS NOT NEW."default_branch" OR
    OLD."created_at" IS NOT NEW."created_at" OR OLD."updated_at" IS NOT NEW."updated_at"
BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('projects', 'update', NEW.id,
        json_object('id', NEW."id", 'name', NEW."name", 'repo_url', NEW."repo_url",
        'default_branch', NEW."default_branch", 'created_at', NEW."created_at",
        'updated_at', NEW."updated_at"),
        json_object('id', OLD."id", 'name', OLD."name", 'repo_url', OLD."repo_url",
        'default_branch', OLD."default_branch", 'created_at', OLD."created_at",
        'updated_at', OLD."updated_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_projects_delete AFTER DELETE ON projects BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('projects', 'delete', OLD.id, NULL,
        json_object('id', OLD."id", 'name', OLD."name", 'repo_url', OLD."repo_url",
        'default_branch', OLD."default_branch", 'created_at', OLD."created_at",
        'updated_at', OLD."updated_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_hosts_insert AFTER INSERT ON hosts BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('hosts', 'insert', NEW.id,
        json_object('id', NEW."id", 'name', NEW."name", 'os', NEW."os", 'arch', NEW."arch",
        'agents', NEW."agents", 'created_by', NEW."created_by",
        'created_at', NEW."created_at", 'revoked_at', NEW."revoked_at"), NULL,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_hosts_update AFTER UPDATE ON hosts WHEN
    OLD."id" IS NOT NEW."id" OR OLD."name" IS NOT NEW."name" OR OLD."os" IS NOT NEW."os" OR
    OLD."arch" IS NOT NEW."arch" OR OLD."agents" IS NOT NEW."agents" OR
    OLD."created_by" IS NOT NEW."created_by" OR OLD."created_at" IS NOT NEW."created_at" OR
    OLD."revoked_at" IS NOT NEW."revoked_at"
BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('hosts', 'update', NEW.id,
        json_object('id', NEW."id", 'name', NEW."name", 'os', NEW."os", 'arch', NEW."arch",
        'agents', NEW."agents", 'created_by', NEW."created_by",
        'created_at', NEW."created_at", 'revoked_at', NEW."revoked_at"),
        json_object('id', OLD."id", 'name', OLD."name", 'os', OLD."os", 'arch', OLD."arch",
        'agents', OLD."agents", 'created_by', OLD."created_by",
        'created_at', OLD."created_at", 'revoked_at', OLD."revoked_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_hosts_delete AFTER DELETE ON hosts BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('hosts', 'delete', OLD.id, NULL,
        json_object('id', OLD."id", 'name', OLD."name", 'os', OLD."os", 'arch', OLD."arch",
        'agents', OLD."agents", 'created_by', OLD."created_by",
        'created_at', OLD."created_at", 'revoked_at', OLD."revoked_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_sessions_insert AFTER INSERT ON sessions BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('sessions', 'insert', NEW.id,
        json_object('id', NEW."id", 'project_id', NEW."project_id", 'host_id', NEW."host_id",
        'agent', NEW."agent", 'prompt', NEW."prompt", 'task_id', NEW."task_id",
        'branch', NEW."branch", 'base_branch', NEW."base_branch",
        'worktree', NEW."worktree", 'status', NEW."status", 'reason', NEW."reason",
        'exit_code', NEW."exit_code", 'stream_path', NEW."stream_path", 'cols', NEW."cols",
        'rows', NEW."rows", 'created_by', NEW."created_by", 'created_at', NEW."created_at",
        'started_at', NEW."started_at", 'ended_at', NEW."ended_at",
        'start_by', NEW."start_by", 'progress_message', NEW."progress_message",
        'progress_percent', NEW."progress_percent", 'progress_at', NEW."progress_at"), NULL,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_sessions_update AFTER UPDATE ON sessions WHEN
    OLD."id" IS NOT NEW."id" OR OLD."project_id" IS NOT NEW."project_id" OR
    OLD."host_id" IS NOT NEW."host_id" OR OLD."agent" IS NOT NEW."agent" OR
    OLD."prompt" IS NOT NEW."prompt" OR OLD."task_id" IS NOT NEW."task_id" OR
    OLD."branch" IS NOT NEW."branch" OR OLD."base_branch" IS NOT NEW."base_branch" OR
    OLD."worktree" IS NOT NEW."worktree" OR OLD."status" IS NOT NEW."status" OR
    OLD."reason" IS NOT NEW."reason" OR OLD."exit_code" IS NOT NEW."exit_code" OR
    OLD."stream_path" IS NOT NEW."stream_path" OR OLD."cols" IS NOT NEW."cols" OR
    OLD."rows" IS NOT NEW."rows" OR OLD."created_by" IS NOT NEW."created_by" OR
    OLD."created_at" IS NOT NEW."created_at" OR OLD."started_at" IS NOT NEW."started_at" OR
    OLD."ended_at" IS NOT NEW."ended_at" OR OLD."start_by" IS NOT NEW."start_by" OR
    OLD."progress_message" IS NOT NEW."progress_message" OR
    OLD."progress_percent" IS NOT NEW."progress_percent" OR
    OLD."progress_at" IS NOT NEW."progress_at"
BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('sessions', 'update', NEW.id,
        json_object('id', NEW."id", 'project_id', NEW."project_id", 'host_id', NEW."host_id",
        'agent', NEW."agent", 'prompt', NEW."prompt", 'task_id', NEW."task_id",
        'branch', NEW."branch", 'base_branch', NEW."base_branch",
        'worktree', NEW."worktree", 'status', NEW."status", 'reason', NEW."reason",
        'exit_code', NEW."exit_code", 'stream_path', NEW."stream_path", 'cols', NEW."cols",
        'rows', NEW."rows", 'created_by', NEW."created_by", 'created_at', NEW."created_at",
        'started_at', NEW."started_at", 'ended_at', NEW."ended_at",
        'start_by', NEW."start_by", 'progress_message', NEW."progress_message",
        'progress_percent', NEW."progress_percent", 'progress_at', NEW."progress_at"),
        json_object('id', OLD."id", 'project_id', OLD."project_id", 'host_id', OLD."host_id",
        'agent', OLD."agent", 'prompt', OLD."prompt", 'task_id', OLD."task_id",
        'branch', OLD."branch", 'base_branch', OLD."base_branch",
        'worktree', OLD."worktree", 'status', OLD."status", 'reason', OLD."reason",
        'exit_code', OLD."exit_code", 'stream_path', OLD."stream_path", 'cols', OLD."cols",
        'rows', OLD."rows", 'created_by', OLD."created_by", 'created_at', OLD."created_at",
        'started_at', OLD."started_at", 'ended_at', OLD."ended_at",
        'start_by', OLD."start_by", 'progress_message', OLD."progress_message",
        'progress_percent', OLD."progress_percent", 'progress_at', OLD."progress_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_sessions_delete AFTER DELETE ON sessions BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('sessions', 'delete', OLD.id, NULL,
        json_object('id', OLD."id", 'project_id', OLD."project_id", 'host_id', OLD."host_id",
        'agent', OLD."agent", 'prompt', OLD."prompt", 'task_id', OLD."task_id",
        'branch', OLD."branch", 'base_branch', OLD."base_branch",
        'worktree', OLD."worktree", 'status', OLD."status", 'reason', OLD."reason",
        'exit_code', OLD."exit_code", 'stream_path', OLD."stream_path", 'cols', OLD."cols",
        'rows', OLD."rows", 'created_by', OLD."created_by", 'created_at', OLD."created_at",
        'started_at', OLD."started_at", 'ended_at', OLD."ended_at",
        'start_by', OLD."start_by", 'progress_message', OLD."progress_message",
        'progress_percent', OLD."progress_percent", 'progress_at', OLD."progress_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_automations_insert AFTER INSERT ON automations BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('automations', 'insert', NEW.id,
        json_object('id', NEW."id", 'name', NEW."name", 'rrule', NEW."rrule",
        'timezone', NEW."timezone", 'starts_at', NEW."starts_at", 'anchor', NEW."anchor",
        'project_id', NEW."project_id", 'host', NEW."host", 'agent', NEW."agent",
        'base_branch', NEW."base_branch", 'prompt_version', NEW."prompt_version",
        'paused', NEW."paused", 'next_run_at', NEW."next_run_at",
        'last_run_at', NEW."last_run_at", 'created_by', NEW."created_by",
        'created_at', NEW."created_at", 'updated_at', NEW."updated_at"), NULL,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_automations_update AFTER UPDATE ON automations WHEN
    OLD."id" IS NOT NEW."id" OR OLD."name" IS NOT NEW."name" OR
    OLD."rrule" IS NOT NEW."rrule" OR OLD."timezone" IS NOT NEW."timezone" OR
    OLD."starts_at" IS NOT NEW."starts_at" OR OLD."anchor" IS NOT NEW."anchor" OR
    OLD."project_id" IS NOT NEW."project_id" OR OLD."host" IS NOT NEW."host" OR
    OLD."agent" IS NOT NEW."agent" OR OLD."base_branch" IS NOT NEW."base_branch" OR
    OLD."prompt_version" IS NOT NEW."prompt_version" OR OLD."paused" IS NOT NEW."paused" OR
    OLD."next_run_at" IS NOT NEW."next_run_at" OR OLD."last_run_at" IS NOT NEW."last_run_at" OR
    OLD."created_by" IS NOT NEW."created_by" OR OLD."created_at" IS NOT NEW."created_at" OR
    OLD."updated_at" IS NOT NEW."updated_at"
BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('automations', 'update', NEW.id,
        json_object('id', NEW."id", 'name', NEW."name", 'rrule', NEW."rrule",
        'timezone', NEW."timezone", 'starts_at', NEW."starts_at", 'anchor', NEW."anchor",
        'project_id', NEW."project_id", 'host', NEW."host", 'agent', NEW."agent",
        'base_branch', NEW."base_branch", 'prompt_version', NEW."prompt_version",
        'paused', NEW."paused", 'next_run_at', NEW."next_run_at",
        'last_run_at', NEW."last_run_at", 'created_by', NEW."created_by",
        'created_at', NEW."created_at", 'updated_at', NEW."updated_at"),
        json_object('id', OLD."id", 'name', OLD."name", 'rrule', OLD."rrule",
        'timezone', OLD."timezone", 'starts_at', OLD."starts_at", 'anchor', OLD."anchor",
        'project_id', OLD."project_id", 'host', OLD."host", 'agent', OLD."agent",
        'base_branch', OLD."base_branch", 'prompt_version', OLD."prompt_version",
        'paused', OLD."paused", 'next_run_at', OLD."next_run_at",
        'last_run_at', OLD."last_run_at", 'created_by', OLD."created_by",
        'created_at', OLD."created_at", 'updated_at', OLD."updated_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_automations_delete AFTER DELETE ON automations BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('automations', 'delete', OLD.id, NULL,
        json_object('id', OLD."id", 'name', OLD."name", 'rrule', OLD."rrule",
        'timezone', OLD."timezone", 'starts_at', OLD."starts_at", 'anchor', OLD."anchor",
        'project_id', OLD."project_id", 'host', OLD."host", 'agent', OLD."agent",
        'base_branch', OLD."base_branch", 'prompt_version', OLD."prompt_version",
        'paused', OLD."paused", 'next_run_at', OLD."next_run_at",
        'last_run_at', OLD."last_run_at", 'created_by', OLD."created_by",
        'created_at', OLD."created_at", 'updated_at', OLD."updated_at"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

"#,
    r#"
-- Chat sessions: what a session shows, and its title. The change log's sessions triggers list
-- their columns, so they are made again with the new ones.
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'terminal';
ALTER TABLE sessions ADD COLUMN title TEXT;

DROP TRIGGER changes_sessions_insert;
DROP TRIGGER changes_sessions_update;
DROP TRIGGER changes_sessions_delete;

CREATE TRIGGER changes_sessions_insert AFTER INSERT ON sessions BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('sessions', 'insert', NEW.id,
        json_object('id', NEW."id", 'project_id', NEW."project_id", 'host_id', NEW."host_id",
        'agent', NEW."agent", 'prompt', NEW."prompt", 'task_id', NEW."task_id",
        'branch', NEW."branch", 'base_branch', NEW."base_branch", 'worktree', NEW."worktree",
        'status', NEW."status", 'reason', NEW."reason", 'exit_code', NEW."exit_code",
        'stream_path', NEW."stream_path", 'cols', NEW."cols", 'rows', NEW."rows",
        'created_by', NEW."created_by", 'created_at', NEW."created_at",
        'started_at', NEW."started_at", 'ended_at', NEW."ended_at", 'start_by', NEW."start_by",
        'progress_message', NEW."progress_message", 'progress_percent', NEW."progress_percent",
        'progress_at', NEW."progress_at", 'kind', NEW."kind", 'title', NEW."title"), NULL,
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_sessions_update AFTER UPDATE ON sessions WHEN
    OLD."id" IS NOT NEW."id" OR OLD."project_id" IS NOT NEW."project_id" OR
    OLD."host_id" IS NOT NEW."host_id" OR OLD."agent" IS NOT NEW."agent" OR
    OLD."prompt" IS NOT NEW."prompt" OR OLD."task_id" IS NOT NEW."task_id" OR
    OLD."branch" IS NOT NEW."branch" OR OLD."base_branch" IS NOT NEW."base_branch" OR
    OLD."worktree" IS NOT NEW."worktree" OR OLD."status" IS NOT NEW."status" OR
    OLD."reason" IS NOT NEW."reason" OR OLD."exit_code" IS NOT NEW."exit_code" OR
    OLD."stream_path" IS NOT NEW."stream_path" OR OLD."cols" IS NOT NEW."cols" OR
    OLD."rows" IS NOT NEW."rows" OR OLD."created_by" IS NOT NEW."created_by" OR
    OLD."created_at" IS NOT NEW."created_at" OR OLD."started_at" IS NOT NEW."started_at" OR
    OLD."ended_at" IS NOT NEW."ended_at" OR OLD."start_by" IS NOT NEW."start_by" OR
    OLD."progress_message" IS NOT NEW."progress_message" OR
    OLD."progress_percent" IS NOT NEW."progress_percent" OR
    OLD."progress_at" IS NOT NEW."progress_at" OR OLD."kind" IS NOT NEW."kind" OR
    OLD."title" IS NOT NEW."title"
BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('sessions', 'update', NEW.id,
        json_object('id', NEW."id", 'project_id', NEW."project_id", 'host_id', NEW."host_id",
        'agent', NEW."agent", 'prompt', NEW."prompt", 'task_id', NEW."task_id",
        'branch', NEW."branch", 'base_branch', NEW."base_branch", 'worktree', NEW."worktree",
        'status', NEW."status", 'reason', NEW."reason", 'exit_code', NEW."exit_code",
        'stream_path', NEW."stream_path", 'cols', NEW."cols", 'rows', NEW."rows",
        'created_by', NEW."created_by", 'created_at', NEW."created_at",
        'started_at', NEW."started_at", 'ended_at', NEW."ended_at", 'start_by', NEW."start_by",
        'progress_message', NEW."progress_message", 'progress_percent', NEW."progress_percent",
        'progress_at', NEW."progress_at", 'kind', NEW."kind", 'title', NEW."title"),
        json_object('id', OLD."id", 'project_id', OLD."project_id", 'host_id', OLD."host_id",
        'agent', OLD."agent", 'prompt', OLD."prompt", 'task_id', OLD."task_id",
        'branch', OLD."branch", 'base_branch', OLD."base_branch", 'worktree', OLD."worktree",
        'status', OLD."status", 'reason', OLD."reason", 'exit_code', OLD."exit_code",
        'stream_path', OLD."stream_path", 'cols', OLD."cols", 'rows', OLD."rows",
        'created_by', OLD."created_by", 'created_at', OLD."created_at",
        'started_at', OLD."started_at", 'ended_at', OLD."ended_at", 'start_by', OLD."start_by",
        'progress_message', OLD."progress_message", 'progress_percent', OLD."progress_percent",
        'progress_at', OLD."progress_at", 'kind', OLD."kind", 'title', OLD."title"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER changes_sessions_delete AFTER DELETE ON sessions BEGIN
    INSERT INTO changes (tbl, op, key, row, old, at) VALUES ('sessions', 'delete', OLD.id, NULL,
        json_object('id', OLD."id", 'project_id', OLD."project_id", 'host_id', OLD."host_id",
        'agent', OLD."agent", 'prompt', OLD."prompt", 'task_id', OLD."task_id",
        'branch', OLD."branch", 'base_branch', OLD."base_branch", 'worktree', OLD."worktree",
        'status', OLD."status", 'reason', OLD."reason", 'exit_code', OLD."exit_code",
        'stream_path', OLD."stream_path", 'cols', OLD."cols", 'rows', OLD."rows",
        'created_by', OLD."created_by", 'created_at', OLD."created_at",
        'started_at', OLD."started_at", 'ended_at', OLD."ended_at", 'start_by', OLD."start_by",
        'progress_message', OLD."progress_message", 'progress_percent', OLD."progress_percent",
        'progress_at', OLD."progress_at", 'kind', OLD."kind", 'title', OLD."title"),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

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
    for (i, script) in MIGRATIONS.iter().enumerate().skip(current) {
        sql.transaction(|| {
            sql.execute_script(script)?;
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
