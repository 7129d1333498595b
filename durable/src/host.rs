//! A host's Durable Object state, as plain logic over [`Sql`]: whether its tunnel is up (and if
//! not, why), and the commands queued for it, delivered in order and removed only when the
//! daemon acks them. The object class (`objects::host`) adds the WebSocket and the waiting.

use crate::sql::{Sql, SqlError, SqlValue};
use crate::time::rfc3339;
use serde::{Deserialize, Serialize};

/// Most commands one host may have queued (undelivered or unacked).
pub const MAX_QUEUED: i64 = 1_000;
/// Largest command body.
pub const MAX_COMMAND_BODY: usize = 256 * 1024;
/// Most RPCs in flight to one host.
pub const MAX_PENDING_RPCS: usize = 256;
/// Largest tunnel speed test (`POST /v1/hosts/{id}/speedtest`).
pub const SPEEDTEST_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Longest deadline an RPC may ask for.
pub const MAX_DEADLINE_MS: u32 = 60_000;

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS host (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    host_id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT 'never connected',
    last_seen_ms INTEGER,
    conn TEXT,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
";

/// Whether a host is reachable, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostStatus {
    pub online: bool,
    /// Why it is offline (or `connected`).
    pub reason: String,
    /// When its tunnel last carried anything (RFC 3339).
    pub last_seen_at: Option<String>,
    /// Commands waiting for the host.
    pub queued_commands: i64,
}

#[derive(Debug, Deserialize)]
struct Row {
    online: i64,
    reason: String,
    last_seen_ms: Option<i64>,
    revoked: i64,
}

/// A queued command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub seq: i64,
    pub kind: String,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueueError {
    #[error("{MAX_QUEUED} commands are already queued for this host")]
    Full,
    #[error("a command body is at most {MAX_COMMAND_BODY} bytes")]
    TooLarge,
    #[error("storage: {0}")]
    Sql(String),
}

impl From<SqlError> for QueueError {
    fn from(e: SqlError) -> Self {
        Self::Sql(e.message)
    }
}

pub struct HostStore<'a, S: Sql>(pub &'a S);

impl<S: Sql> HostStore<'_, S> {
    /// Creates the tables and the host's row (idempotent).
    pub fn open(&self, host_id: &str, org_id: &str) -> Result<(), SqlError> {
        self.0.execute_script(SCHEMA)?;
        self.0.execute(
            "INSERT OR IGNORE INTO host (id, host_id, org_id) VALUES (1, ?, ?)",
            &[host_id.into(), org_id.into()],
        )?;
        Ok(())
    }

    fn row(&self) -> Result<Row, SqlError> {
        Ok(self
            .0
            .query_one(
                "SELECT online, reason, last_seen_ms, revoked FROM host WHERE id = 1",
                &[],
            )?
            .unwrap_or(Row {
                online: 0,
                reason: "never connected".into(),
                last_seen_ms: None,
                revoked: 0,
            }))
    }

    pub fn status(&self) -> Result<HostStatus, SqlError> {
        let r = self.row()?;
        #[derive(Deserialize)]
        struct N {
            n: i64,
        }
        let queued = self
            .0
            .query_one::<N>("SELECT count(*) AS n FROM commands", &[])?
            .map_or(0, |n| n.n);
        Ok(HostStatus {
            online: r.online != 0,
            reason: r.reason,
            last_seen_at: r.last_seen_ms.map(rfc3339),
            queued_commands: queued,
        })
    }

    pub fn revoked(&self) -> Result<bool, SqlError> {
        Ok(self.row()?.revoked != 0)
    }

    pub fn revoke(&self, now: i64) -> Result<(), SqlError> {
        self.0.execute("DELETE FROM commands", &[])?;
        self.set_offline("revoked", now)?;
        self.0
            .execute("UPDATE host SET revoked = 1 WHERE id = 1", &[])
            .map(drop)
    }

    /// Connection `conn` is now the host's tunnel (replacing any other).
    pub fn connected(&self, conn: &str, now: i64) -> Result<(), SqlError> {
        self.0
            .execute(
                "UPDATE host SET online = 1, reason = 'connected', last_seen_ms = ?, conn = ? \
                 WHERE id = 1",
                &[now.into(), conn.into()],
            )
            .map(drop)
    }

    /// The tunnel carried a heartbeat.
    pub fn seen(&self, now: i64) -> Result<(), SqlError> {
        self.0
            .execute(
                "UPDATE host SET last_seen_ms = ? WHERE id = 1",
                &[now.into()],
            )
            .map(drop)
    }

    pub fn last_seen_ms(&self) -> Result<Option<i64>, SqlError> {
        Ok(self.row()?.last_seen_ms)
    }

    /// Connection `conn` ended; the host goes offline only if it was the current one (a
    /// replaced connection's end says nothing about the host).
    pub fn disconnected(&self, conn: &str, reason: &str, now: i64) -> Result<bool, SqlError> {
        Ok(self.0.execute(
            "UPDATE host SET online = 0, reason = ?, last_seen_ms = max(coalesce(last_seen_ms, 0), ?) \
             WHERE id = 1 AND conn = ? AND revoked = 0",
            &[reason.into(), now.into(), conn.into()],
        )? > 0)
    }

    /// The host's tunnel is gone without a close event (the edge restarted under it): offline
    /// if it was online. Answers whether it was.
    pub fn tunnel_lost(&self) -> Result<bool, SqlError> {
        Ok(self.0.execute(
            "UPDATE host SET online = 0, reason = 'tunnel lost (the edge restarted)' \
             WHERE id = 1 AND online = 1",
            &[],
        )? > 0)
    }

    fn set_offline(&self, reason: &str, now: i64) -> Result<(), SqlError> {
        self.0
            .execute(
                "UPDATE host SET online = 0, reason = ?, \
                 last_seen_ms = max(coalesce(last_seen_ms, 0), ?) WHERE id = 1",
                &[reason.into(), now.into()],
            )
            .map(drop)
    }

    /// Queues a command; answers it with its place in the order. Ids are the caller's, so a
    /// retried enqueue of the same id does not queue it twice.
    pub fn enqueue(
        &self,
        id: &str,
        kind: &str,
        body: &[u8],
        now: i64,
    ) -> Result<Command, QueueError> {
        if body.len() > MAX_COMMAND_BODY {
            return Err(QueueError::TooLarge);
        }
        if let Some(known) = self.command(id)? {
            return Ok(known);
        }
        if self.status()?.queued_commands >= MAX_QUEUED {
            return Err(QueueError::Full);
        }
        self.0.execute(
            "INSERT INTO commands (id, kind, body, created_ms) VALUES (?, ?, ?, ?)",
            &[id.into(), kind.into(), body.to_vec().into(), now.into()],
        )?;
        self.command(id)?
            .ok_or_else(|| QueueError::Sql("the command vanished".into()))
    }

    fn command(&self, id: &str) -> Result<Option<Command>, SqlError> {
        Ok(self
            .commands_where("WHERE id = ?", &[id.into()])?
            .into_iter()
            .next())
    }

    fn commands_where(&self, clause: &str, params: &[SqlValue]) -> Result<Vec<Command>, SqlError> {
        let mut out = Vec::new();
        self.0.for_each_row(
            &format!("SELECT seq, id, kind, body FROM commands {clause} ORDER BY seq"),
            params,
            &mut |values| {
                let mut it = values.into_iter();
                if let (
                    Some(SqlValue::Integer(seq)),
                    Some(SqlValue::Text(id)),
                    Some(SqlValue::Text(kind)),
                    Some(body),
                ) = (
                    it.next(),
                    it.next(),
                    it.next(),
                    it.next().and_then(SqlValue::into_bytes),
                ) {
                    out.push(Command {
                        id,
                        seq,
                        kind,
                        body,
                    });
                }
                true
            },
        )?;
        Ok(out)
    }

    /// Every queued command, in order: what a (re)connected daemon is sent.
    pub fn queued(&self) -> Result<Vec<Command>, SqlError> {
        self.commands_where("", &[])
    }

    /// The daemon handled `id`: it leaves the queue (a repeated ack is harmless).
    pub fn ack(&self, id: &str) -> Result<bool, SqlError> {
        Ok(self
            .0
            .execute("DELETE FROM commands WHERE id = ?", &[id.into()])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::NativeSql;

    #[test]
    fn commands_queue_in_order_once_and_leave_on_ack() {
        let sql = NativeSql::open_in_memory().unwrap();
        let h = HostStore(&sql);
        h.open("hst_1", "org_1").unwrap();
        h.open("hst_1", "org_1").unwrap();
        let a = h.enqueue("c1", "session.start", b"{}", 1).unwrap();
        let b = h.enqueue("c2", "session.stop", b"{}", 2).unwrap();
        assert_eq!(
            h.enqueue("c1", "session.start", b"{}", 3).unwrap(),
            a,
            "retried enqueue"
        );
        assert!(a.seq < b.seq);
        let ids: Vec<String> = h.queued().unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert!(h.ack("c1").unwrap());
        assert!(!h.ack("c1").unwrap(), "a repeated ack changes nothing");
        assert_eq!(h.status().unwrap().queued_commands, 1);
        assert_eq!(
            h.enqueue("big", "x", &vec![0; MAX_COMMAND_BODY + 1], 4),
            Err(QueueError::TooLarge)
        );
    }

    #[test]
    fn the_queue_is_capped() {
        let sql = NativeSql::open_in_memory().unwrap();
        let h = HostStore(&sql);
        h.open("hst_1", "org_1").unwrap();
        sql.transaction(|| {
            for i in 0..MAX_QUEUED {
                h.enqueue(&format!("c{i}"), "k", b"", 0)
                    .map_err(|e| SqlError::new(e.to_string()))?;
            }
            Ok::<_, SqlError>(())
        })
        .unwrap();
        assert_eq!(h.enqueue("one-more", "k", b"", 0), Err(QueueError::Full));
    }

    #[test]
    fn status_tells_why_a_host_is_offline() {
        let sql = NativeSql::open_in_memory().unwrap();
        let h = HostStore(&sql);
        h.open("hst_1", "org_1").unwrap();
        let s = h.status().unwrap();
        assert_eq!(
            (s.online, s.reason.as_str(), s.last_seen_at),
            (false, "never connected", None)
        );
        h.connected("a", 900).unwrap();
        h.connected("b", 1_000).unwrap();
        assert!(h.status().unwrap().online);
        assert!(
            !h.disconnected("a", "replaced", 1_100).unwrap(),
            "an old connection ending"
        );
        assert!(h.status().unwrap().online);
        assert!(h.disconnected("b", "heartbeat timeout", 500).unwrap());
        let s = h.status().unwrap();
        assert_eq!((s.online, s.reason.as_str()), (false, "heartbeat timeout"));
        assert_eq!(
            s.last_seen_at.as_deref(),
            Some(rfc3339(1_000).as_str()),
            "never goes back"
        );
        assert!(
            !h.tunnel_lost().unwrap(),
            "already offline: the reason stays"
        );
        assert_eq!(h.status().unwrap().reason, "heartbeat timeout");
        h.connected("c", 1_200).unwrap();
        assert!(h.tunnel_lost().unwrap());
        let s = h.status().unwrap();
        assert_eq!(
            (s.online, s.reason.as_str()),
            (false, "tunnel lost (the edge restarted)")
        );
        assert_eq!(s.last_seen_at.as_deref(), Some(rfc3339(1_200).as_str()));
        h.enqueue("c", "k", b"", 0).unwrap();
        h.revoke(2_000).unwrap();
        assert!(h.revoked().unwrap());
        assert_eq!(
            h.status().unwrap().queued_commands,
            0,
            "a revoked host's queue is dropped"
        );
    }
}
