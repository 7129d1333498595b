//! The shipper: moves a session's spool into its terminal stream, exactly once.
//!
//! It appends as an idempotent producer (id `tether-daemon`, an epoch and a sequence number per
//! append). Before a batch goes out its end is saved (`inflight_end`) with its seq; after the
//! stream acknowledges it, the new `shipped` offset and next seq are saved (together with the
//! next batch's end when one is ready, so a busy stream costs one write per batch). After any
//! failure, a restart included, the same bytes go again with the same seq: the stream stores
//! them once and answers the repeat as a duplicate. Latency and throughput: a batch leaves as
//! soon as there are bytes and no batch in flight; while one is in flight the spool grows, and
//! the next batch takes all of it (up to [`MAX_BATCH`]).
//!
//! A chat session's spool holds one JSON event per line; its batches end at a line's end and
//! go as one JSON array (`[a,b]`). The stream stores each message followed by a comma, so its
//! offsets are the spool's byte positions here too (`a\nb\n` and `a,b,` are the same length).

use super::store::LocalSession;
use crate::host_auth::HostAuth;
use crate::state::State;
use crate::streams::{Append, ProducerStamp, StreamClient, StreamError};
use bytes::Bytes;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tether_durable::session::SessionKind;
use tokio::sync::watch;
use tracing::{debug, warn};

/// The most bytes one append carries (the edge takes up to 1 MiB).
pub const MAX_BATCH: u64 = 1_000_000;
const PRODUCER_ID: &str = "tether-daemon";
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where a shipper reads and writes.
pub struct Shipper {
    pub session_id: String,
    pub stream_path: String,
    pub spool: PathBuf,
    pub state: Arc<State>,
    pub auth: Arc<HostAuth>,
    pub client: StreamClient,
    /// How many bytes the spool holds (the reader's count).
    pub spooled: watch::Receiver<u64>,
    /// True once no more bytes will come: the stream is closed after the last one.
    pub ended: watch::Receiver<bool>,
    /// Tells the reader how far shipping got (its backpressure).
    pub shipped: watch::Sender<u64>,
    /// Terminal bytes, or a chat session's JSON lines.
    pub kind: SessionKind,
}

/// Why shipping stopped before the stream was closed.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("the stream is gone (deleted on the server)")]
    Gone,
    #[error("the stream is full (its size limit)")]
    Full,
    #[error(transparent)]
    Local(#[from] crate::Error),
    #[error("reading the spool: {0}")]
    Spool(#[from] std::io::Error),
}

impl Shipper {
    /// Ships until the session ended and the stream is closed (or the stream is gone). Never
    /// gives up on transient failures: it waits and retries, for as long as the daemon runs.
    pub async fn run(mut self, from: &LocalSession) -> Result<(), ShipError> {
        let mut shipped = from.shipped;
        let mut epoch = from.producer_epoch;
        let mut seq = from.producer_seq;
        let mut inflight = from.inflight_end;
        self.shipped.send_replace(shipped as u64);
        let (mut spool_open, mut ended_open) = (true, true);
        loop {
            let spooled = *self.spooled.borrow() as i64;
            let end = match inflight {
                Some(end) => end,
                None => self.batch_end(shipped, spooled)?,
            };
            if end <= shipped {
                if *self.ended.borrow() && shipped >= *self.spooled.borrow() as i64 {
                    self.close(epoch, seq).await?;
                    return Ok(());
                }
                // A sender that is gone changes nothing any more; with both gone no byte
                // can come: the session is over.
                tokio::select! {
                    r = self.spooled.changed(), if spool_open => spool_open = r.is_ok(),
                    r = self.ended.changed(), if ended_open => ended_open = r.is_ok(),
                    else => {
                        self.close(epoch, seq).await?;
                        return Ok(());
                    }
                }
                continue;
            }
            if inflight.is_none() {
                self.state
                    .save_shipping(&self.session_id, shipped, epoch, seq, Some(end))
                    .await?;
            }
            let body = self.read_spool(shipped, end)?;
            match self.append(body, epoch, seq, false).await {
                Ok(()) => {
                    shipped = end;
                    seq += 1;
                    self.shipped.send_replace(shipped as u64);
                    // The next batch's end goes in the same write when bytes are waiting.
                    let spooled = *self.spooled.borrow() as i64;
                    let next = Some(self.batch_end(shipped, spooled)?).filter(|n| *n > shipped);
                    self.state
                        .save_shipping(&self.session_id, shipped, epoch, seq, next)
                        .await?;
                    inflight = next;
                }
                Err(Refused::Full) => {
                    // Nothing more fits: close it (nothing to append, so that still works)
                    // and let the session end with the reason.
                    self.close_plain().await;
                    self.state.mark_stream_closed(&self.session_id).await?;
                    return Err(ShipError::Full);
                }
                Err(Refused::Restart) => {
                    // Our producer state no longer matches the stream's (a lost database, a
                    // stream written by someone else): start a new epoch from the stream's
                    // own tail, which is exact for a stream only this daemon writes.
                    let tail = self.tail().await?;
                    warn!(session = %self.session_id, tail, shipped, "producer state lost; resuming from the stream's tail");
                    shipped = tail.min(*self.spooled.borrow() as i64);
                    epoch += 1;
                    seq = 0;
                    inflight = None;
                    self.state
                        .save_shipping(&self.session_id, shipped, epoch, seq, None)
                        .await?;
                }
            }
        }
    }

    fn json(&self) -> bool {
        self.kind == SessionKind::Chat
    }

    /// Where the next batch from `shipped` ends: as far as the spool goes, up to
    /// [`MAX_BATCH`]; for JSON lines, at the last line end in that range. The event log
    /// publishes whole lines, so that is nearly always where the range ends (one byte says
    /// so); only a batch cut at [`MAX_BATCH`] is read back to its last line end.
    fn batch_end(&self, shipped: i64, spooled: i64) -> Result<i64, ShipError> {
        let end = spooled.min(shipped + MAX_BATCH as i64);
        if !self.json() || end <= shipped || self.read_raw(end - 1, end)? == b"\n" {
            return Ok(end);
        }
        let bytes = self.read_raw(shipped, end)?;
        Ok(bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(shipped, |i| shipped + i as i64 + 1))
    }

    fn read_raw(&self, from: i64, to: i64) -> Result<Vec<u8>, ShipError> {
        let mut file = std::fs::File::open(&self.spool)?;
        file.seek(SeekFrom::Start(from as u64))?;
        let mut buf = vec![0u8; usize::try_from(to - from).unwrap_or(0)];
        file.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// The body of the append of spool bytes `from..to`: as they are, or JSON lines as one
    /// array (serialised JSON has no raw newlines, so each `\n` ends an event).
    fn read_spool(&self, from: i64, to: i64) -> Result<Bytes, ShipError> {
        let mut buf = self.read_raw(from, to)?;
        if self.json() {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            for b in &mut buf {
                if *b == b'\n' {
                    *b = b',';
                }
            }
            buf.insert(0, b'[');
            buf.push(b']');
        }
        Ok(buf.into())
    }

    async fn client(&self) -> StreamClient {
        loop {
            match self.auth.token().await {
                Ok(token) => return self.client.with_key(&token),
                Err(e) => {
                    debug!(error = %e, "no host token yet");
                    tokio::time::sleep(RETRY_MAX).await;
                }
            }
        }
    }

    /// One append, retried until the stream has it: `Restart` when the producer state is out
    /// of step with the stream, `Full` when the stream has no room for it.
    async fn append(&self, body: Bytes, epoch: i64, seq: i64, close: bool) -> Result<(), Refused> {
        let mut wait = RETRY_MIN;
        loop {
            let client = self.client().await;
            let append = Append {
                content_type: self.kind.content_type(),
                body: body.clone(),
                producer: Some(ProducerStamp {
                    id: PRODUCER_ID,
                    epoch: epoch as u64,
                    seq: seq as u64,
                }),
                close,
            };
            let e = match client.append(&self.stream_path, append).await {
                Ok(_) => return Ok(()),
                Err(StreamError::Closed { .. }) if close => return Ok(()),
                Err(
                    StreamError::Fenced { .. }
                    | StreamError::SequenceGap { .. }
                    | StreamError::Gone { .. },
                ) => {
                    return Err(Refused::Restart);
                }
                Err(StreamError::Status { status: 413, .. }) => return Err(Refused::Full),
                Err(e) => e,
            };
            if matches!(&e, StreamError::Status { status: 401, .. }) {
                self.auth.invalidate();
            }
            if matches!(e, StreamError::NotFound { .. }) {
                // The edge creates the stream with the session; create it again in case it
                // lost it (same type: a no-op if it is there).
                let options = crate::streams::CreateOptions {
                    content_type: self.kind.content_type().into(),
                    ..Default::default()
                };
                let _ = client.create(&self.stream_path, &options).await;
            }
            warn!(session = %self.session_id, error = %e, retry_in_ms = wait.as_millis() as u64, "shipping output failed");
            tokio::time::sleep(e.retry_after().unwrap_or(wait)).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// Closes the stream after the last byte (a close-only append in the producer's order).
    async fn close(&self, epoch: i64, seq: i64) -> Result<(), ShipError> {
        if self.append(Bytes::new(), epoch, seq, true).await.is_err() {
            // Out of step on the very last step: close without the producer.
            self.close_plain().await;
        }
        self.state.mark_stream_closed(&self.session_id).await?;
        Ok(())
    }

    /// A close-only append without a producer, best effort.
    async fn close_plain(&self) {
        let close = Append {
            content_type: self.kind.content_type(),
            body: Bytes::new(),
            producer: None,
            close: true,
        };
        if let Err(e) = self.client().await.append(&self.stream_path, close).await {
            warn!(session = %self.session_id, error = %e, "closing the stream failed");
        }
    }

    /// The stream's length in bytes (its tail offset).
    async fn tail(&self) -> Result<i64, ShipError> {
        loop {
            let client = self.client().await;
            match client.head(&self.stream_path).await {
                Ok(info) => {
                    return Ok(
                        tether_durable::stream::Offset::parse(info.next_offset.as_str())
                            .map_or(0, |o| o.0),
                    );
                }
                Err(StreamError::NotFound { .. } | StreamError::Gone { .. }) => {
                    return Err(ShipError::Gone);
                }
                Err(e) => {
                    warn!(error = %e, "reading the stream's tail failed");
                    tokio::time::sleep(RETRY_MAX).await;
                }
            }
        }
    }
}

/// Why an append will never be taken as it is.
enum Refused {
    /// The producer's (epoch, seq) is out of step with the stream.
    Restart,
    /// The stream is at its size limit.
    Full,
}
