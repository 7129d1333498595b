//! The change log and the shapes served from it: snapshots, catch-up, compaction, and the
//! mirror of the directory's hosts.
//!
//! Every write to a synced table appends to `changes` through SQLite triggers (the schema's
//! last migration), in the writing transaction by construction: nothing here has to remember
//! to log. A shape starts with a snapshot taken at the log's tail L, delivered in keyset pages
//! by rowid; rows that change meanwhile are read as they are then, and replaying the log from
//! L (which follows the snapshot) brings every one of them to its current state. Compaction
//! deletes a prefix of the log and records how far (`meta.sync_purged_through`), so a reader
//! can tell whether what it needs is still there.

use super::Store;
use crate::error::StoreError;
use crate::ids;
use crate::sql::{Sql, SqlValue};
use crate::sync::filter::Filter;
use crate::sync::offset::{Handle, Offset, shape_hash};
use crate::sync::table::Table;
use crate::sync::{
    COMPACT_AGE_SLACK_MS, COMPACT_SLACK, Compacted, MAX_CHANGE_AGE_MS, MAX_CHANGES,
    MAX_RESPONSE_BYTES, MAX_SCAN, MirrorHost, PAGE_ROWS, ShapeChunk, ShapeMeta, ShapeRead,
    ShapeStep,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How far the log reaches.
#[derive(Debug, Clone, Copy)]
struct Log {
    /// Every entry up to here has been compacted away (0: none).
    purged: i64,
    /// The newest position (0 for an empty log).
    tail: i64,
}

#[derive(Deserialize)]
struct Num {
    n: Option<i64>,
}

#[derive(Deserialize)]
struct Ends {
    lo: Option<i64>,
    lo_at: Option<i64>,
    hi: Option<i64>,
}

/// A response's messages as they are written, with the caps on their number and size.
struct Body {
    bytes: Vec<u8>,
    messages: usize,
}

impl Body {
    fn new() -> Self {
        Self {
            bytes: b"[".to_vec(),
            messages: 0,
        }
    }

    fn full(&self) -> bool {
        self.messages >= PAGE_ROWS || self.bytes.len() >= MAX_RESPONSE_BYTES
    }

    /// Appends a change message (counted against [`PAGE_ROWS`]).
    fn push(&mut self, message: &Value) -> Result<(), StoreError> {
        self.write(message)?;
        self.messages += 1;
        Ok(())
    }

    /// Appends the control message that ends a response reaching the tail (not counted).
    fn up_to_date(&mut self) -> Result<(), StoreError> {
        self.write(&json!({"headers": {"control": "up-to-date"}}))
    }

    fn write(&mut self, message: &Value) -> Result<(), StoreError> {
        if self.bytes.len() > 1 {
            self.bytes.push(b',');
        }
        serde_json::to_writer(&mut self.bytes, message)?;
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.push(b']');
        self.bytes
    }
}

fn change(table: Table, operation: &str, row: &Map<String, Value>) -> Value {
    let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
    json!({
        "headers": {"operation": operation},
        "key": table.key(id),
        "value": table.value(row),
    })
}

/// A delete carries the key column only.
fn deletion(table: Table, row: &Map<String, Value>) -> Value {
    let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
    json!({
        "headers": {"operation": "delete"},
        "key": table.key(id),
        "value": {"id": id},
    })
}

fn object(text: Option<&str>) -> Option<Map<String, Value>> {
    match serde_json::from_str(text?) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// What a log entry means to a shape with `filter`: the row moved in (insert), changed inside
/// it (update), moved out (delete), or passed it by.
fn message(
    table: Table,
    filter: &Filter,
    op: &str,
    row: Option<&str>,
    old: Option<&str>,
) -> Option<Value> {
    let new = object(row);
    let old = object(old);
    let was = old.as_ref().is_some_and(|o| filter.matches(o));
    let is = new.as_ref().is_some_and(|n| filter.matches(n));
    match (op, was, is) {
        ("insert" | "update", false, true) => new.map(|n| change(table, "insert", &n)),
        ("update", true, true) => new.map(|n| change(table, "update", &n)),
        ("update" | "delete", true, false) => old.map(|o| deletion(table, &o)),
        _ => None,
    }
}

impl<S: Sql> Store<'_, S> {
    fn log(&self) -> Result<Log, StoreError> {
        #[derive(Deserialize)]
        struct Value {
            value: String,
        }
        let purged = self
            .sql
            .query_one::<Value>(
                "SELECT value FROM meta WHERE key = 'sync_purged_through'",
                &[],
            )?
            .and_then(|v| v.value.parse().ok())
            .unwrap_or(0);
        let hi = self
            .sql
            .query_one::<Num>("SELECT max(lsn) AS n FROM changes", &[])?
            .and_then(|n| n.n)
            .unwrap_or(0);
        // With every entry compacted away the tail is where the purge stopped (positions are
        // never reused: AUTOINCREMENT).
        Ok(Log {
            purged,
            tail: hi.max(purged),
        })
    }

    /// The newest log position.
    pub fn log_tail(&self) -> Result<i64, StoreError> {
        Ok(self.log()?.tail)
    }

    /// Reads one response's worth of a shape (see [`crate::sync`]) at time `now`.
    pub fn shape(&self, read: &ShapeRead, now: i64) -> Result<ShapeStep, StoreError> {
        self.sql.transaction(|| {
            if read.table == Table::Sessions {
                // As every read of sessions does: a queued one past its deadline fails first,
                // so the shape never shows it queued longer than the REST API would.
                self.expire_queued(now)?;
            }
            self.read_shape(read)
        })
    }

    fn read_shape(&self, read: &ShapeRead) -> Result<ShapeStep, StoreError> {
        let log = self.log()?;
        let hash = shape_hash(read.table, &read.filter);
        let fresh = Handle {
            hash: hash.clone(),
            at: log.tail,
        };
        let refetch = || {
            ShapeStep::Ready(ShapeChunk {
                meta: ShapeMeta {
                    must_refetch: true,
                    handle: fresh.to_string(),
                    offset: Offset::Start.to_string(),
                    up_to_date: false,
                },
                body: br#"[{"headers":{"control":"must-refetch"}}]"#.to_vec(),
            })
        };
        // The handle must be this shape's; the positions it needs must still be in the log.
        let served = |at: i64| at <= log.tail && at >= log.purged;
        match read.offset {
            Offset::Now => {
                let mut body = Body::new();
                body.up_to_date()?;
                Ok(ShapeStep::Ready(ShapeChunk {
                    meta: ShapeMeta {
                        must_refetch: false,
                        handle: fresh.to_string(),
                        offset: Offset::Log(log.tail).to_string(),
                        up_to_date: true,
                    },
                    body: body.finish(),
                }))
            }
            Offset::Start => self.snapshot(read, &fresh, 0, log),
            Offset::Snapshot { at, rowid } => match &read.handle {
                Some(h) if h.hash == hash && h.at == at && served(at) => {
                    self.snapshot(read, h, rowid, log)
                }
                _ => Ok(refetch()),
            },
            Offset::Log(lsn) => match &read.handle {
                Some(h) if h.hash == hash && served(lsn) => {
                    self.catch_up(read, h, lsn, Body::new(), log)
                }
                _ => Ok(refetch()),
            },
        }
    }

    /// One page of the snapshot taken at `handle.at`, after `after` (a rowid); the last page
    /// goes on with the log.
    fn snapshot(
        &self,
        read: &ShapeRead,
        handle: &Handle,
        after: i64,
        log: Log,
    ) -> Result<ShapeStep, StoreError> {
        let table = read.table;
        let mut sql = format!(
            "SELECT rowid, {} FROM \"{}\" WHERE rowid > ?",
            table.row_sql(),
            table.name()
        );
        let mut params: Vec<SqlValue> = vec![after.into()];
        for (column, value) in read.filter.conditions() {
            // The column name comes from the table definition, never from the request.
            let Some(column) = table.filter_column(column) else {
                return Err(StoreError::BadRequest {
                    field: "where".into(),
                    message: format!("`{column}` cannot be filtered on"),
                });
            };
            sql.push_str(&format!(" AND \"{column}\" = ?"));
            params.push(value.into());
        }
        sql.push_str(" ORDER BY rowid");
        let mut body = Body::new();
        let mut last = after;
        let mut more = false;
        let mut failed = None;
        self.sql.for_each_row(&sql, &params, &mut |values| {
            if body.full() {
                more = true;
                return false;
            }
            let mut it = values.into_iter();
            let (Some(SqlValue::Integer(rowid)), Some(SqlValue::Text(row))) =
                (it.next(), it.next())
            else {
                failed = Some("a snapshot row without rowid or JSON");
                return false;
            };
            if let Some(row) = object(Some(&row))
                && body.push(&change(table, "insert", &row)).is_err()
            {
                failed = Some("encoding a snapshot row");
                return false;
            }
            last = rowid;
            true
        })?;
        if let Some(what) = failed {
            return Err(StoreError::Sql(crate::sql::SqlError::new(what)));
        }
        if more {
            return Ok(ShapeStep::Ready(ShapeChunk {
                meta: ShapeMeta {
                    must_refetch: false,
                    handle: handle.to_string(),
                    offset: Offset::Snapshot {
                        at: handle.at,
                        rowid: last,
                    }
                    .to_string(),
                    up_to_date: false,
                },
                body: body.finish(),
            }));
        }
        // The snapshot is complete: what changed since it was taken follows.
        self.catch_up(read, handle, handle.at, body, log)
    }

    /// Log entries of the shape's table after `from`, as messages for its filter.
    fn catch_up(
        &self,
        read: &ShapeRead,
        handle: &Handle,
        from: i64,
        mut body: Body,
        log: Log,
    ) -> Result<ShapeStep, StoreError> {
        let table = read.table;
        let started_empty = body.messages == 0;
        let mut last = from;
        let mut examined = 0usize;
        let mut more = false;
        let mut failed = false;
        self.sql.for_each_row(
            "SELECT lsn, op, row, old FROM changes WHERE tbl = ? AND lsn > ? ORDER BY lsn",
            &[table.name().into(), from.into()],
            &mut |values| {
                if body.full() || examined >= MAX_SCAN {
                    more = true;
                    return false;
                }
                examined += 1;
                let mut it = values.into_iter();
                let lsn = it.next().and_then(|v| v.as_i64());
                let text = |v: Option<SqlValue>| match v {
                    Some(SqlValue::Text(s)) => Some(s),
                    _ => None,
                };
                let (Some(lsn), Some(op)) = (lsn, text(it.next())) else {
                    failed = true;
                    return false;
                };
                let (row, old) = (text(it.next()), text(it.next()));
                if let Some(m) = message(table, &read.filter, &op, row.as_deref(), old.as_deref())
                    && body.push(&m).is_err()
                {
                    failed = true;
                    return false;
                }
                last = lsn;
                true
            },
        )?;
        if failed {
            return Err(StoreError::Sql(crate::sql::SqlError::new(
                "a malformed change log entry",
            )));
        }
        if more {
            return Ok(ShapeStep::Ready(ShapeChunk {
                meta: ShapeMeta {
                    must_refetch: false,
                    handle: handle.to_string(),
                    offset: Offset::Log(last).to_string(),
                    up_to_date: false,
                },
                body: body.finish(),
            }));
        }
        // Everything of this table up to the tail is in: the client is at the tail (other
        // tables' entries need nothing from it), which keeps a quiet shape's offset from
        // falling behind compaction.
        let idle = read.live && started_empty && body.messages == 0;
        body.up_to_date()?;
        let chunk = ShapeChunk {
            meta: ShapeMeta {
                must_refetch: false,
                handle: handle.to_string(),
                offset: Offset::Log(log.tail).to_string(),
                up_to_date: true,
            },
            body: body.finish(),
        };
        Ok(if idle {
            ShapeStep::Idle(chunk)
        } else {
            ShapeStep::Ready(chunk)
        })
    }

    /// Drops the oldest entries: to the newest `keep` when given, else past [`MAX_CHANGES`]
    /// and older than [`MAX_CHANGE_AGE_MS`].
    pub(super) fn compact(&self, keep: Option<i64>, now: i64) -> Result<Compacted, StoreError> {
        let log = self.log()?;
        let cut = match keep {
            Some(k) if k < 0 => {
                return Err(StoreError::invalid("keep", "must be 0 or more"));
            }
            Some(k) => log.tail.saturating_sub(k),
            None => {
                // The first entry young enough to keep; the scan stops there, so its cost is
                // the number of entries it will delete.
                let young = self
                    .sql
                    .query_one::<Num>(
                        "SELECT lsn AS n FROM changes WHERE at >= ? ORDER BY lsn LIMIT 1",
                        &[(now - MAX_CHANGE_AGE_MS).into()],
                    )?
                    .and_then(|n| n.n);
                let by_age = young.map_or(log.tail, |lsn| lsn - 1);
                by_age.max(log.tail - MAX_CHANGES)
            }
        };
        let mut removed = 0;
        if cut > log.purged {
            removed = self
                .sql
                .execute("DELETE FROM changes WHERE lsn <= ?", &[cut.into()])?;
            self.sql.execute(
                "INSERT INTO meta (key, value) VALUES ('sync_purged_through', ?)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[cut.to_string().into()],
            )?;
        }
        let purged = cut.max(log.purged);
        Ok(Compacted {
            min_lsn: purged + 1,
            tail_lsn: log.tail,
            removed,
        })
    }

    /// Compacts when the log is [`COMPACT_SLACK`] entries over its cap or its oldest entry an
    /// hour past its age: three index lookups per call, a batch of deletes now and then.
    pub(super) fn compact_if_due(&self, now: i64) -> Result<(), StoreError> {
        let ends = self.sql.query_one::<Ends>(
            "SELECT (SELECT lsn FROM changes ORDER BY lsn LIMIT 1) AS lo,
                    (SELECT at FROM changes ORDER BY lsn LIMIT 1) AS lo_at,
                    (SELECT lsn FROM changes ORDER BY lsn DESC LIMIT 1) AS hi",
            &[],
        )?;
        let Some(Ends {
            lo: Some(lo),
            lo_at: Some(lo_at),
            hi: Some(hi),
        }) = ends
        else {
            return Ok(());
        };
        let too_many = hi - lo + 1 > MAX_CHANGES + COMPACT_SLACK;
        let too_old = lo_at < now - MAX_CHANGE_AGE_MS - COMPACT_AGE_SLACK_MS;
        if too_many || too_old {
            self.compact(None, now)?;
        }
        Ok(())
    }

    /// Creates or updates a mirrored host (an unchanged one logs nothing).
    pub(super) fn put_host(&self, h: &MirrorHost) -> Result<(), StoreError> {
        ids::check(ids::HOST, "id", &h.id)?;
        self.sql.execute(
            "INSERT INTO hosts (id, name, os, arch, agents, created_by, created_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, os = excluded.os,
                 arch = excluded.arch, agents = excluded.agents,
                 created_by = excluded.created_by, created_at = excluded.created_at,
                 revoked_at = excluded.revoked_at",
            &[
                h.id.as_str().into(),
                h.name.as_str().into(),
                h.os.as_str().into(),
                h.arch.as_str().into(),
                h.agents.as_str().into(),
                h.created_by.as_str().into(),
                h.created_at.into(),
                h.revoked_at.into(),
            ],
        )?;
        Ok(())
    }

    /// Makes the mirror equal the directory's list: upserts every host, deletes the rest.
    pub(super) fn sync_hosts(&self, hosts: &[MirrorHost]) -> Result<(), StoreError> {
        for h in hosts {
            self.put_host(h)?;
        }
        let ids: Vec<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
        self.sql.execute(
            "DELETE FROM hosts WHERE id NOT IN (SELECT value FROM json_each(?))",
            &[serde_json::to_string(&ids)?.into()],
        )?;
        Ok(())
    }
}
