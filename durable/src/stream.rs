//! Session streams: the Durable Streams protocol (../shared/protocols/durable-streams.md), one
//! Stream Durable Object per stream, served under `/v1/stream/<path>`.
//!
//! - this module: names, offsets, limits, the error type and the headers every answer carries;
//! - [`request`]: the protocol's headers and query parsed into typed requests (all the 400s);
//! - [`store`]: the stream's SQLite (metadata, one row per append, producers, fork references),
//!   synchronous and natively tested like the org store;
//! - [`format`]: bodies out (JSON arrays, SSE events, cursors, ETags);
//! - the object itself (`objects::stream`, feature `worker`) adds what needs the runtime:
//!   waiting readers, SSE bodies, calls to a fork's source object and to the org object, alarms.
//!
//! A stream is named `<org id>:<path>`: another org's stream with the same path is simply a
//! different (usually nonexistent) object, so isolation needs no lookup.

pub mod format;
pub mod request;
pub mod store;

use crate::error::ErrorBody;

/// Where streams live in the public API.
pub const PATH_PREFIX: &str = "/v1/stream/";
/// Longest stream path (after [`PATH_PREFIX`]), in bytes.
pub const MAX_PATH: usize = 512;
/// Largest append (and initial PUT body), in bytes: one append is one SQLite row, and Durable
/// Object SQLite caps a row at 2 MB. The Worker answers 413 past it before the object sees it.
pub const MAX_APPEND: usize = 1024 * 1024;
/// Largest stream (its own bytes, not counting what a fork inherits).
pub const MAX_STREAM_BYTES: i64 = 1 << 30;
/// Most streams one org may hold at once.
pub const MAX_STREAMS_PER_ORG: i64 = 10_000;
/// Most idempotent producers whose state one stream keeps; idle ones expire after
/// [`PRODUCER_TTL_MS`].
pub const MAX_PRODUCERS: i64 = 1_000;
pub const PRODUCER_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Longest Producer-Id and Stream-Seq values.
pub const MAX_TOKEN: usize = 256;
/// Most forks of one stream.
pub const MAX_FORKS: i64 = 1_000;
/// How many bytes one catch-up answer (or one SSE burst) carries at most; at least one append.
pub const READ_CHUNK: usize = 4 * 1024 * 1024;
/// How long a long-poll waits for data before answering 204.
pub const LONG_POLL_MS: u64 = 20_000;
/// How long an SSE answer stays open before the server ends it (clients reconnect from their
/// last offset); idle streams get a control event every [`LONG_POLL_MS`].
pub const SSE_CYCLE_MS: u64 = 60_000;

/// A stream's full name, which is also its object's name.
pub fn object_name(org_id: &str, path: &str) -> String {
    format!("{org_id}:{path}")
}

/// Whether `path` (what follows [`PATH_PREFIX`]) names a stream: 1..=[`MAX_PATH`] bytes of
/// URL-safe characters in non-empty segments, none of them `.` or `..`.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/".contains(&b))
}

/// A position in a stream: how many bytes (of the stored form) precede it. Written as the
/// reference server's `%016d_%016d` (the first half is always 0 here), so offsets sort
/// lexicographically, never contain `, & = ? /`, and are never `-1` or `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Offset(pub i64);

impl Offset {
    pub const ZERO: Self = Self(0);

    pub fn parse(s: &str) -> Option<Self> {
        let (high, low) = s.split_once('_')?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 19 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(high) || !digits(low) || high.parse::<i64>().ok()? != 0 {
            return None;
        }
        low.parse().ok().map(Self)
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016}_{:016}", 0, self.0)
    }
}

/// Content types compare on their essence: `Application/JSON; charset=utf-8` is
/// `application/json`.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

pub fn is_json(content_type: &str) -> bool {
    essence(content_type) == "application/json"
}

/// Header names of the protocol.
pub mod h {
    pub const NEXT_OFFSET: &str = "stream-next-offset";
    pub const UP_TO_DATE: &str = "stream-up-to-date";
    pub const CURSOR: &str = "stream-cursor";
    pub const CLOSED: &str = "stream-closed";
    pub const SEQ: &str = "stream-seq";
    pub const TTL: &str = "stream-ttl";
    pub const EXPIRES_AT: &str = "stream-expires-at";
    pub const FORKED_FROM: &str = "stream-forked-from";
    pub const FORK_OFFSET: &str = "stream-fork-offset";
    pub const FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
    pub const SSE_ENCODING: &str = "stream-sse-data-encoding";
    pub const PRODUCER_ID: &str = "producer-id";
    pub const PRODUCER_EPOCH: &str = "producer-epoch";
    pub const PRODUCER_SEQ: &str = "producer-seq";
    pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
    pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";
}

/// Headers on every answer under `/v1/stream/` (errors included): CORS for browsers and the
/// protocol's security headers.
pub const COMMON_HEADERS: &[(&str, &str)] = &[
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, POST, PUT, DELETE, HEAD, OPTIONS",
    ),
    (
        "access-control-allow-headers",
        "authorization, x-api-key, content-type, if-none-match, stream-seq, stream-ttl, \
         stream-expires-at, stream-closed, producer-id, producer-epoch, producer-seq, \
         stream-forked-from, stream-fork-offset, stream-fork-sub-offset",
    ),
    (
        "access-control-expose-headers",
        "stream-next-offset, stream-cursor, stream-up-to-date, stream-closed, stream-ttl, \
         stream-expires-at, stream-sse-data-encoding, producer-epoch, producer-seq, \
         producer-expected-seq, producer-received-seq, etag, location, content-type, \
         retry-after, www-authenticate",
    ),
    ("access-control-max-age", "86400"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-resource-policy", "cross-origin"),
];

/// A protocol failure: status, the public JSON body, and the protocol headers that go with it
/// (for example `Stream-Closed` and `Stream-Next-Offset` on a 409 for a closed stream).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamError {
    pub status: u16,
    pub body: ErrorBody,
    pub headers: Vec<(&'static str, String)>,
}

impl StreamError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub fn not_found() -> Self {
        Self::new(404, "not_found", "stream not found")
    }

    pub fn gone() -> Self {
        Self::new(
            410,
            "gone",
            "the stream was deleted; it stays readable only to its forks",
        )
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "payload_too_large", message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(500, "internal", format!("stream storage failed: {message}"))
    }
}

impl From<crate::sql::SqlError> for StreamError {
    fn from(e: crate::sql::SqlError) -> Self {
        Self::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_sort_as_text() {
        let offsets = [0, 7, 1_000, 1 << 40].map(Offset);
        let texts: Vec<String> = offsets.iter().map(Offset::to_string).collect();
        assert_eq!(texts[0], "0000000000000000_0000000000000000");
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(sorted, texts);
        for (o, t) in offsets.iter().zip(&texts) {
            assert_eq!(Offset::parse(t), Some(*o));
        }
        for bad in [
            "", "-1", "now", "1_2_3", "a_1", "0_", "_0", "1_0", "0,1", "0_1 ", "0_+1",
        ] {
            assert_eq!(Offset::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn paths_are_url_safe_segments() {
        for ok in ["a", "sessions/ses_1/terminal", "x-1.2_~%20"] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in [
            "", "a//b", "a/", "/a", "a/../b", ".", "a b", "a?b", "a#b", "é",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
        assert!(!valid_path(&"a".repeat(MAX_PATH + 1)));
    }

    #[test]
    fn content_types_compare_on_their_essence() {
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert_eq!(essence(" text/plain ;x=1"), "text/plain");
    }
}
