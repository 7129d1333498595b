//! The mirror's tables in the state database: `mirror_rows` (each row of each table as the
//! shape API delivered it, a JSON object of text values, keyed by the message key) and
//! `mirror_shapes` (where each table's sync stands: handle, offset, cursor, schema, when it was
//! last up to date).
//!
//! A response is applied in one transaction with its new offset and handle, so the database
//! always holds rows and a position that belong together: after a crash or a restart the
//! daemon asks again from exactly the offset whose messages it has. A 409 empties the table and
//! stores the new handle at offset -1 in one transaction too.
//!
//! The mirror runs its transactions on a connection of its own (behind a lock), never on the
//! state's shared one, where other tasks' statements could land inside them.

use super::protocol::{Message, OFFSET_START, Row, Schema};
use super::read::{Filter, Staleness};
use crate::Error;
use crate::state::{State, col_int, col_text, now_ms};
use libsql::{Connection, TransactionBehavior, Value};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{Mutex, watch};
use tracing::warn;

/// The org's tables the daemon mirrors, in the order it starts them.
pub const TABLES: &[&str] = &[
    "task_statuses",
    "projects",
    "tasks",
    "hosts",
    "sessions",
    "automations",
];

/// A key longer than this is skipped: keys name a table and a primary key, nothing more.
pub const MAX_KEY_BYTES: usize = 1024;
/// A row bigger than this (as stored JSON) is skipped, and any older version of it dropped, so
/// the mirror never shows an out-of-date row as current. The edge's own rows are far smaller
/// (a task's description is at most 100 000 characters).
pub const MAX_ROW_BYTES: usize = 1 << 20;

/// Where a table's sync stands: what the next request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The shape's handle; None before the first answer.
    pub handle: Option<String>,
    /// The offset of the last message the mirror has ([`OFFSET_START`]: none).
    pub offset: String,
    /// The last `electric-cursor` (live requests send it back).
    pub cursor: Option<String>,
}

impl Position {
    /// The start of a shape, with the handle a 409 named (if any).
    pub fn start(handle: Option<String>) -> Self {
        Self {
            handle,
            offset: OFFSET_START.to_owned(),
            cursor: None,
        }
    }

    pub fn is_start(&self) -> bool {
        self.offset == OFFSET_START
    }
}

/// A table's row of `mirror_shapes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeState {
    pub table: String,
    pub position: Position,
    /// The `electric-schema` last received, as sent (a JSON object).
    pub schema: Option<String>,
    /// Unix ms of the last response that ended up to date; None: not synced since the start
    /// (or since the last 409).
    pub synced_at: Option<i64>,
    /// The last response ended up to date (and the daemon has not stopped since).
    pub live: bool,
    /// How many times the edge made this table start over (409).
    pub resyncs: i64,
}

/// One 200 response: its messages and the position it leaves the table at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub handle: String,
    pub offset: String,
    pub cursor: Option<String>,
    /// `electric-schema`, when the response carried it (non-live ones do).
    pub schema: Option<String>,
    pub messages: Vec<Message>,
}

impl Batch {
    /// Whether the response ends with up-to-date: the table is current at its offset.
    pub fn up_to_date(&self) -> bool {
        self.messages.contains(&Message::UpToDate)
    }
}

/// What applying a batch did, for the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub upserted: usize,
    pub deleted: usize,
    /// Messages over the size caps.
    pub skipped: usize,
    pub up_to_date: bool,
}

/// The `kv` key naming whose tables the mirror holds (see [`owner`]).
const OWNER_KEY: &str = "mirror_owner";

/// Whose tables a mirror holds: the org at its server.
pub fn owner(server: &str, org_id: &str) -> String {
    format!("{}/v1/orgs/{org_id}", server.trim_end_matches('/'))
}

/// The mirror of the org's tables in the state database.
pub struct Mirror {
    state: Arc<State>,
    conn: Mutex<Connection>,
    /// Bumped after every committed change, for whoever waits on the mirror (benchmarks).
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// The mirror in `state`'s database, on a connection of its own. The database must be a
    /// file (an in-memory one gives the mirror a separate, empty database).
    pub fn new(state: Arc<State>) -> Result<Self, Error> {
        let conn = state.connect()?;
        Ok(Self {
            state,
            conn: Mutex::new(conn),
            changes: watch::Sender::new(0),
        })
    }

    /// Opens (creating and migrating) the state database at `path` and its mirror.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        Self::new(Arc::new(State::open(path).await?))
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// A receiver that sees a new value after every committed change to the mirror.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn err(&self, action: &'static str) -> impl FnOnce(libsql::Error) -> Error + use<> {
        self.state.err(action)
    }

    /// Whose tables the mirror holds ([`owner`]); None before a daemon first claimed it.
    pub async fn owner(&self) -> Result<Option<String>, Error> {
        self.state.get(OWNER_KEY).await
    }

    /// Makes the mirror `owner`'s: when it held another org's tables (the machine was paired
    /// again elsewhere), they are all dropped first, in one transaction.
    pub async fn claim(&self, owner: &str) -> Result<(), Error> {
        let conn = self.conn.lock().await;
        let failed = || self.err("claiming the mirror");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .await
            .map_err(failed())?;
        let mut rows = tx
            .query("SELECT value FROM kv WHERE key = ?1", [OWNER_KEY])
            .await
            .map_err(failed())?;
        let current: Option<String> = match rows.next().await.map_err(failed())? {
            Some(row) => row.get(0).ok(),
            None => None,
        };
        drop(rows);
        if current.as_deref() == Some(owner) {
            return Ok(());
        }
        if current.is_some() {
            warn!(
                from = current.as_deref().unwrap_or(""),
                to = owner,
                "the mirror held another org's tables; dropping them"
            );
        }
        tx.execute_batch("DELETE FROM mirror_rows; DELETE FROM mirror_shapes;")
            .await
            .map_err(failed())?;
        tx.execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (OWNER_KEY, owner),
        )
        .await
        .map_err(failed())?;
        tx.commit().await.map_err(failed())?;
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Every table's sync state, in table order.
    pub async fn shapes(&self) -> Result<Vec<ShapeState>, Error> {
        let conn = self.conn.lock().await;
        shapes(&conn, None)
            .await
            .map_err(self.err("reading the mirror's state"))
    }

    /// One table's sync state; None before its first answer.
    pub async fn shape(&self, table: &str) -> Result<Option<ShapeState>, Error> {
        let conn = self.conn.lock().await;
        Ok(shapes(&conn, Some(table))
            .await
            .map_err(self.err("reading the mirror's state"))?
            .into_iter()
            .next())
    }

    /// Applies one response to `table`: its changes, its position and, when it ends up to
    /// date, the time; all in one transaction.
    pub async fn apply(&self, table: &str, batch: &Batch) -> Result<Applied, Error> {
        let conn = self.conn.lock().await;
        let failed = || self.err("applying a shape response");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .await
            .map_err(failed())?;
        let applied = apply_messages(&tx, table, &batch.messages)
            .await
            .map_err(failed())?;
        let up_to_date = applied.up_to_date;
        tx.execute(
            "INSERT INTO mirror_shapes (tbl, handle, next_offset, cursor, schema, synced_at, live)
             VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?6 THEN ?7 END, ?6)
             ON CONFLICT (tbl) DO UPDATE SET
                 handle = excluded.handle,
                 next_offset = excluded.next_offset,
                 cursor = COALESCE(excluded.cursor, cursor),
                 schema = COALESCE(excluded.schema, schema),
                 synced_at = CASE WHEN ?6 THEN ?7 ELSE synced_at END,
                 live = excluded.live",
            (
                table,
                batch.handle.as_str(),
                batch.offset.as_str(),
                opt(batch.cursor.as_deref()),
                opt(batch.schema.as_deref()),
                i64::from(up_to_date),
                now_ms(),
            ),
        )
        .await
        .map_err(failed())?;
        tx.commit().await.map_err(failed())?;
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        Ok(applied)
    }

    /// The edge no longer serves the table's handle (409): drops its rows and stores the new
    /// handle at offset -1, in one transaction.
    pub async fn reset(&self, table: &str, handle: Option<&str>) -> Result<(), Error> {
        let conn = self.conn.lock().await;
        let failed = || self.err("resetting a mirrored table");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .await
            .map_err(failed())?;
        tx.execute("DELETE FROM mirror_rows WHERE tbl = ?1", [table])
            .await
            .map_err(failed())?;
        tx.execute(
            "INSERT INTO mirror_shapes (tbl, handle, next_offset, live, resyncs)
             VALUES (?1, ?2, ?3, 0, 1)
             ON CONFLICT (tbl) DO UPDATE SET
                 handle = excluded.handle, next_offset = excluded.next_offset, cursor = NULL,
                 schema = NULL, synced_at = NULL, live = 0, resyncs = resyncs + 1",
            (table, opt(handle), OFFSET_START),
        )
        .await
        .map_err(failed())?;
        tx.commit().await.map_err(failed())?;
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Marks `table` (None: every table) not live: the daemon stops syncing it (a clean
    /// shutdown, a revoked host) or cannot reach the edge for now.
    pub async fn stop_live(&self, table: Option<&str>) -> Result<(), Error> {
        let conn = self.conn.lock().await;
        conn.execute(
            "UPDATE mirror_shapes SET live = 0 WHERE live = 1 AND (?1 IS NULL OR tbl = ?1)",
            [opt(table)],
        )
        .await
        .map(drop)
        .map_err(self.err("marking the mirror not live"))
    }

    /// How current `tables` are together: the oldest sync time, live only if all are.
    pub async fn staleness(&self, tables: &[&str]) -> Result<Staleness, Error> {
        let conn = self.conn.lock().await;
        staleness(&conn, tables)
            .await
            .map_err(self.err("reading the mirror's state"))
    }

    /// `table`'s schema as last received (empty before the first non-live answer).
    pub async fn schema(&self, table: &str) -> Result<Schema, Error> {
        let shape = self.shape(table).await?;
        Ok(shape
            .and_then(|s| s.schema)
            .and_then(|s| {
                serde_json::from_str(&s)
                    .inspect_err(|e| warn!(table, error = %e, "the stored schema is not readable"))
                    .ok()
            })
            .unwrap_or_default())
    }

    /// The rows of `table` that `filter` selects, and how current the table is; both read in
    /// one transaction, so they belong together.
    pub async fn rows(&self, table: &str, filter: &Filter) -> Result<(Vec<Row>, Staleness), Error> {
        let conn = self.conn.lock().await;
        let failed = || self.err("reading the mirror");
        let (sql, params) = filter.sql(table)?;
        let tx = conn.transaction().await.map_err(failed())?;
        let stale = staleness(&tx, &[table]).await.map_err(failed())?;
        let mut rows = tx.query(&sql, params).await.map_err(failed())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.map_err(failed())? {
            let text: String = row.get(0).map_err(failed())?;
            match serde_json::from_str::<Row>(&text) {
                Ok(r) => out.push(r),
                Err(e) => warn!(table, error = %e, "skipping an unreadable mirrored row"),
            }
        }
        drop(rows);
        tx.rollback().await.map_err(failed())?;
        Ok((out, stale))
    }

    /// How many rows each table holds.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, Error> {
        let conn = self.conn.lock().await;
        let failed = || self.err("counting the mirror's rows");
        let mut rows = conn
            .query(
                "SELECT tbl, COUNT(*) FROM mirror_rows GROUP BY tbl ORDER BY tbl",
                (),
            )
            .await
            .map_err(failed())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.map_err(failed())? {
            out.push((row.get(0).map_err(failed())?, row.get(1).map_err(failed())?));
        }
        Ok(out)
    }
}

/// An optional text parameter.
fn opt(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::Text(s.to_owned()))
}

async fn apply_messages(
    conn: &Connection,
    table: &str,
    messages: &[Message],
) -> libsql::Result<Applied> {
    let upsert = conn
        .prepare(
            "INSERT INTO mirror_rows (tbl, key, row) VALUES (?1, ?2, ?3)
             ON CONFLICT (tbl, key) DO UPDATE SET row = excluded.row",
        )
        .await?;
    let delete = conn
        .prepare("DELETE FROM mirror_rows WHERE tbl = ?1 AND key = ?2")
        .await?;
    let read = conn
        .prepare("SELECT row FROM mirror_rows WHERE tbl = ?1 AND key = ?2")
        .await?;
    let mut applied = Applied::default();
    for message in messages {
        let (key, row) = match message {
            Message::Insert { key, value } => (key, value.clone()),
            Message::Update { key, value } => {
                // An update may carry only the changed columns: merge it over the stored row.
                let mut rows = read.query((table, key.as_str())).await?;
                let stored = match rows.next().await? {
                    Some(r) => r.get::<String>(0).ok(),
                    None => None,
                };
                drop(rows);
                read.reset();
                let mut row: Row = stored
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default();
                row.extend(value.iter().map(|(k, v)| (k.clone(), v.clone())));
                (key, row)
            }
            Message::Delete { key } => {
                delete.execute((table, key.as_str())).await?;
                delete.reset();
                applied.deleted += 1;
                continue;
            }
            Message::UpToDate => {
                applied.up_to_date = true;
                continue;
            }
            Message::MustRefetch | Message::Other => continue,
        };
        if key.len() > MAX_KEY_BYTES {
            warn!(
                table,
                bytes = key.len(),
                "skipping a change whose key is too long"
            );
            applied.skipped += 1;
            continue;
        }
        let text = serde_json::Value::Object(row).to_string();
        if text.len() > MAX_ROW_BYTES {
            warn!(table, key = %key, bytes = text.len(), "skipping a row over the mirror's size cap");
            delete.execute((table, key.as_str())).await?;
            delete.reset();
            applied.skipped += 1;
            continue;
        }
        upsert.execute((table, key.as_str(), text)).await?;
        upsert.reset();
        applied.upserted += 1;
    }
    Ok(applied)
}

async fn shapes(conn: &Connection, table: Option<&str>) -> libsql::Result<Vec<ShapeState>> {
    let mut rows = conn
        .query(
            "SELECT tbl, handle, next_offset, cursor, schema, synced_at, live, resyncs
             FROM mirror_shapes WHERE ?1 IS NULL OR tbl = ?1",
            [opt(table)],
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        let cols = (0..8)
            .map(|i| row.get_value(i))
            .collect::<libsql::Result<Vec<_>>>()?;
        let [
            tbl,
            handle,
            offset,
            cursor,
            schema,
            synced_at,
            live,
            resyncs,
        ] = cols.as_slice()
        else {
            return Err(libsql::Error::InvalidColumnType);
        };
        let (Some(table), Some(offset)) = (col_text(tbl), col_text(offset)) else {
            return Err(libsql::Error::InvalidColumnType);
        };
        out.push(ShapeState {
            table,
            position: Position {
                handle: col_text(handle),
                offset,
                cursor: col_text(cursor),
            },
            schema: col_text(schema),
            synced_at: col_int(synced_at),
            live: col_int(live) == Some(1),
            resyncs: col_int(resyncs).unwrap_or(0),
        });
    }
    out.sort_by_key(|s| TABLES.iter().position(|t| *t == s.table));
    Ok(out)
}

async fn staleness(conn: &Connection, tables: &[&str]) -> libsql::Result<Staleness> {
    let now = now_ms();
    let mut synced_at = Some(i64::MAX);
    let mut live = true;
    for table in tables {
        let shape = shapes(conn, Some(table)).await?.into_iter().next();
        let at = shape.as_ref().and_then(|s| s.synced_at);
        synced_at = synced_at.zip(at).map(|(a, b)| a.min(b));
        live &= shape.is_some_and(|s| s.live);
    }
    Ok(Staleness::new(
        synced_at.filter(|_| !tables.is_empty()),
        live,
        now,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::mirror::protocol::parse_body;
    use serde_json::json;

    async fn mirror(dir: &tempfile::TempDir) -> Mirror {
        Mirror::open(&dir.path().join("state.db")).await.unwrap()
    }

    fn batch(offset: &str, body: &str) -> Batch {
        Batch {
            handle: "h1".into(),
            offset: offset.into(),
            cursor: None,
            schema: Some(r#"{"id":{"type":"text","pk_index":0},"number":{"type":"int8"}}"#.into()),
            messages: parse_body(body.as_bytes()).unwrap(),
        }
    }

    async fn all(m: &Mirror, table: &str) -> Vec<serde_json::Value> {
        let (rows, _) = m.rows(table, &Filter::default()).await.unwrap();
        rows.into_iter().map(serde_json::Value::Object).collect()
    }

    #[tokio::test]
    async fn inserts_updates_merge_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(&dir).await;
        assert_eq!(m.shape("tasks").await.unwrap(), None);
        let a = m
            .apply(
                "tasks",
                &batch(
                    "1_0",
                    r#"[{"headers":{"operation":"insert"},"key":"k1","value":{"id":"tsk_1","title":"one","number":"1","project_id":null}},
                        {"headers":{"operation":"insert"},"key":"k2","value":{"id":"tsk_2","title":"two","number":"2","project_id":null}}]"#,
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            a,
            Applied {
                upserted: 2,
                ..Applied::default()
            }
        );
        // Not up to date yet: the position moved, the table is not synced.
        let s = m.shape("tasks").await.unwrap().unwrap();
        assert_eq!(s.position.offset, "1_0");
        assert_eq!(s.position.handle.as_deref(), Some("h1"));
        assert_eq!(s.synced_at, None);
        assert!(!s.live);
        assert!(m.staleness(&["tasks"]).await.unwrap().synced_at.is_none());

        let a = m
            .apply(
                "tasks",
                &batch(
                    "2_0",
                    r#"[{"headers":{"operation":"update"},"key":"k1","value":{"id":"tsk_1","title":"ONE"}},
                        {"headers":{"operation":"update"},"key":"k3","value":{"id":"tsk_3","title":"new by update"}},
                        {"headers":{"operation":"delete"},"key":"k2","value":{"id":"tsk_2"}},
                        {"headers":{"control":"up-to-date"}}]"#,
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            a,
            Applied {
                upserted: 2,
                deleted: 1,
                skipped: 0,
                up_to_date: true
            }
        );
        let rows = all(&m, "tasks").await;
        assert_eq!(
            rows,
            [
                json!({"id":"tsk_1","title":"ONE","number":"1","project_id":null}),
                json!({"id":"tsk_3","title":"new by update"}),
            ]
        );
        let s = m.shape("tasks").await.unwrap().unwrap();
        assert!(s.live && s.synced_at.is_some());
        assert_eq!(s.position.offset, "2_0");
        let stale = m.staleness(&["tasks"]).await.unwrap();
        assert!(stale.live, "{stale:?}");
        // Another table has not synced: together they are not.
        let both = m.staleness(&["tasks", "task_statuses"]).await.unwrap();
        assert!(both.synced_at.is_none() && !both.live);
        // Other tables are untouched.
        assert!(all(&m, "projects").await.is_empty());
        // A clean stop: no longer live, the time stays.
        m.stop_live(None).await.unwrap();
        let stale = m.staleness(&["tasks"]).await.unwrap();
        assert!(!stale.live && stale.synced_at.is_some());
    }

    #[tokio::test]
    async fn live_answers_keep_the_schema_and_the_last_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(&dir).await;
        m.apply(
            "tasks",
            &batch("1_0", r#"[{"headers":{"control":"up-to-date"}}]"#),
        )
        .await
        .unwrap();
        let mut live = batch("1_0", r#"[{"headers":{"control":"up-to-date"}}]"#);
        live.schema = None;
        live.cursor = Some("c1".into());
        m.apply("tasks", &live).await.unwrap();
        live.cursor = None;
        m.apply("tasks", &live).await.unwrap();
        let s = m.shape("tasks").await.unwrap().unwrap();
        assert_eq!(s.position.cursor.as_deref(), Some("c1"));
        assert!(s.schema.unwrap().contains("int8"));
        assert_eq!(m.schema("tasks").await.unwrap()["number"].ty, "int8");
    }

    #[tokio::test]
    async fn a_reset_empties_the_table_and_starts_over_with_the_new_handle() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(&dir).await;
        let rows = r#"[{"headers":{"operation":"insert"},"key":"k1","value":{"id":"a"}},{"headers":{"control":"up-to-date"}}]"#;
        m.apply("tasks", &batch("5_0", rows)).await.unwrap();
        m.apply("projects", &batch("5_0", rows)).await.unwrap();
        m.reset("tasks", Some("h2")).await.unwrap();
        assert!(all(&m, "tasks").await.is_empty());
        assert_eq!(all(&m, "projects").await.len(), 1);
        let s = m.shape("tasks").await.unwrap().unwrap();
        assert_eq!(s.position, Position::start(Some("h2".into())));
        assert_eq!(
            (s.synced_at, s.live, s.resyncs, s.schema),
            (None, false, 1, None)
        );
        m.reset("hosts", None).await.unwrap();
        assert_eq!(m.shape("hosts").await.unwrap().unwrap().resyncs, 1);
    }

    #[tokio::test]
    async fn a_reopened_database_resumes_from_the_stored_position() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = mirror(&dir).await;
            let mut b = batch(
                "7_3",
                r#"[{"headers":{"operation":"insert"},"key":"k1","value":{"id":"a"}},{"headers":{"control":"up-to-date"}}]"#,
            );
            b.cursor = Some("42".into());
            m.apply("tasks", &b).await.unwrap();
        }
        let m = mirror(&dir).await;
        let s = m.shape("tasks").await.unwrap().unwrap();
        assert_eq!(
            s.position,
            Position {
                handle: Some("h1".into()),
                offset: "7_3".into(),
                cursor: Some("42".into())
            }
        );
        assert_eq!(all(&m, "tasks").await, [json!({"id":"a"})]);
        assert_eq!(m.counts().await.unwrap(), [("tasks".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn a_mirror_claimed_by_another_org_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(&dir).await;
        assert_eq!(m.owner().await.unwrap(), None);
        let a = owner("http://edge/", "org_a");
        assert_eq!(a, "http://edge/v1/orgs/org_a");
        m.claim(&a).await.unwrap();
        let rows = r#"[{"headers":{"operation":"insert"},"key":"k1","value":{"id":"a"}}]"#;
        m.apply("tasks", &batch("1_0", rows)).await.unwrap();
        // The same org again: nothing changes.
        m.claim(&a).await.unwrap();
        assert_eq!(all(&m, "tasks").await.len(), 1);
        // Another: its tables start from nothing.
        m.claim(&owner("http://edge", "org_b")).await.unwrap();
        assert!(all(&m, "tasks").await.is_empty());
        assert!(m.shapes().await.unwrap().is_empty());
        assert_eq!(
            m.owner().await.unwrap().as_deref(),
            Some("http://edge/v1/orgs/org_b")
        );
    }

    /// How SQLite runs a filter's query.
    async fn plan(m: &Mirror, filter: &Filter) -> String {
        let (sql, params) = filter.sql("tasks").unwrap();
        let conn = m.conn.lock().await;
        let mut rows = conn
            .query(&format!("EXPLAIN QUERY PLAN {sql}"), params)
            .await
            .unwrap();
        let mut plan = String::new();
        while let Some(row) = rows.next().await.unwrap() {
            plan.push_str(&row.get::<String>(3).unwrap());
            plan.push('\n');
        }
        plan
    }

    #[tokio::test]
    async fn the_newest_tasks_and_lookups_by_id_use_the_indexes() {
        use crate::mirror::read::{Condition, Order};
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(&dir).await;
        let newest = Filter {
            order: Some(Order {
                column: "number".into(),
                numeric: true,
                descending: true,
            }),
            after: Some("100".into()),
            limit: Some(51),
            ..Filter::default()
        };
        let p = plan(&m, &newest).await;
        assert!(
            p.contains("mirror_rows_by_number") && !p.contains("TEMP B-TREE"),
            "{p}"
        );
        let by_id = Filter::default().with(Condition::Eq("id".into(), "tsk_1".into()));
        let p = plan(&m, &by_id).await;
        assert!(p.contains("mirror_rows_by_id"), "{p}");
    }

    #[tokio::test]
    async fn oversized_keys_and_rows_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(&dir).await;
        m.apply(
            "tasks",
            &batch(
                "1_0",
                r#"[{"headers":{"operation":"insert"},"key":"k1","value":{"id":"a","d":"small"}}]"#,
            ),
        )
        .await
        .unwrap();
        let big = "x".repeat(MAX_ROW_BYTES);
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let body = json!([
            {"headers": {"operation": "update"}, "key": "k1", "value": {"d": big}},
            {"headers": {"operation": "insert"}, "key": long_key, "value": {"id": "b"}},
            {"headers": {"operation": "insert"}, "key": "k2", "value": {"id": "c"}},
        ])
        .to_string();
        let a = m.apply("tasks", &batch("2_0", &body)).await.unwrap();
        assert_eq!((a.upserted, a.skipped), (1, 2));
        // The row that grew past the cap is gone rather than shown out of date.
        assert_eq!(all(&m, "tasks").await, [json!({"id":"c"})]);
        assert_eq!(
            m.shape("tasks").await.unwrap().unwrap().position.offset,
            "2_0"
        );
    }
}
