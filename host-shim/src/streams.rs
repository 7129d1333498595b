//! A client of the Durable Streams protocol (streams under `<edge>/v1/stream/<path>`), which the
//! daemon uses to publish terminal output and read it back.
//!
//! - [`StreamClient`] maps each protocol operation to one HTTP call and one typed answer:
//!   create, head, catch-up read, long-poll, append, delete. It never retries.
//! - [`IdempotentProducer`] is the write path: it batches many small `append`s into POSTs,
//!   keeps one POST in flight (so the stream's order is the call order), and retries each POST
//!   with the same `(producer id, epoch, seq)` until the server acknowledges it, so data is
//!   neither lost nor duplicated across dropped connections and 5xx answers.
//!
//! The protocol itself is summarised in `shared/protocols/durable-streams.md`; the reference
//! implementation is `@durable-streams/server`.

mod client;
mod error;
mod producer;

pub use client::{
    Append, Appended, Chunk, CreateOptions, Created, DEFAULT_LONG_POLL_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT, ProducerStamp, StreamClient, StreamInfo,
};
pub use error::StreamError;
pub use producer::{
    IdempotentProducer, ProducerConfig, ProducerState, ProducerStatus, RetryPolicy,
};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A position in a stream: an opaque token from the server, or one of the two sentinels.
/// Tokens from one server sort in stream order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Offset(String);

impl Offset {
    /// The start of the stream (`-1`).
    pub fn start() -> Self {
        Self("-1".into())
    }

    /// The current tail (`now`): a read from here sees only what is appended later.
    pub fn now() -> Self {
        Self("now".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Offset {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for Offset {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The protocol's header names.
mod headers {
    pub const NEXT_OFFSET: &str = "stream-next-offset";
    pub const UP_TO_DATE: &str = "stream-up-to-date";
    pub const CLOSED: &str = "stream-closed";
    pub const CURSOR: &str = "stream-cursor";
    pub const TTL: &str = "stream-ttl";
    pub const EXPIRES_AT: &str = "stream-expires-at";
    pub const PRODUCER_ID: &str = "producer-id";
    pub const PRODUCER_EPOCH: &str = "producer-epoch";
    pub const PRODUCER_SEQ: &str = "producer-seq";
    pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
}
