//! One stream's SQLite: its metadata row, one row per append keyed by the offset it ends at,
//! idempotent producers, the forks that still read from it, and an outbox of calls to other
//! objects that must happen even if this one is evicted mid-way.
//!
//! Everything here is synchronous and runs in one transaction per operation; the object adds
//! the asynchronous parts (waiting, calling other objects).

use super::request::{AppendReq, Producer};
use super::{
    MAX_FORKS, MAX_PRODUCERS, MAX_STREAM_BYTES, Offset, PRODUCER_TTL_MS, StreamError, essence, h,
    is_json,
};
use crate::sql::{Sql, SqlError, SqlValue};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS stream (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    org_id TEXT NOT NULL,
    path TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    content_type TEXT NOT NULL,
    ttl_secs INTEGER,
    expires_at TEXT,
    expires_ms INTEGER,
    created_ms INTEGER NOT NULL,
    last_access_ms INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    closed_by_id TEXT,
    closed_by_epoch INTEGER,
    closed_by_seq INTEGER,
    last_stream_seq TEXT,
    tail INTEGER NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    fork_source TEXT,
    fork_offset INTEGER,
    fork_sub_offset INTEGER NOT NULL DEFAULT 0,
    soft_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (end_pos INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS producers (
    id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS forks (child TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, notice TEXT NOT NULL);
";

/// The stream's metadata row (plus how many forks still reference it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Meta {
    pub org_id: String,
    /// The path under `/v1/stream/`.
    pub path: String,
    /// Distinguishes this life of the path from earlier ones (deleted and re-created).
    pub incarnation: String,
    /// As the creator sent it (or inherited), echoed back.
    pub content_type: String,
    pub ttl_secs: Option<i64>,
    pub expires_at: Option<String>,
    pub expires_ms: Option<i64>,
    pub created_ms: i64,
    pub last_access_ms: i64,
    closed: i64,
    closed_by_id: Option<String>,
    closed_by_epoch: Option<i64>,
    closed_by_seq: Option<i64>,
    last_stream_seq: Option<String>,
    /// The offset after the last append.
    pub tail: i64,
    /// Bytes this stream stores itself.
    pub bytes: i64,
    /// The source's path, for a fork.
    pub fork_source: Option<String>,
    pub fork_offset: Option<i64>,
    pub fork_sub_offset: i64,
    soft_deleted: i64,
    pub forks: i64,
}

impl Meta {
    pub fn closed(&self) -> bool {
        self.closed != 0
    }

    pub fn soft_deleted(&self) -> bool {
        self.soft_deleted != 0
    }

    pub fn json(&self) -> bool {
        is_json(&self.content_type)
    }

    pub fn tail(&self) -> Offset {
        Offset(self.tail)
    }

    /// When the stream expires (ms since the epoch), if it does.
    pub fn expiry_ms(&self) -> Option<i64> {
        let sliding = self
            .ttl_secs
            .map(|t| self.last_access_ms.saturating_add(t.saturating_mul(1000)));
        match (sliding, self.expires_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn expired(&self, now: i64) -> bool {
        self.expiry_ms().is_some_and(|at| now >= at)
    }

    /// This stream's key as a fork reference: name and life.
    pub fn child_key(&self) -> String {
        format!("{}:{}#{}", self.org_id, self.path, self.incarnation)
    }

    fn closed_by(&self, p: &Producer) -> bool {
        self.closed_by_id.as_deref() == Some(p.id.as_str())
            && self.closed_by_epoch == Some(p.epoch)
            && self.closed_by_seq == Some(p.seq)
    }
}

/// What a new stream starts as.
#[derive(Debug, Clone)]
pub struct NewStream {
    pub org_id: String,
    pub path: String,
    pub incarnation: String,
    pub content_type: String,
    pub ttl_secs: Option<i64>,
    pub expires_at: Option<(String, i64)>,
    pub closed: bool,
    pub fork: Option<NewFork>,
}

#[derive(Debug, Clone)]
pub struct NewFork {
    pub source: String,
    pub offset: i64,
    pub sub_offset: i64,
    /// The part of the source's append at `offset` that the fork keeps (sub-offset).
    pub prefix: Vec<u8>,
}

/// One stored append: its bytes and the offset it ends at.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub end: i64,
    pub data: Vec<u8>,
}

/// A call to another object that must eventually happen, kept until it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// Tell a fork's source (by object name) that `child` no longer reads from it.
    Release { source: String, child: String },
    /// Tell the org object that this life of the stream is over.
    Unregister {
        org_id: String,
        path: String,
        incarnation: String,
    },
}

/// The answer to an append: status and protocol headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Data was added or the stream closed: waiting readers should look again.
    pub changed: bool,
}

#[derive(Deserialize)]
struct ProducerState {
    epoch: i64,
    last_seq: i64,
    updated_ms: i64,
}

#[derive(Debug, PartialEq)]
enum Check {
    Accept,
    Duplicate { last_seq: i64 },
    StaleEpoch { current: i64 },
    NewEpochNeedsSeqZero,
    Gap { expected: i64, received: i64 },
}

/// Encodes a JSON append as stored: each message followed by a comma (`1,{"a":2},`), the
/// elements of a top-level array being separate messages. Messages keep their exact text.
pub fn encode_json(body: &[u8], allow_empty_array: bool) -> Result<Vec<u8>, StreamError> {
    let invalid = |e: serde_json::Error| StreamError::bad_request(format!("invalid JSON: {e}"));
    let value: &serde_json::value::RawValue = serde_json::from_slice(body).map_err(invalid)?;
    let text = value.get();
    let mut out = Vec::with_capacity(text.len() + 1);
    if text.starts_with('[') {
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(text).map_err(invalid)?;
        if items.is_empty() && !allow_empty_array {
            return Err(StreamError::bad_request(
                "an empty JSON array appends nothing",
            ));
        }
        for item in items {
            out.extend_from_slice(item.get().as_bytes());
            out.push(b',');
        }
    } else {
        out.extend_from_slice(text.as_bytes());
        out.push(b',');
    }
    Ok(out)
}

/// The prefix of the source's append that a fork at a sub-offset keeps: the first `sub` bytes,
/// or in a JSON stream the first `sub` messages.
pub fn fork_prefix(first: Option<&Row>, sub: i64, json: bool) -> Result<Vec<u8>, StreamError> {
    if sub == 0 {
        return Ok(Vec::new());
    }
    let row = first.ok_or_else(|| {
        StreamError::bad_request("Stream-Fork-Sub-Offset points past the end of the source")
    })?;
    let sub = usize::try_from(sub).map_err(|e| StreamError::bad_request(e.to_string()))?;
    let overshoot = || StreamError::bad_request("Stream-Fork-Sub-Offset overshoots the append");
    if json {
        let text = std::str::from_utf8(&row.data).map_err(StreamError::internal)?;
        let items = split_json(text)?;
        let kept = items.get(..sub).ok_or_else(overshoot)?;
        Ok(kept
            .iter()
            .flat_map(|m| [m.as_bytes(), b","])
            .flatten()
            .copied()
            .collect())
    } else {
        row.data
            .get(..sub)
            .map(<[u8]>::to_vec)
            .ok_or_else(overshoot)
    }
}

/// The messages of a stored JSON append (`a,b,c,`), each as its exact text.
pub fn split_json(stored: &str) -> Result<Vec<&str>, StreamError> {
    let inner = stored.strip_suffix(',').unwrap_or(stored);
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let wrapped = format!("[{inner}]");
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(&wrapped).map_err(StreamError::internal)?;
    // Map each element back onto `stored` by its position inside `wrapped` (shifted by 1).
    let base = wrapped.as_ptr() as usize + 1;
    items
        .iter()
        .map(|item| {
            let start = item.get().as_ptr() as usize - base;
            inner
                .get(start..start + item.get().len())
                .ok_or_else(|| StreamError::internal("misaligned JSON message"))
        })
        .collect()
}

pub struct Store<'a, S: Sql>(pub &'a S);

impl<'a, S: Sql> Store<'a, S> {
    /// Creates the tables if this object has none yet.
    pub fn migrate(&self) -> Result<(), SqlError> {
        self.0.execute_script(SCHEMA)
    }

    pub fn meta(&self) -> Result<Option<Meta>, SqlError> {
        self.0.query_one(
            "SELECT *, (SELECT count(*) FROM forks) AS forks FROM stream WHERE id = 1",
            &[],
        )
    }

    fn must_meta(&self) -> Result<Meta, StreamError> {
        self.meta()?
            .ok_or_else(|| StreamError::internal("the stream row vanished"))
    }

    pub fn create(&self, new: &NewStream, initial: &[u8], now: i64) -> Result<Meta, StreamError> {
        self.0.transaction(|| {
            let start = new.fork.as_ref().map_or(0, |f| f.offset);
            let (expires_at, expires_ms) = new.expires_at.clone().unzip();
            self.0.execute(
                "INSERT INTO stream (id, org_id, path, incarnation, content_type, ttl_secs, \
                 expires_at, expires_ms, created_ms, last_access_ms, closed, tail, fork_source, \
                 fork_offset, fork_sub_offset) \
                 VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    new.org_id.as_str().into(),
                    new.path.as_str().into(),
                    new.incarnation.as_str().into(),
                    new.content_type.as_str().into(),
                    new.ttl_secs.into(),
                    expires_at.into(),
                    expires_ms.into(),
                    now.into(),
                    now.into(),
                    i64::from(new.closed).into(),
                    start.into(),
                    new.fork.as_ref().map(|f| f.source.clone()).into(),
                    new.fork.as_ref().map(|f| f.offset).into(),
                    new.fork.as_ref().map_or(0, |f| f.sub_offset).into(),
                ],
            )?;
            if let Some(f) = &new.fork {
                self.push(&f.prefix)?;
            }
            self.push(initial)?;
            self.must_meta()
        })
    }

    /// Adds one append at the tail (nothing for empty data).
    fn push(&self, data: &[u8]) -> Result<(), StreamError> {
        if data.is_empty() {
            return Ok(());
        }
        let len = i64::try_from(data.len()).map_err(StreamError::internal)?;
        self.0.execute(
            "INSERT INTO messages (end_pos, data) SELECT tail + ?1, ?2 FROM stream WHERE id = 1",
            &[len.into(), data.to_vec().into()],
        )?;
        self.0.execute(
            "UPDATE stream SET tail = tail + ?1, bytes = bytes + ?1 WHERE id = 1",
            &[len.into()],
        )?;
        Ok(())
    }

    /// Resets a sliding TTL: reads and writes count as use.
    pub fn touch(&self, meta: &Meta, now: i64) -> Result<(), SqlError> {
        if meta.ttl_secs.is_some() {
            self.0.execute(
                "UPDATE stream SET last_access_ms = ? WHERE id = 1",
                &[now.into()],
            )?;
        }
        Ok(())
    }

    fn check_producer(&self, p: &Producer, now: i64) -> Result<Check, SqlError> {
        let state: Option<ProducerState> = self.0.query_one(
            "SELECT epoch, last_seq, updated_ms FROM producers WHERE id = ?",
            &[p.id.as_str().into()],
        )?;
        let state = state.filter(|s| now - s.updated_ms <= PRODUCER_TTL_MS);
        Ok(match state {
            None if p.seq == 0 => Check::Accept,
            None => Check::Gap {
                expected: 0,
                received: p.seq,
            },
            Some(s) if p.epoch < s.epoch => Check::StaleEpoch { current: s.epoch },
            Some(s) if p.epoch > s.epoch => {
                if p.seq == 0 {
                    Check::Accept
                } else {
                    Check::NewEpochNeedsSeqZero
                }
            }
            Some(s) if p.seq <= s.last_seq => Check::Duplicate {
                last_seq: s.last_seq,
            },
            Some(s) if p.seq == s.last_seq + 1 => Check::Accept,
            Some(s) => Check::Gap {
                expected: s.last_seq + 1,
                received: p.seq,
            },
        })
    }

    fn save_producer(&self, p: &Producer, now: i64) -> Result<(), StreamError> {
        let known: Option<ProducerState> = self.0.query_one(
            "SELECT epoch, last_seq, updated_ms FROM producers WHERE id = ?",
            &[p.id.as_str().into()],
        )?;
        if known.is_none() {
            #[derive(Deserialize)]
            struct N {
                n: i64,
            }
            let count = |sql: &S| {
                sql.query_one::<N>("SELECT count(*) AS n FROM producers", &[])
                    .map(|n| n.map_or(0, |n| n.n))
            };
            if count(self.0)? >= MAX_PRODUCERS {
                self.0.execute(
                    "DELETE FROM producers WHERE updated_ms < ?",
                    &[(now - PRODUCER_TTL_MS).into()],
                )?;
                if count(self.0)? >= MAX_PRODUCERS {
                    return Err(StreamError::too_large(format!(
                        "at most {MAX_PRODUCERS} producers write to one stream within a week"
                    )));
                }
            }
        }
        self.0.execute(
            "INSERT INTO producers (id, epoch, last_seq, updated_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET epoch = ?2, last_seq = ?3, updated_ms = ?4",
            &[
                p.id.as_str().into(),
                p.epoch.into(),
                p.seq.into(),
                now.into(),
            ],
        )?;
        Ok(())
    }

    /// Appends and/or closes, with every rule of the protocol: content type, Stream-Seq,
    /// idempotent producers, closing, size caps.
    pub fn append(
        &self,
        meta: &Meta,
        req: &AppendReq,
        body: &[u8],
        now: i64,
    ) -> Result<Appended, StreamError> {
        self.0.transaction(|| self.append_tx(meta, req, body, now))
    }

    fn append_tx(
        &self,
        meta: &Meta,
        req: &AppendReq,
        body: &[u8],
        now: i64,
    ) -> Result<Appended, StreamError> {
        self.touch(meta, now)?;
        let tail = |m: &Meta| (h::NEXT_OFFSET, m.tail().to_string());
        let closed = (h::CLOSED, "true".to_owned());
        let closed_conflict = || {
            StreamError::conflict("stream_closed", "the stream is closed")
                .with(h::CLOSED, "true")
                .with(h::NEXT_OFFSET, meta.tail())
        };
        let producer_echo = |p: &Producer, seq: i64| {
            [
                (h::PRODUCER_EPOCH, p.epoch.to_string()),
                (h::PRODUCER_SEQ, seq.to_string()),
            ]
        };
        let done = |status, headers: Vec<(&'static str, String)>, changed| Appended {
            status,
            headers,
            changed,
        };
        if body.is_empty() && !req.close {
            return Err(StreamError::bad_request(
                "an append needs a body (or Stream-Closed: true to close)",
            ));
        }
        // A retry of an append or close that already happened succeeds again (204), even
        // when the stream has been closed since.
        if let Some(p) = &req.producer
            && meta.closed()
            && meta.closed_by(p)
        {
            let mut hs = vec![tail(meta), closed.clone()];
            hs.extend(producer_echo(p, p.seq));
            return Ok(done(204, hs, false));
        }
        if meta.closed() {
            if let Some(p) = &req.producer
                && let Check::Duplicate { last_seq } = self.check_producer(p, now)?
            {
                let mut hs = vec![tail(meta), closed.clone()];
                hs.extend(producer_echo(p, last_seq));
                return Ok(done(204, hs, false));
            }
            if body.is_empty() && req.producer.is_none() {
                // Closing a closed stream is idempotent.
                return Ok(done(204, vec![tail(meta), closed], false));
            }
            return Err(closed_conflict());
        }
        if !body.is_empty() {
            let given = req
                .content_type
                .as_deref()
                .ok_or_else(|| StreamError::bad_request("an append needs a Content-Type"))?;
            if essence(given) != essence(&meta.content_type) {
                return Err(StreamError::conflict(
                    "content_type_mismatch",
                    format!("this stream holds {}", meta.content_type),
                ));
            }
        }
        if let Some(p) = &req.producer {
            match self.check_producer(p, now)? {
                Check::Accept => {}
                Check::Duplicate { last_seq } => {
                    let mut hs = vec![tail(meta)];
                    hs.extend(producer_echo(p, last_seq));
                    return Ok(done(204, hs, false));
                }
                Check::StaleEpoch { current } => {
                    return Err(StreamError::new(
                        403,
                        "stale_producer_epoch",
                        "a newer epoch of this producer has written",
                    )
                    .with(h::PRODUCER_EPOCH, current));
                }
                Check::NewEpochNeedsSeqZero => {
                    return Err(StreamError::bad_request(
                        "a new producer epoch starts at Producer-Seq 0",
                    ));
                }
                Check::Gap { expected, received } => {
                    return Err(StreamError::conflict(
                        "producer_sequence_gap",
                        format!("expected Producer-Seq {expected}, got {received}"),
                    )
                    .with(h::PRODUCER_EXPECTED_SEQ, expected)
                    .with(h::PRODUCER_RECEIVED_SEQ, received));
                }
            }
        }
        if let (Some(seq), Some(last)) = (&req.seq, &meta.last_stream_seq)
            && seq <= last
        {
            return Err(StreamError::conflict(
                "stream_seq_conflict",
                format!("Stream-Seq must sort after {last:?}"),
            ));
        }
        let data = if body.is_empty() {
            Vec::new()
        } else if meta.json() {
            encode_json(body, false)?
        } else {
            body.to_vec()
        };
        let len = i64::try_from(data.len()).map_err(StreamError::internal)?;
        if meta.bytes.saturating_add(len) > MAX_STREAM_BYTES {
            return Err(StreamError::too_large(format!(
                "a stream holds at most {MAX_STREAM_BYTES} bytes"
            )));
        }
        self.push(&data)?;
        if let Some(seq) = &req.seq {
            self.0.execute(
                "UPDATE stream SET last_stream_seq = ? WHERE id = 1",
                &[seq.as_str().into()],
            )?;
        }
        if let Some(p) = &req.producer {
            self.save_producer(p, now)?;
        }
        if req.close {
            let p = req.producer.as_ref();
            self.0.execute(
                "UPDATE stream SET closed = 1, closed_by_id = ?, closed_by_epoch = ?, \
                 closed_by_seq = ? WHERE id = 1",
                &[
                    p.map(|p| p.id.clone()).into(),
                    p.map(|p| p.epoch).into(),
                    p.map(|p| p.seq).into(),
                ],
            )?;
        }
        let after = self.must_meta()?;
        let mut hs = vec![tail(&after)];
        if req.close {
            hs.push(closed);
        }
        let status = match &req.producer {
            Some(p) => {
                hs.extend(producer_echo(p, p.seq));
                // A close-only request answers 204 like any close; a new append answers 200.
                if data.is_empty() { 204 } else { 200 }
            }
            None => 204,
        };
        Ok(done(status, hs, true))
    }

    /// This stream's own appends ending in `(from, cap]`, in order, up to about `max_bytes`
    /// (always at least one). In a byte stream the first append is cut at `from` when `from`
    /// falls inside it.
    pub fn rows(
        &self,
        meta: &Meta,
        from: i64,
        cap: i64,
        max_bytes: usize,
    ) -> Result<Vec<Row>, SqlError> {
        let mut rows = Vec::new();
        let mut total = 0usize;
        let slice = !meta.json();
        self.0.for_each_row(
            "SELECT end_pos, data FROM messages WHERE end_pos > ? AND end_pos <= ? \
             ORDER BY end_pos",
            &[from.into(), cap.into()],
            &mut |values| {
                let mut it = values.into_iter();
                let (Some(end), Some(data)) = (
                    it.next().and_then(|v| v.as_i64()),
                    it.next().and_then(SqlValue::into_bytes),
                ) else {
                    return false;
                };
                let start = end - data.len() as i64;
                let data = if slice && start < from {
                    data.get(usize::try_from(from - start).unwrap_or(0)..)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default()
                } else {
                    data
                };
                total += data.len();
                rows.push(Row { end, data });
                total < max_bytes
            },
        )?;
        Ok(rows)
    }

    /// Closes the stream (no producer); answers false if it already was.
    pub fn close(&self, meta: &Meta, now: i64) -> Result<bool, SqlError> {
        self.touch(meta, now)?;
        Ok(self.0.execute(
            "UPDATE stream SET closed = 1 WHERE id = 1 AND closed = 0",
            &[],
        )? > 0)
    }

    pub fn mark_soft_deleted(&self) -> Result<(), SqlError> {
        self.0
            .execute("UPDATE stream SET soft_deleted = 1 WHERE id = 1", &[])
            .map(drop)
    }

    /// Records a fork that reads from this stream (idempotent).
    pub fn add_fork(&self, child: &str) -> Result<(), StreamError> {
        let n = self.must_meta()?.forks;
        if n >= MAX_FORKS {
            return Err(StreamError::too_large(format!(
                "a stream has at most {MAX_FORKS} forks"
            )));
        }
        self.0.execute(
            "INSERT OR IGNORE INTO forks (child) VALUES (?)",
            &[child.into()],
        )?;
        Ok(())
    }

    /// Forgets a fork (idempotent); answers the stream as it is now.
    pub fn remove_fork(&self, child: &str) -> Result<Option<Meta>, SqlError> {
        self.0
            .execute("DELETE FROM forks WHERE child = ?", &[child.into()])?;
        self.meta()
    }

    /// Deletes the stream's data for good, queueing the notices its end implies.
    pub fn purge(&self, meta: &Meta) -> Result<(), StreamError> {
        self.0.transaction(|| {
            self.0.execute_script(
                "DELETE FROM messages; DELETE FROM producers; DELETE FROM forks; \
                 DELETE FROM stream;",
            )?;
            if let Some(source) = &meta.fork_source {
                self.notify(&Notice::Release {
                    source: super::object_name(&meta.org_id, source),
                    child: meta.child_key(),
                })?;
            }
            self.notify(&Notice::Unregister {
                org_id: meta.org_id.clone(),
                path: meta.path.clone(),
                incarnation: meta.incarnation.clone(),
            })
        })
    }

    pub fn notify(&self, notice: &Notice) -> Result<(), StreamError> {
        let body = serde_json::to_string(notice).map_err(StreamError::internal)?;
        self.0
            .execute("INSERT INTO outbox (notice) VALUES (?)", &[body.into()])?;
        Ok(())
    }

    /// Notices not yet delivered, oldest first.
    pub fn outbox(&self) -> Result<Vec<(i64, Notice)>, SqlError> {
        #[derive(Deserialize)]
        struct R {
            id: i64,
            notice: String,
        }
        let rows: Vec<R> = self
            .0
            .query("SELECT id, notice FROM outbox ORDER BY id", &[])?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.id, serde_json::from_str(&r.notice).ok()?)))
            .collect())
    }

    pub fn delivered(&self, id: i64) -> Result<(), SqlError> {
        self.0
            .execute("DELETE FROM outbox WHERE id = ?", &[id.into()])
            .map(drop)
    }
}

/// Checks a fork request against its source and answers the fork offset (the source's tail
/// when none was given).
pub fn check_fork_source(
    source: &Meta,
    content_type: Option<&str>,
    offset: Option<Offset>,
) -> Result<i64, StreamError> {
    if source.soft_deleted() {
        return Err(StreamError::conflict(
            "source_deleted",
            "the source stream was deleted",
        ));
    }
    if let Some(ct) = content_type
        && essence(ct) != essence(&source.content_type)
    {
        return Err(StreamError::conflict(
            "content_type_mismatch",
            format!("the source holds {}", source.content_type),
        ));
    }
    let at = offset.map_or(source.tail, |o| o.0);
    if at > source.tail {
        return Err(StreamError::bad_request(
            "Stream-Fork-Offset is past the end of the source",
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests;
