//! The one error type of the streams client and producer.

use super::Offset;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong talking to a Durable Streams server.
///
/// It is `Clone` (sources are kept behind `Arc`) because a producer hands the same failure to
/// every caller waiting on it: the pending `flush()`, later `append()`s and `close()`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Not an absolute http(s) URL that can carry a path.
    #[error("invalid server URL {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: Option<url::ParseError>,
    },

    #[error("building the HTTP client")]
    Client(#[source] Arc<reqwest::Error>),

    /// No answer: connect failure, reset, timeout, a response cut short. Retryable.
    #[error("{method} {url}: no answer from the server")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: Arc<reqwest::Error>,
    },

    /// Any other unexpected status. 5xx, 408 and 429 are retryable, the rest are not.
    #[error("{method} {url}: the server answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
        /// From `Retry-After` (seconds), when the server sent one.
        retry_after: Option<Duration>,
    },

    #[error("stream {url} not found")]
    NotFound { url: String },

    /// Deleted while forks of it live on (410).
    #[error("stream {url} is gone")]
    Gone { url: String },

    /// PUT on an existing stream with another content type, TTL or closed state (409).
    #[error("stream {url} already exists with a different configuration")]
    ConfigConflict { url: String },

    /// Append to a stream that is closed (409 with `Stream-Closed`), or to a closed producer.
    #[error("stream {url} is closed")]
    Closed {
        url: String,
        next_offset: Option<Offset>,
    },

    /// A success status without a header the protocol requires, or with a malformed one.
    #[error("{method} {url}: missing or malformed {header} header")]
    BadHeader {
        method: &'static str,
        url: String,
        header: &'static str,
    },

    /// A newer epoch of this producer id has written to the stream (403): this instance is a
    /// zombie and must stop. Fatal.
    #[error(
        "producer {producer_id} epoch {epoch} is fenced (the stream is at epoch {current_epoch:?})"
    )]
    Fenced {
        producer_id: String,
        epoch: u64,
        current_epoch: Option<u64>,
    },

    /// The server expected another sequence number (409): our state and the server's disagree,
    /// e.g. a producer resumed from a stale or too-new state. Fatal.
    #[error(
        "producer {producer_id} epoch {epoch}: sent seq {sent}, the server expects {expected:?}"
    )]
    SequenceGap {
        producer_id: String,
        epoch: u64,
        sent: u64,
        expected: Option<u64>,
    },

    /// The server called a new batch a duplicate of a *later* sequence number it already has:
    /// this (epoch, seq) was used before for other data, which would silently drop ours. Fatal.
    #[error(
        "producer {producer_id} epoch {epoch}: seq {sent} was already used (the server has up to {server_seq}); start a new epoch"
    )]
    SequenceReused {
        producer_id: String,
        epoch: u64,
        sent: u64,
        server_seq: u64,
    },

    /// A producer needs a tokio runtime to run its background task on.
    #[error("no tokio runtime to run the producer on")]
    NoRuntime,

    /// The producer's background task is gone (its runtime shut down).
    #[error("producer {producer_id} has stopped")]
    ProducerStopped { producer_id: String },
}

impl StreamError {
    /// Whether trying the same request again may succeed: no answer, 5xx, 408 or 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
