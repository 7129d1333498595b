//! The local records of sessions and project links (tables `sessions` and `links`).

use crate::Error;
use crate::state::{State, col_int as int, col_text as text};
use libsql::Value;
use tether_durable::session::SessionStatus;

/// One row of `sessions`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LocalSession {
    pub id: String,
    pub project_id: String,
    pub agent: String,
    pub stream_path: String,
    pub branch: Option<String>,
    pub worktree: Option<String>,
    pub status: SessionStatus,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// Spool bytes the stream has acknowledged.
    pub shipped: i64,
    pub producer_epoch: i64,
    pub producer_seq: i64,
    /// The end of the batch sent with `producer_seq`, not yet acknowledged.
    pub inflight_end: Option<i64>,
    pub stream_closed: bool,
    pub version: i64,
    pub reported: i64,
}

/// A project linked on this machine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Link {
    pub project_id: String,
    pub project_name: String,
    pub path: String,
    pub linked_at: i64,
}

const COLUMNS: &str = "id, project_id, agent, stream_path, branch, worktree, status, reason, \
     exit_code, created_at, started_at, ended_at, shipped, producer_epoch, producer_seq, \
     inflight_end, stream_closed, version, reported";

fn row_to_session(cols: &[Value]) -> Option<LocalSession> {
    let [
        id,
        project_id,
        agent,
        stream_path,
        branch,
        worktree,
        status,
        reason,
        exit_code,
        created_at,
        started_at,
        ended_at,
        shipped,
        epoch,
        seq,
        inflight,
        closed,
        version,
        reported,
    ] = cols
    else {
        return None;
    };
    Some(LocalSession {
        id: text(id)?,
        project_id: text(project_id)?,
        agent: text(agent)?,
        stream_path: text(stream_path)?,
        branch: text(branch),
        worktree: text(worktree),
        status: SessionStatus::parse(&text(status)?)?,
        reason: text(reason),
        exit_code: int(exit_code),
        created_at: int(created_at)?,
        started_at: int(started_at),
        ended_at: int(ended_at),
        shipped: int(shipped)?,
        producer_epoch: int(epoch)?,
        producer_seq: int(seq)?,
        inflight_end: int(inflight),
        stream_closed: int(closed)? != 0,
        version: int(version)?,
        reported: int(reported)?,
    })
}

/// What a status change records.
#[derive(Clone, Debug, Default)]
pub struct StatusChange {
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub branch: Option<String>,
    pub worktree: Option<String>,
}

impl State {
    /// Records a session the edge asked for; false when it was already known (a redelivered
    /// start).
    pub async fn insert_session(
        &self,
        id: &str,
        project_id: &str,
        agent: &str,
        stream_path: &str,
    ) -> Result<bool, Error> {
        let n = self
            .conn()
            .execute(
                "INSERT INTO sessions (id, project_id, agent, stream_path, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'starting', ?5) ON CONFLICT (id) DO NOTHING",
                (id, project_id, agent, stream_path, crate::state::now_ms()),
            )
            .await
            .map_err(self.err("recording a session"))?;
        Ok(n > 0)
    }

    async fn sessions_where(
        &self,
        clause: &str,
        params: impl libsql::params::IntoParams,
    ) -> Result<Vec<LocalSession>, Error> {
        let action = "reading sessions";
        self.rows(
            &format!("SELECT {COLUMNS} FROM sessions {clause}"),
            params,
            action,
        )
        .await?
        .iter()
        .map(|cols| {
            row_to_session(cols).ok_or_else(|| self.err(action)(libsql::Error::InvalidColumnType))
        })
        .collect()
    }

    pub async fn session(&self, id: &str) -> Result<Option<LocalSession>, Error> {
        Ok(self
            .sessions_where("WHERE id = ?1", [id])
            .await?
            .into_iter()
            .next())
    }

    /// Sessions, newest first (at most `limit`).
    pub async fn sessions(&self, limit: u32) -> Result<Vec<LocalSession>, Error> {
        self.sessions_where("ORDER BY created_at DESC, id DESC LIMIT ?1", [limit])
            .await
    }

    /// Sessions whose status the edge has not acknowledged yet.
    pub async fn unreported_sessions(&self) -> Result<Vec<LocalSession>, Error> {
        self.sessions_where("WHERE reported < version ORDER BY created_at LIMIT 100", ())
            .await
    }

    /// Sessions whose stream is not closed yet (output left to ship).
    pub async fn unclosed_sessions(&self) -> Result<Vec<LocalSession>, Error> {
        self.sessions_where("WHERE stream_closed = 0", ()).await
    }

    /// Moves a session to `status` (only forward; a final status stays), bumping its version
    /// so the reporter tells the edge. False when the change was not allowed.
    pub async fn set_session_status(
        &self,
        id: &str,
        status: SessionStatus,
        change: StatusChange,
    ) -> Result<bool, Error> {
        let Some(current) = self.session(id).await? else {
            return Ok(false);
        };
        if current.status == status || !current.status.can_become(status) {
            return Ok(false);
        }
        let now = crate::state::now_ms();
        let started = (status == SessionStatus::Running).then_some(now);
        let ended = status.is_final().then_some(now);
        self.conn()
            .execute(
                "UPDATE sessions SET status = ?2, reason = COALESCE(?3, reason),
                     exit_code = COALESCE(?4, exit_code), branch = COALESCE(?5, branch),
                     worktree = COALESCE(?6, worktree), started_at = COALESCE(started_at, ?7),
                     ended_at = COALESCE(ended_at, ?8), version = version + 1
                 WHERE id = ?1",
                libsql::params![
                    id,
                    status.as_str(),
                    change.reason,
                    change.exit_code,
                    change.branch,
                    change.worktree,
                    started,
                    ended
                ],
            )
            .await
            .map_err(self.err("updating a session"))?;
        Ok(true)
    }

    /// The edge has status `version` of session `id`.
    pub async fn mark_reported(&self, id: &str, version: i64) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE sessions SET reported = MAX(reported, ?2) WHERE id = ?1",
                (id, version),
            )
            .await
            .map(drop)
            .map_err(self.err("recording a report"))
    }

    /// Saves the shipping state: `shipped` bytes acknowledged, the producer's next `seq` and
    /// the batch now in flight, if any.
    pub async fn save_shipping(
        &self,
        id: &str,
        shipped: i64,
        epoch: i64,
        seq: i64,
        inflight_end: Option<i64>,
    ) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE sessions SET shipped = ?2, producer_epoch = ?3, producer_seq = ?4,
                     inflight_end = ?5 WHERE id = ?1",
                libsql::params![id, shipped, epoch, seq, inflight_end],
            )
            .await
            .map(drop)
            .map_err(self.err("saving the shipping state"))
    }

    pub async fn mark_stream_closed(&self, id: &str) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE sessions SET stream_closed = 1, inflight_end = NULL WHERE id = ?1",
                [id],
            )
            .await
            .map(drop)
            .map_err(self.err("closing a session's stream"))
    }

    pub async fn save_link(&self, link: &Link) -> Result<(), Error> {
        let conn = self.conn();
        // One checkout per project, one project per checkout.
        conn.execute(
            "DELETE FROM links WHERE path = ?1 AND project_id != ?2",
            (link.path.as_str(), link.project_id.as_str()),
        )
        .await
        .map_err(self.err("saving a link"))?;
        conn.execute(
            "INSERT INTO links (project_id, project_name, path, linked_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (project_id) DO UPDATE SET project_name = excluded.project_name,
                 path = excluded.path, linked_at = excluded.linked_at",
            (
                link.project_id.as_str(),
                link.project_name.as_str(),
                link.path.as_str(),
                link.linked_at,
            ),
        )
        .await
        .map(drop)
        .map_err(self.err("saving a link"))
    }

    pub async fn delete_link(&self, project_id: &str) -> Result<bool, Error> {
        let n = self
            .conn()
            .execute("DELETE FROM links WHERE project_id = ?1", [project_id])
            .await
            .map_err(self.err("deleting a link"))?;
        Ok(n > 0)
    }

    pub async fn links(&self) -> Result<Vec<Link>, Error> {
        let rows = self
            .rows(
                "SELECT project_id, project_name, path, linked_at FROM links ORDER BY project_name",
                (),
                "reading links",
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|cols| match cols.as_slice() {
                [p, n, path, at] => Some(Link {
                    project_id: text(p)?,
                    project_name: text(n)?,
                    path: text(path)?,
                    linked_at: int(at)?,
                }),
                _ => None,
            })
            .collect())
    }

    pub async fn link(&self, project_id: &str) -> Result<Option<Link>, Error> {
        Ok(self
            .links()
            .await?
            .into_iter()
            .find(|l| l.project_id == project_id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn statuses_move_forward_and_versions_drive_reports() {
        let state = State::open_in_memory().await.unwrap();
        assert!(
            state
                .insert_session(
                    "ses_1",
                    "prj_1",
                    "claude",
                    "hosts/h/sessions/ses_1/terminal"
                )
                .await
                .unwrap()
        );
        assert!(
            !state
                .insert_session("ses_1", "prj_1", "claude", "x")
                .await
                .unwrap(),
            "a redelivered start"
        );
        let s = state.session("ses_1").await.unwrap().unwrap();
        assert_eq!(
            (s.status, s.version, s.reported),
            (SessionStatus::Starting, 1, 0)
        );
        assert_eq!(state.unreported_sessions().await.unwrap().len(), 1);
        state.mark_reported("ses_1", 1).await.unwrap();
        assert!(state.unreported_sessions().await.unwrap().is_empty());

        let change = StatusChange {
            branch: Some("tether/x".into()),
            ..StatusChange::default()
        };
        assert!(
            state
                .set_session_status("ses_1", SessionStatus::Running, change)
                .await
                .unwrap()
        );
        assert!(
            !state
                .set_session_status("ses_1", SessionStatus::Starting, StatusChange::default())
                .await
                .unwrap()
        );
        let done = StatusChange {
            exit_code: Some(3),
            ..StatusChange::default()
        };
        assert!(
            state
                .set_session_status("ses_1", SessionStatus::Exited, done)
                .await
                .unwrap()
        );
        assert!(
            !state
                .set_session_status("ses_1", SessionStatus::Failed, StatusChange::default())
                .await
                .unwrap()
        );
        let s = state.session("ses_1").await.unwrap().unwrap();
        assert_eq!(
            (s.status, s.exit_code, s.branch.as_deref(), s.version),
            (SessionStatus::Exited, Some(3), Some("tether/x"), 3)
        );
        assert!(s.started_at.is_some() && s.ended_at.is_some());

        state
            .save_shipping("ses_1", 100, 0, 2, Some(150))
            .await
            .unwrap();
        let s = state.session("ses_1").await.unwrap().unwrap();
        assert_eq!(
            (s.shipped, s.producer_seq, s.inflight_end),
            (100, 2, Some(150))
        );
        assert_eq!(state.unclosed_sessions().await.unwrap().len(), 1);
        state.mark_stream_closed("ses_1").await.unwrap();
        assert!(state.unclosed_sessions().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_checkout_belongs_to_one_project() {
        let state = State::open_in_memory().await.unwrap();
        let link = |id: &str, path: &str| Link {
            project_id: id.into(),
            project_name: id.into(),
            path: path.into(),
            linked_at: 1,
        };
        state.save_link(&link("prj_a", "/src/a")).await.unwrap();
        state.save_link(&link("prj_b", "/src/a")).await.unwrap();
        state.save_link(&link("prj_b", "/src/b")).await.unwrap();
        let links = state.links().await.unwrap();
        assert_eq!(links, vec![link("prj_b", "/src/b")]);
        assert!(state.delete_link("prj_b").await.unwrap());
        assert!(state.link("prj_b").await.unwrap().is_none());
    }
}
