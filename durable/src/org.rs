//! An organisation's own data (projects, task statuses, tasks, project links, sessions,
//! automations, guardrail policies and the decisions machines report), owned by one Org Durable Object.
//!
//! The Worker authenticates a caller, then sends the org's object an [`OrgCall`]: who is asking
//! and one [`OrgOp`]. [`store::Store`] carries it out in one SQLite transaction and answers JSON
//! bytes, which the Worker passes through. The object class itself is a thin adapter in
//! [`crate::objects`]. Writes to the synced tables also append to the org's change log, which
//! the object serves as shapes ([`crate::sync`], [`store::Store::shape`]).

pub mod model;
mod schema;
pub mod store;

use crate::automation::{AutomationPatch, NewAutomation, RunOutcome};
use crate::chat::Decision;
use crate::mcp::{ToolCallQuery, ToolCallReport};
use crate::policy::{DecisionQuery, DecisionReport, NewPolicy, UpdatePolicy};
use crate::session::{NewSession, ProgressReport, SessionQuery, SessionUpdate, TitleReport};
use crate::sync::MirrorHost;
use model::{
    CreateProject, CreateTask, CreateTaskStatus, PageQuery, TaskQuery, UpdateProject, UpdateTask,
    UpdateTaskStatus,
};
use serde::{Deserialize, Serialize};

/// One request from the Worker to an org's Durable Object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgCall {
    pub org_id: String,
    /// The member acting, recorded as `created_by`.
    pub actor: String,
    pub op: OrgOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum OrgOp {
    ListProjects(PageQuery),
    GetProject {
        id: String,
    },
    /// A project by its id or its name (case-insensitive).
    FindProject {
        key: String,
    },
    CreateProject(CreateProject),
    UpdateProject {
        id: String,
        patch: UpdateProject,
    },
    DeleteProject {
        id: String,
    },
    ListStatuses,
    CreateStatus(CreateTaskStatus),
    UpdateStatus {
        id: String,
        patch: UpdateTaskStatus,
    },
    DeleteStatus {
        id: String,
        replace_with: Option<String>,
    },
    ListTasks(TaskQuery),
    /// `key` is a task id or a slug such as `TET-12`.
    GetTask {
        key: String,
    },
    /// `prefix` is the org's current task prefix (kept in D1 with the org) for the new slug.
    CreateTask {
        task: CreateTask,
        prefix: String,
    },
    UpdateTask {
        key: String,
        patch: UpdateTask,
    },
    DeleteTask {
        key: String,
    },
    /// A member left the org: their tasks become unassigned.
    UnassignMember {
        member_id: String,
    },
    /// A stream at `path` came to life (idempotent; a newer life of the same path replaces an
    /// older one). Counts against the org's stream cap.
    RegisterStream {
        path: String,
        incarnation: String,
    },
    /// That life of the stream ended (a no-op once a newer life registered).
    UnregisterStream {
        path: String,
        incarnation: String,
    },
    /// Host `host_id` has a checkout of the project (`project`: an id or a name; with
    /// `create`, a missing project is created under that name) at `path`.
    LinkProject {
        project: String,
        host_id: String,
        path: String,
        create: bool,
    },
    UnlinkProject {
        project: String,
        host_id: String,
    },
    /// The links of one project (id or name), or of one host.
    ListLinks {
        project: Option<String>,
        host_id: Option<String>,
    },
    CreateSession(NewSession),
    GetSession {
        id: String,
    },
    ListSessions(SessionQuery),
    /// A status change: reported by the session's host (`host_id`), or by the Worker itself
    /// (`None`) for what it decides alone (stopping a session that never started).
    UpdateSession {
        id: String,
        host_id: Option<String>,
        update: SessionUpdate,
    },
    /// The agent of host `host_id`'s running session `id` reports its progress.
    ReportProgress {
        id: String,
        host_id: String,
        report: ProgressReport,
    },
    /// Host `host_id` names its session `id` (any status; answers the session).
    SetSessionTitle {
        id: String,
        host_id: String,
        report: TitleReport,
    },
    /// The actor (a member holding `role`) answered approval `request_id` of session
    /// `session_id`, and its daemon took the answer (answers a [`crate::chat::ApprovalRecord`];
    /// a request recorded before keeps its first answer).
    RecordApproval {
        session_id: String,
        request_id: String,
        decision: Decision,
        reason: Option<String>,
        role: String,
    },
    /// A session's recorded approval answers, newest first.
    ListApprovals {
        session_id: String,
    },
    ListAutomations(PageQuery),
    /// `key` is an automation id or name.
    GetAutomation {
        key: String,
    },
    CreateAutomation(NewAutomation),
    UpdateAutomation {
        key: String,
        patch: AutomationPatch,
    },
    DeleteAutomation {
        key: String,
    },
    SetAutomationPaused {
        key: String,
        paused: bool,
    },
    ListPromptVersions {
        key: String,
    },
    /// One prompt version (default: the active one).
    GetPromptVersion {
        key: String,
        version: Option<i64>,
    },
    SetPrompt {
        key: String,
        prompt: String,
    },
    RollbackPrompt {
        key: String,
        version: i64,
    },
    /// The cron's tick at `at` (Unix ms) claims what is due (answers `Vec<Claim>`).
    ClaimDueAutomations {
        at: i64,
    },
    /// A run on request (answers a [`crate::automation::Claim`]).
    StartManualRun {
        key: String,
    },
    /// How a claimed run's dispatch went.
    FinishRun {
        run_id: String,
        outcome: RunOutcome,
    },
    ListRuns {
        key: String,
        page: PageQuery,
    },
    /// Carries out the op, then answers its answer with the org's schedule as it then stands
    /// (a [`crate::automation::Scheduled`]): what the directory's index of due orgs records.
    WithSchedule(Box<OrgOp>),
    /// The policies in the order machines run them.
    ListPolicies,
    GetPolicy {
        name: String,
    },
    /// Creates or replaces a policy (answers a [`crate::policy::PutAnswer`]).
    PutPolicy(NewPolicy),
    UpdatePolicy {
        name: String,
        patch: UpdatePolicy,
    },
    DeletePolicy {
        name: String,
    },
    /// A policy's binary (answers a [`crate::policy::PolicyWasm`]); 409 `policy_changed` when
    /// `sha256` is given and is no longer the policy's.
    PolicyWasm {
        name: String,
        sha256: Option<String>,
    },
    /// Host `host_id` reports decisions; ones it reported before (same `seq`) are ignored.
    RecordDecisions {
        host_id: String,
        decisions: Vec<DecisionReport>,
    },
    ListDecisions(DecisionQuery),
    /// One MCP tool call by the actor, for the audit trail (answers `null`).
    RecordToolCall(ToolCallReport),
    /// The audit trail, newest first (answers a [`crate::mcp::ToolCallPage`]).
    ListToolCalls(ToolCallQuery),
    /// Creates or updates the object's mirror of one of the org's hosts (they live in the
    /// directory; the mirror is what the `hosts` shape serves).
    PutHost(MirrorHost),
    /// Makes the mirror equal the directory's list of the org's hosts.
    SyncHosts {
        hosts: Vec<MirrorHost>,
    },
    /// Compacts the change log: to the newest `keep` entries, or by the usual size and age
    /// rules (answers a [`crate::sync::Compacted`]).
    CompactChanges {
        keep: Option<i64>,
    },
    /// The org was deleted: drop everything and answer 404 from now on (org ids are never
    /// reused, so a token minted before the deletion cannot bring the org back to life).
    Destroy,
}
