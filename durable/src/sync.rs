//! Per-org sync: the Org object's change log served as Electric shapes
//! (`GET /v1/orgs/{org}/shape`, the contract in `../shared/protocols/electric-shapes.md`), so
//! `@electric-sql/client` and the daemon's mirror read the org's rows and follow them live.
//!
//! - [`table`]: the synced tables, their columns and Postgres types, rows in text format.
//! - [`filter`]: the only `where` accepted (`column = value` joined by AND).
//! - [`offset`]: offsets (log positions, snapshot pages) and handles.
//!
//! The log itself (SQLite triggers on the synced tables append to `changes` in the writing
//! transaction), snapshots, catch-up and compaction are in `org/store/changes.rs`; the live
//! wait in the Org object (`objects/org_store.rs`). The Worker parses the request
//! (`functions/src/api/shape.rs`) into a [`ShapeRead`] and the object answers a [`ShapeChunk`].

pub mod filter;
pub mod offset;
pub mod table;

use filter::Filter;
use offset::{Handle, Offset};
use serde::{Deserialize, Serialize};
use table::Table;

/// At most this many messages per response.
pub const PAGE_ROWS: usize = 1_000;
/// A response stops adding messages once its body has reached this many bytes (a single row
/// is far smaller), keeping every response under about 1 MB.
pub const MAX_RESPONSE_BYTES: usize = 900_000;
/// At most this many log entries are examined per response (a filter may skip most).
pub const MAX_SCAN: usize = 10_000;
/// How long a live request waits in the object for a change: shorter than the 45 s after
/// which the client aborts a live request, like Electric's own 20 s.
pub const LIVE_TIMEOUT_MS: i64 = 20_000;
/// `electric-cursor` moves on every this many seconds.
pub const CURSOR_INTERVAL_SECS: i64 = 20;
/// The log keeps at most this many entries ...
pub const MAX_CHANGES: i64 = 100_000;
/// ... and none older than this.
pub const MAX_CHANGE_AGE_MS: i64 = 30 * 24 * 3600 * 1000;
/// Writes compact only once the log is this many entries over its cap (or an hour over its
/// age), so compaction runs in batches rather than on every write.
pub const COMPACT_SLACK: i64 = 100;
pub const COMPACT_AGE_SLACK_MS: i64 = 3600 * 1000;

/// The response headers of the protocol.
pub mod header {
    pub const HANDLE: &str = "electric-handle";
    pub const OFFSET: &str = "electric-offset";
    pub const SCHEMA: &str = "electric-schema";
    pub const CURSOR: &str = "electric-cursor";
    pub const UP_TO_DATE: &str = "electric-up-to-date";
    /// Every `electric-*` header, for `access-control-expose-headers`.
    pub const EXPOSE: &str =
        "electric-offset, electric-handle, electric-schema, electric-cursor, electric-up-to-date";
}

/// One shape request, parsed and checked by the Worker, for the org's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeRead {
    pub table: Table,
    pub filter: Filter,
    pub offset: Offset,
    /// Required for every offset but `-1` and `now`.
    pub handle: Option<Handle>,
    /// Wait for a change when there is none (only with a `{lsn}_0` offset and a handle).
    pub live: bool,
}

/// What a response says besides its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeMeta {
    /// 409: the handle or offset is no longer served; `handle` is a fresh one to restart with.
    pub must_refetch: bool,
    pub handle: String,
    pub offset: String,
    /// The messages reach the log's tail (they end with an up-to-date control message).
    pub up_to_date: bool,
}

/// A response: its metadata and its body, a JSON array of messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeChunk {
    pub meta: ShapeMeta,
    pub body: Vec<u8>,
}

/// What reading a shape found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeStep {
    /// Answer this.
    Ready(ShapeChunk),
    /// A live request found nothing new: wait for a change and read again, or answer this
    /// (up-to-date at the tail) when the wait times out.
    Idle(ShapeChunk),
}

impl ShapeStep {
    /// The answer now, whether or not anything came (a backend that cannot wait).
    pub fn into_chunk(self) -> ShapeChunk {
        match self {
            Self::Ready(c) | Self::Idle(c) => c,
        }
    }
}

/// `electric-cursor` for a live response: the current 20-second interval, moved past the
/// client's own so it always goes forward.
pub fn cursor(now_ms: i64, client: Option<&str>) -> String {
    let interval = now_ms.div_euclid(1000) / CURSOR_INTERVAL_SECS;
    match client.and_then(|c| c.parse::<i64>().ok()) {
        Some(c) if c >= interval => c.saturating_add(1),
        _ => interval,
    }
    .to_string()
}

/// A machine as the org's object mirrors it from the directory (D1), where hosts live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorHost {
    pub id: String,
    pub name: String,
    pub os: String,
    pub arch: String,
    /// The agent CLIs as JSON text.
    pub agents: String,
    pub created_by: String,
    /// Unix ms.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The answer to a compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Compacted {
    /// The smallest log position that may still be read: a client whose offset is below
    /// `min_lsn - 1` must resync.
    pub min_lsn: i64,
    /// The newest log position.
    pub tail_lsn: i64,
    /// Entries removed by this compaction.
    pub removed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_always_move_forward() {
        let now = 1_795_300_000_123;
        let interval = (now / 1000 / 20).to_string();
        assert_eq!(cursor(now, None), interval);
        assert_eq!(cursor(now, Some("")), interval);
        assert_eq!(cursor(now, Some("5")), interval);
        let ahead = (now / 1000 / 20 + 3).to_string();
        assert_eq!(cursor(now, Some(&ahead)), (now / 1000 / 20 + 4).to_string());
        assert_eq!(
            cursor(now, Some(&interval)),
            (now / 1000 / 20 + 1).to_string()
        );
    }
}
