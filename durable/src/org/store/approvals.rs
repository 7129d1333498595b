//! Members' answers to chat sessions' approval requests: recorded once the session's daemon
//! took one, so the org keeps who allowed or denied what after the session's stream is gone.

use super::Store;
use crate::chat::{self, Answerer, ApprovalRecord, Decision};
use crate::error::StoreError;
use crate::sql::Sql;
use crate::time::rfc3339;
use crate::{ids, validate};
use serde::Deserialize;

#[derive(Deserialize)]
struct ApprovalRow {
    request_id: String,
    session_id: String,
    decision: Decision,
    reason: Option<String>,
    answered_by: String,
    role: String,
    answered_at: i64,
}

impl From<ApprovalRow> for ApprovalRecord {
    fn from(r: ApprovalRow) -> Self {
        Self {
            request_id: r.request_id,
            session_id: r.session_id,
            decision: r.decision,
            reason: r.reason,
            answered_by: Answerer::Member {
                id: r.answered_by,
                role: r.role,
            },
            answered_at: rfc3339(r.answered_at),
        }
    }
}

/// What the Worker records: the daemon's word that `member` (holding `role`) answered.
pub(super) struct NewApproval<'a> {
    pub session_id: &'a str,
    pub request_id: &'a str,
    pub decision: Decision,
    pub reason: Option<&'a str>,
    pub member: &'a str,
    pub role: &'a str,
}

impl<S: Sql> Store<'_, S> {
    /// Records an answer; a request recorded before keeps its first answer (the daemon takes
    /// one answer per request, so a second one here is a retry). Answers the kept record.
    pub(super) fn record_approval(
        &self,
        a: NewApproval<'_>,
        now: i64,
    ) -> Result<ApprovalRecord, StoreError> {
        ids::check(chat::APPROVAL_ID_PREFIX, "request_id", a.request_id)?;
        if !ids::is_valid(ids::MEMBER, a.member) {
            return Err(StoreError::invalid(
                "answered_by",
                "only members answer approvals",
            ));
        }
        // The session must be the org's (its status does not matter: it may end meanwhile).
        self.session(a.session_id, now)?;
        if chat::role_rank(a.role).is_none() {
            return Err(StoreError::invalid("role", "member, admin or owner"));
        }
        let reason = a
            .reason
            .map(|r| validate::line("reason", r, chat::MAX_REASON))
            .transpose()?;
        self.sql.execute(
            "INSERT INTO approvals (request_id, session_id, decision, reason, answered_by, role,
                 answered_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (request_id) DO NOTHING",
            &[
                a.request_id.into(),
                a.session_id.into(),
                a.decision.as_str().into(),
                reason.into(),
                a.member.into(),
                a.role.into(),
                now.into(),
            ],
        )?;
        let kept = self.one::<ApprovalRow>(
            "SELECT * FROM approvals WHERE request_id = ?",
            &[a.request_id.into()],
            "approval",
        )?;
        if kept.session_id != a.session_id {
            // Request ids are the daemon's and unique; one of another session is not this one's.
            return Err(StoreError::Conflict {
                code: "approval_of_another_session",
                message: "this request id was recorded for another session".into(),
            });
        }
        Ok(kept.into())
    }

    /// A session's recorded answers, newest first (at most [`chat::MAX_LISTED_APPROVALS`]).
    pub(super) fn list_approvals(
        &self,
        session_id: &str,
        now: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.session(session_id, now)?;
        let rows: Vec<ApprovalRow> = self.sql.query(
            "SELECT * FROM approvals WHERE session_id = ?
             ORDER BY answered_at DESC, rowid DESC LIMIT ?",
            &[session_id.into(), chat::MAX_LISTED_APPROVALS.into()],
        )?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
