//! The daemon's local database: a libsql (SQLite) file at `<state dir>/state.db`.
//!
//! The schema is a list of numbered migrations ([`MIGRATIONS`]); opening the database applies
//! the ones it lacks, each in its own transaction, and records them in `schema_migrations`.
//! Opening is idempotent and safe for two processes at once (`tether status` while `tether up`
//! runs): migrations take a write lock first, and the journal is WAL so readers never block the
//! daemon.
//!
//! Tables so far:
//! - `kv(key, value)`: small settings; the pairing (`host_id`, `org_id`, `server`).
//! - `commands(id, seq, received_at, done_at)`: every command the edge delivered, so a command
//!   redelivered after a lost ack is recognised and not run twice. Times are Unix milliseconds.
//! - `links(project_id, project_name, path)`: the local checkout of each project linked here.
//! - `sessions(...)`: every agent session this machine ran: its status as last reported
//!   (`version` bumps on each change, `reported` is the version the edge acknowledged) and its
//!   output's shipping state (`shipped` spool bytes acknowledged by the stream, the producer's
//!   epoch and next seq, and `inflight_end`, the end of the batch sent with that seq and not yet
//!   acknowledged, so a restart resends exactly that batch).
//! - `worktrees(path, checkout, ...)`: git worktrees Tether created or imported.
//! - `policy_decisions(id, at, session_id, agent, event, policy, decision, reason,
//!   duration_us)`: every guardrail policy's decision; `kv.decisions_reported` is the last id
//!   the org has.
//! - `mirror_rows(tbl, key, row)` and `mirror_shapes(tbl, handle, next_offset, cursor, schema,
//!   synced_at, live, resyncs)`: the org's tables as the edge's shape API last delivered them
//!   (`row` is a JSON object of Postgres text values; indexed by its `id`, and by `number` for
//!   the tasks' newest-first lists) and where each table's sync stands; see [`crate::mirror`].

use crate::Error;
use libsql::{Connection, TransactionBehavior, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema, in order. Never edit a shipped entry: add a new one.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE kv (
         key   TEXT PRIMARY KEY,
         value TEXT NOT NULL
     ) STRICT;
     CREATE TABLE commands (
         id          TEXT PRIMARY KEY,
         seq         INTEGER NOT NULL,
         received_at INTEGER NOT NULL,
         done_at     INTEGER
     ) STRICT;
     CREATE INDEX commands_by_seq ON commands (seq);",
    ),
    (
        2,
        "CREATE TABLE links (
         project_id   TEXT PRIMARY KEY,
         project_name TEXT NOT NULL,
         path         TEXT NOT NULL UNIQUE,
         linked_at    INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE sessions (
         id             TEXT PRIMARY KEY,
         project_id     TEXT NOT NULL,
         agent          TEXT NOT NULL,
         stream_path    TEXT NOT NULL,
         branch         TEXT,
         worktree       TEXT,
         status         TEXT NOT NULL,
         reason         TEXT,
         exit_code      INTEGER,
         created_at     INTEGER NOT NULL,
         started_at     INTEGER,
         ended_at       INTEGER,
         shipped        INTEGER NOT NULL DEFAULT 0,
         producer_epoch INTEGER NOT NULL DEFAULT 0,
         producer_seq   INTEGER NOT NULL DEFAULT 0,
         inflight_end   INTEGER,
         stream_closed  INTEGER NOT NULL DEFAULT 0,
         version        INTEGER NOT NULL DEFAULT 1,
         reported       INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE INDEX sessions_by_status ON sessions (status);
     CREATE TABLE worktrees (
         path              TEXT PRIMARY KEY,
         checkout          TEXT NOT NULL,
         project_id        TEXT,
         branch            TEXT,
         session_id        TEXT,
         created_by_tether INTEGER NOT NULL,
         created_at        INTEGER NOT NULL
     ) STRICT;",
    ),
    (
        3,
        "CREATE TABLE policy_decisions (
         id          INTEGER PRIMARY KEY,
         at          INTEGER NOT NULL,
         session_id  TEXT,
         event       TEXT NOT NULL,
         policy      TEXT NOT NULL,
         decision    TEXT NOT NULL,
         reason      TEXT,
         duration_us INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX policy_decisions_by_time ON policy_decisions (at);",
    ),
    (4, "ALTER TABLE policy_decisions ADD COLUMN agent TEXT;"),
    (
        5,
        "CREATE TABLE mirror_rows (
         tbl TEXT NOT NULL,
         key TEXT NOT NULL,
         row TEXT NOT NULL,
         PRIMARY KEY (tbl, key)
     ) STRICT;
     CREATE INDEX mirror_rows_by_id ON mirror_rows (tbl, json_extract(row, '$.id'));
     CREATE INDEX mirror_rows_by_number
         ON mirror_rows (tbl, CAST(json_extract(row, '$.number') AS INTEGER));
     CREATE TABLE mirror_shapes (
         tbl         TEXT PRIMARY KEY,
         handle      TEXT,
         next_offset TEXT NOT NULL,
         cursor      TEXT,
         schema      TEXT,
         synced_at   INTEGER,
         live        INTEGER NOT NULL,
         resyncs     INTEGER NOT NULL DEFAULT 0
     ) STRICT;",
    ),
];

/// Keys of the `kv` table.
pub mod keys {
    pub const HOST_ID: &str = "host_id";
    pub const ORG_ID: &str = "org_id";
    pub const SERVER: &str = "server";
}

/// This machine's registration with an edge, saved when a pairing is approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pairing {
    pub host_id: String,
    pub org_id: String,
    /// The edge's base URL.
    pub server: String,
}

/// What the database knew about a command when it was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// First delivery: run it.
    New,
    /// Delivered before and not finished (the daemon stopped while running it).
    Unfinished,
    /// Delivered and finished before: only acknowledge it again.
    Done,
}

/// One row of `commands`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    pub id: String,
    pub seq: i64,
    pub received_at: i64,
    pub done_at: Option<i64>,
}

/// An open state database.
pub struct State {
    path: PathBuf,
    // The connection borrows nothing, but the database must outlive it.
    db: libsql::Database,
    conn: Connection,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("path", &self.path).finish()
    }
}

impl State {
    /// Opens (creating if needed, mode 0600) and migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::paths::ensure_private_dir(dir)?;
        }
        create_private(path)?;
        Self::open_at(path.to_owned(), path).await
    }

    /// A private in-memory database (tests).
    pub async fn open_in_memory() -> Result<Self, Error> {
        Self::open_at(PathBuf::from(":memory:"), Path::new(":memory:")).await
    }

    async fn open_at(display: PathBuf, path: &Path) -> Result<Self, Error> {
        let db = libsql::Builder::new_local(path)
            .build()
            .await
            .map_err(db_err(&display, "opening"))?;
        let conn = db.connect().map_err(db_err(&display, "connecting"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(db_err(&display, "setting the busy timeout"))?;
        let state = Self {
            path: display,
            db,
            conn,
        };
        if path != Path::new(":memory:") {
            // Answers a row, so it is a query, not an execute.
            let mut rows = state
                .conn
                .query("PRAGMA journal_mode = WAL", ())
                .await
                .map_err(state.err("enabling WAL"))?;
            while rows
                .next()
                .await
                .map_err(state.err("enabling WAL"))?
                .is_some()
            {}
        }
        state.migrate().await?;
        Ok(state)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the table modules that extend `State` (sessions, worktrees).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A connection of its own to this database, for a component that runs its own
    /// transactions (the mirror): statements another task sends on the shared connection while
    /// a transaction is open there would land inside it. (For an in-memory database this is a
    /// different, empty database: such components need a file.)
    pub(crate) fn connect(&self) -> Result<Connection, Error> {
        let conn = self.db.connect().map_err(self.err("connecting"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(self.err("setting the busy timeout"))?;
        Ok(conn)
    }

    /// Turns a libsql error into ours, naming the database and what we were doing.
    pub(crate) fn err(&self, action: &'static str) -> impl FnOnce(libsql::Error) -> Error + use<> {
        db_err(&self.path, action)
    }

    /// Every row `sql` answers, as its columns' values (the table modules map them).
    pub(crate) async fn rows(
        &self,
        sql: &str,
        params: impl libsql::params::IntoParams,
        action: &'static str,
    ) -> Result<Vec<Vec<Value>>, Error> {
        let mut rows = self
            .conn
            .query(sql, params)
            .await
            .map_err(self.err(action))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.map_err(self.err(action))? {
            let cols = (0..row.column_count())
                .map(|i| row.get_value(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(self.err(action))?;
            out.push(cols);
        }
        Ok(out)
    }

    /// Applies the migrations this database lacks. Returns how many it applied.
    pub async fn migrate(&self) -> Result<usize, Error> {
        self.conn
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    INTEGER PRIMARY KEY,
                     applied_at INTEGER NOT NULL
                 ) STRICT",
                (),
            )
            .await
            .map_err(self.err("creating schema_migrations"))?;
        let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        let mut applied = 0;
        for (version, sql) in MIGRATIONS {
            // IMMEDIATE: take the write lock before looking, so two processes opening a new
            // database at once cannot both apply the same step.
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .await
                .map_err(self.err("starting a migration"))?;
            let current = int(
                &tx,
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                (),
            )
            .await
            .map_err(self.err("reading the schema version"))?
            .unwrap_or(0);
            if current > known {
                return Err(Error::SchemaTooNew {
                    path: self.path.clone(),
                    found: current,
                    known,
                });
            }
            if current >= *version {
                continue;
            }
            tx.execute_batch(sql)
                .await
                .map_err(self.err("applying a migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                (*version, now_ms()),
            )
            .await
            .map_err(self.err("recording a migration"))?;
            tx.commit()
                .await
                .map_err(self.err("committing a migration"))?;
            applied += 1;
        }
        Ok(applied)
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, Error> {
        Ok(int(
            &self.conn,
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            (),
        )
        .await
        .map_err(self.err("reading the schema version"))?
        .unwrap_or(0))
    }

    /// A `kv` value.
    pub async fn get(&self, key: &str) -> Result<Option<String>, Error> {
        text(&self.conn, "SELECT value FROM kv WHERE key = ?1", [key])
            .await
            .map_err(self.err("reading a setting"))
    }

    /// Sets a `kv` value.
    pub async fn set(&self, key: &str, value: &str) -> Result<(), Error> {
        set(&self.conn, key, value)
            .await
            .map_err(self.err("writing a setting"))
    }

    /// Removes a `kv` value.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.conn
            .execute("DELETE FROM kv WHERE key = ?1", [key])
            .await
            .map(drop)
            .map_err(self.err("deleting a setting"))
    }

    /// The pairing, if this machine has been paired (all three keys present).
    pub async fn pairing(&self) -> Result<Option<Pairing>, Error> {
        let (Some(host_id), Some(org_id), Some(server)) = (
            self.get(keys::HOST_ID).await?,
            self.get(keys::ORG_ID).await?,
            self.get(keys::SERVER).await?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Pairing {
            host_id,
            org_id,
            server,
        }))
    }

    /// Saves a pairing, replacing any earlier one, in one transaction.
    pub async fn save_pairing(&self, p: &Pairing) -> Result<(), Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .await
            .map_err(self.err("saving the pairing"))?;
        for (k, v) in [
            (keys::HOST_ID, &p.host_id),
            (keys::ORG_ID, &p.org_id),
            (keys::SERVER, &p.server),
        ] {
            set(&tx, k, v)
                .await
                .map_err(self.err("saving the pairing"))?;
        }
        tx.commit().await.map_err(self.err("saving the pairing"))
    }

    /// Forgets the pairing (the identity key stays).
    pub async fn clear_pairing(&self) -> Result<(), Error> {
        self.conn
            .execute(
                "DELETE FROM kv WHERE key IN (?1, ?2, ?3)",
                (keys::HOST_ID, keys::ORG_ID, keys::SERVER),
            )
            .await
            .map(drop)
            .map_err(self.err("clearing the pairing"))
    }

    /// Records that command `id` (the edge's sequence number `seq`) arrived, and says whether
    /// it is new. Recording is atomic, so of two deliveries of one command exactly one is
    /// [`Received::New`].
    pub async fn receive_command(&self, id: &str, seq: i64) -> Result<Received, Error> {
        let inserted = self
            .conn
            .execute(
                "INSERT INTO commands (id, seq, received_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                (id, seq, now_ms()),
            )
            .await
            .map_err(self.err("recording a command"))?;
        if inserted > 0 {
            return Ok(Received::New);
        }
        match self.command(id).await? {
            Some(CommandRecord {
                done_at: Some(_), ..
            }) => Ok(Received::Done),
            _ => Ok(Received::Unfinished),
        }
    }

    /// Marks command `id` finished. False if it was never received or already finished.
    pub async fn finish_command(&self, id: &str) -> Result<bool, Error> {
        let n = self
            .conn
            .execute(
                "UPDATE commands SET done_at = ?2 WHERE id = ?1 AND done_at IS NULL",
                (id, now_ms()),
            )
            .await
            .map_err(self.err("finishing a command"))?;
        Ok(n > 0)
    }

    /// The record of command `id`.
    pub async fn command(&self, id: &str) -> Result<Option<CommandRecord>, Error> {
        Ok(self
            .commands_where("WHERE id = ?1", [id])
            .await?
            .into_iter()
            .next())
    }

    /// The last `limit` commands received, oldest first.
    pub async fn recent_commands(&self, limit: u32) -> Result<Vec<CommandRecord>, Error> {
        let mut recent = self
            .commands_where("ORDER BY seq DESC LIMIT ?1", [limit])
            .await?;
        recent.reverse();
        Ok(recent)
    }

    async fn commands_where(
        &self,
        clause: &str,
        params: impl libsql::params::IntoParams,
    ) -> Result<Vec<CommandRecord>, Error> {
        let failed = || self.err("reading a command");
        let mut rows = self
            .conn
            .query(
                &format!("SELECT id, seq, received_at, done_at FROM commands {clause}"),
                params,
            )
            .await
            .map_err(failed())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.map_err(failed())? {
            let cols = (0..4)
                .map(|i| row.get_value(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed())?;
            match cols.as_slice() {
                [
                    Value::Text(id),
                    Value::Integer(seq),
                    Value::Integer(received_at),
                    done,
                ] => out.push(CommandRecord {
                    id: id.clone(),
                    seq: *seq,
                    received_at: *received_at,
                    done_at: match done {
                        Value::Integer(t) => Some(*t),
                        _ => None,
                    },
                }),
                _ => {
                    return Err(db_err(&self.path, "reading a command")(
                        libsql::Error::InvalidColumnType,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The highest sequence number received, to resume delivery from.
    pub async fn last_command_seq(&self) -> Result<Option<i64>, Error> {
        int(&self.conn, "SELECT MAX(seq) FROM commands", ())
            .await
            .map_err(self.err("reading the last command"))
    }

    /// Deletes finished commands finished before `before_ms`; returns how many.
    pub async fn prune_commands(&self, before_ms: i64) -> Result<u64, Error> {
        self.conn
            .execute(
                "DELETE FROM commands WHERE done_at IS NOT NULL AND done_at < ?1",
                [before_ms],
            )
            .await
            .map_err(self.err("pruning commands"))
    }
}

fn db_err(path: &Path, action: &'static str) -> impl FnOnce(libsql::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Db {
        path,
        action,
        source,
    }
}

/// Creates an empty database file readable by its owner only, so SQLite (which gives its WAL
/// and shared-memory files the database's mode) never makes a world-readable one.
fn create_private(path: &Path) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Io {
            action: "creating",
            path: path.to_owned(),
            source,
        }),
    }
}

async fn set(conn: &Connection, key: &str, value: &str) -> libsql::Result<()> {
    conn.execute(
        "INSERT INTO kv (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
    .await
    .map(drop)
}

/// A column's value, if it is text.
pub(crate) fn col_text(v: &Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s.clone()),
        _ => None,
    }
}

/// A column's value, if it is an integer.
pub(crate) fn col_int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        _ => None,
    }
}

/// The first column of the first row, if it is text.
async fn text(
    conn: &Connection,
    sql: &str,
    params: impl libsql::params::IntoParams,
) -> libsql::Result<Option<String>> {
    match first_value(conn, sql, params).await? {
        Some(Value::Text(s)) => Ok(Some(s)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(libsql::Error::InvalidColumnType),
    }
}

/// The first column of the first row, if it is an integer.
async fn int(
    conn: &Connection,
    sql: &str,
    params: impl libsql::params::IntoParams,
) -> libsql::Result<Option<i64>> {
    match first_value(conn, sql, params).await? {
        Some(Value::Integer(i)) => Ok(Some(i)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(libsql::Error::InvalidColumnType),
    }
}

async fn first_value(
    conn: &Connection,
    sql: &str,
    params: impl libsql::params::IntoParams,
) -> libsql::Result<Option<Value>> {
    let mut rows = conn.query(sql, params).await?;
    match rows.next().await? {
        Some(row) => row.get_value(0).map(Some),
        None => Ok(None),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/state.db");
        let s = State::open(&path).await.unwrap();
        assert_eq!(s.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
        // Opening again, and migrating again, applies nothing and keeps the data.
        s.set("k", "v").await.unwrap();
        assert_eq!(s.migrate().await.unwrap(), 0);
        drop(s);
        let s = State::open(&path).await.unwrap();
        assert_eq!(s.migrate().await.unwrap(), 0);
        assert_eq!(s.schema_version().await.unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(s.get("k").await.unwrap().as_deref(), Some("v"));
        #[cfg(unix)]
        {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(crate::files::mode(&meta), Some(0o600));
        }
    }

    #[tokio::test]
    async fn two_handles_open_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (a, b) = tokio::join!(State::open(&path), State::open(&path));
        let (a, b) = (a.unwrap(), b.unwrap());
        a.set("x", "1").await.unwrap();
        assert_eq!(b.get("x").await.unwrap().as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = State::open(&path).await.unwrap();
        s.conn
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
                (),
            )
            .await
            .unwrap();
        drop(s);
        let err = State::open(&path).await.unwrap_err();
        assert!(
            matches!(err, Error::SchemaTooNew { found: 999, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn kv_and_pairing() {
        let s = State::open_in_memory().await.unwrap();
        assert_eq!(s.get("nope").await.unwrap(), None);
        s.set("a", "1").await.unwrap();
        s.set("a", "2").await.unwrap();
        assert_eq!(s.get("a").await.unwrap().as_deref(), Some("2"));
        s.delete("a").await.unwrap();
        assert_eq!(s.get("a").await.unwrap(), None);

        assert_eq!(s.pairing().await.unwrap(), None);
        let p = Pairing {
            host_id: "hst_1".into(),
            org_id: "org_1".into(),
            server: "http://127.0.0.1:8787".into(),
        };
        s.save_pairing(&p).await.unwrap();
        assert_eq!(s.pairing().await.unwrap(), Some(p.clone()));
        let p2 = Pairing {
            host_id: "hst_2".into(),
            ..p
        };
        s.save_pairing(&p2).await.unwrap();
        assert_eq!(s.pairing().await.unwrap(), Some(p2));
        s.clear_pairing().await.unwrap();
        assert_eq!(s.pairing().await.unwrap(), None);
    }

    #[tokio::test]
    async fn commands_once() {
        let s = State::open_in_memory().await.unwrap();
        assert_eq!(s.last_command_seq().await.unwrap(), None);
        assert_eq!(s.receive_command("cmd_1", 1).await.unwrap(), Received::New);
        assert_eq!(
            s.receive_command("cmd_1", 1).await.unwrap(),
            Received::Unfinished
        );
        assert!(s.finish_command("cmd_1").await.unwrap());
        assert!(!s.finish_command("cmd_1").await.unwrap());
        assert!(!s.finish_command("cmd_unknown").await.unwrap());
        assert_eq!(s.receive_command("cmd_1", 1).await.unwrap(), Received::Done);
        assert_eq!(s.receive_command("cmd_2", 7).await.unwrap(), Received::New);
        assert_eq!(s.last_command_seq().await.unwrap(), Some(7));

        let rec = s.command("cmd_1").await.unwrap().unwrap();
        assert_eq!(rec.seq, 1);
        assert!(rec.done_at.unwrap() >= rec.received_at);
        assert_eq!(s.command("cmd_2").await.unwrap().unwrap().done_at, None);
        assert_eq!(s.command("nope").await.unwrap(), None);

        // Pruning drops finished commands only.
        assert_eq!(s.prune_commands(i64::MAX).await.unwrap(), 1);
        assert_eq!(s.command("cmd_1").await.unwrap(), None);
        assert!(s.command("cmd_2").await.unwrap().is_some());
    }
}
