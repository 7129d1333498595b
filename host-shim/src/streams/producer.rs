//! `IdempotentProducer`: batched, ordered, exactly-once appends to one stream.
//!
//! A background task owns the producer's sequence. It takes what `append` queued, cuts it into
//! batches of at most `max_batch_bytes`, and sends one batch at a time: while a POST is in
//! flight new appends pile up, so an idle producer sends a small write at once (low latency)
//! and a busy one sends few large POSTs (throughput). Each batch gets the next `seq` once, and
//! every retry of it resends the same bytes with the same `(epoch, seq)`; the server answers a
//! retry whose first try already landed with 204 (duplicate), which counts as success. So a
//! dropped response can cost a retry but never a lost or doubled byte.

use super::client::{Append, Appended, ProducerStamp, StreamClient};
use super::{Offset, StreamError};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{Instrument, debug, error, info_span, warn};

/// Where a producer is in its sequence: what the daemon persists to resume after a restart.
///
/// Resuming with the same epoch is exactly-once only if every batch sent under it was
/// acknowledged, i.e. the state was taken after `flush()` or `close()`. After a crash, when a
/// batch may have been in flight, resume with [`ProducerState::next_epoch`] instead: the server
/// then fences any zombie still writing under the old epoch, and the data of the lost batch is
/// the daemon's to re-send (or not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub producer_id: String,
    pub epoch: u64,
    /// The seq of the next batch not yet acknowledged.
    pub next_seq: u64,
}

impl ProducerState {
    /// A fresh sequence: `epoch` at seq 0.
    pub fn new(producer_id: impl Into<String>, epoch: u64) -> Self {
        Self {
            producer_id: producer_id.into(),
            epoch,
            next_seq: 0,
        }
    }

    /// The same producer in a new epoch (a new epoch always starts at seq 0).
    pub fn next_epoch(&self) -> Self {
        Self {
            producer_id: self.producer_id.clone(),
            epoch: self.epoch.saturating_add(1),
            next_seq: 0,
        }
    }
}

/// Capped exponential backoff with jitter for retryable failures (no answer, 5xx, 408, 429).
/// There is no attempt limit: giving up on a batch would lose it. Bound a `flush()` with
/// `tokio::time::timeout` and watch [`ProducerStatus::retrying`] to notice an outage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The most we wait for a server's `Retry-After`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based): `initial * 2^(attempt-1)` capped at
    /// `max_backoff`, of which a random half is jittered away ("equal jitter") so producers
    /// that failed together do not retry together; never less than the server's `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, random: u64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let half = base / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(random % half_nanos.saturating_add(1));
        let delay = half + jitter;
        match retry_after {
            Some(asked) => delay.max(asked.min(self.max_retry_after)),
            None => delay,
        }
    }
}

/// How a producer batches and retries.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Must match the stream's. Batches concatenate appends, so this is for byte streams
    /// (octet-stream, text): a JSON stream would need each batch framed as an array.
    pub content_type: String,
    /// The most one POST carries; a larger append is split across POSTs.
    pub max_batch_bytes: usize,
    /// How long an idle producer waits for more data before sending what it has. Zero sends
    /// at once; batching then comes from the data that queues while a POST is in flight.
    pub linger: Duration,
    /// Appended but unacknowledged bytes beyond which `append` waits (backpressure).
    pub max_buffered_bytes: usize,
    pub retry: RetryPolicy,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            content_type: "application/octet-stream".into(),
            max_batch_bytes: 256 * 1024,
            linger: Duration::ZERO,
            max_buffered_bytes: 8 * 1024 * 1024,
            retry: RetryPolicy::default(),
        }
    }
}

/// What a producer has done so far, published after every acknowledgement and retry.
#[derive(Clone, Debug)]
pub struct ProducerStatus {
    /// Persist this to resume the sequence (see [`ProducerState`]).
    pub state: ProducerState,
    /// Bytes the server has acknowledged.
    pub acked_bytes: u64,
    /// Batches acknowledged, duplicates included.
    pub batches: u64,
    /// Batches the server answered as duplicates: a retry whose earlier try had landed.
    pub duplicates: u64,
    /// Retries of any batch.
    pub retries: u64,
    /// The stream's tail after our last acknowledged batch.
    pub next_offset: Option<Offset>,
    /// The last retryable error while the current batch is being retried; None once it lands.
    pub retrying: Option<StreamError>,
    /// The fatal error that stopped the producer, if one did.
    pub failed: Option<StreamError>,
    pub closed: bool,
}

/// Answers a `close()`: the final tail offset, when the server reported one.
type CloseReply = oneshot::Sender<Result<Option<Offset>, StreamError>>;

enum Command {
    /// Bytes and the buffer permits they hold until acknowledged.
    Data(Bytes, u32),
    Flush(oneshot::Sender<Result<(), StreamError>>),
    Close(CloseReply),
}

/// An idempotent, batching producer for one stream. Cheap to clone: clones share the sequence.
///
/// Dropping every handle lets the background task send what is queued and then stop (it keeps
/// retrying while the server is unreachable); [`abort`](Self::abort) stops it at once.
#[derive(Clone, Debug)]
pub struct IdempotentProducer {
    task: tokio::task::AbortHandle,
    tx: mpsc::UnboundedSender<CommandBox>,
    buffer: Arc<Semaphore>,
    max_buffered: u32,
    status: watch::Receiver<ProducerStatus>,
    closing: Arc<AtomicBool>,
    stream_url: String,
}

/// `Command` behind a newtype so `IdempotentProducer` can derive `Debug`.
struct CommandBox(Command);

impl std::fmt::Debug for CommandBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Command::Data(..) => "Data",
            Command::Flush(_) => "Flush",
            Command::Close(_) => "Close",
        })
    }
}

impl IdempotentProducer {
    /// Starts a producer on `path` (under `/v1/stream/`) from `state`: a fresh
    /// [`ProducerState::new`] or one saved from an earlier run. Spawns its task on the current
    /// tokio runtime.
    pub fn new(
        client: StreamClient,
        path: impl Into<String>,
        state: ProducerState,
        config: ProducerConfig,
    ) -> Result<Self, StreamError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StreamError::NoRuntime)?;
        let path = path.into();
        let stream_url = client.stream_url(&path)?.to_string();
        let max_buffered = u32::try_from(config.max_buffered_bytes.max(1)).unwrap_or(u32::MAX);
        let buffer = Arc::new(Semaphore::new(max_buffered as usize));
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(ProducerStatus {
            state: state.clone(),
            acked_bytes: 0,
            batches: 0,
            duplicates: 0,
            retries: 0,
            next_offset: None,
            retrying: None,
            failed: None,
            closed: false,
        });
        let span = info_span!(
            "stream_producer",
            producer_id = %state.producer_id,
            epoch = state.epoch,
            path = %path
        );
        let task = Task {
            client,
            path,
            stream_url: stream_url.clone(),
            config,
            state,
            rx,
            buffer: buffer.clone(),
            status: status_tx,
            pending: VecDeque::new(),
            pending_bytes: 0,
            enqueued: 0,
            acked: 0,
            owed: VecDeque::new(),
            flushes: VecDeque::new(),
            closers: None,
            closed: false,
            next_offset: None,
        };
        let task = runtime.spawn(task.run().instrument(span)).abort_handle();
        Ok(Self {
            task,
            tx,
            buffer,
            max_buffered,
            status,
            closing: Arc::new(AtomicBool::new(false)),
            stream_url,
        })
    }

    /// Queues `data` to be appended after everything appended before it. Answers once it is
    /// queued, not sent (see [`flush`](Self::flush)); waits while more than
    /// `max_buffered_bytes` are unacknowledged. Fails at once if the producer has failed or
    /// is closed.
    pub async fn append(&self, data: impl Into<Bytes>) -> Result<(), StreamError> {
        let data = data.into();
        if let Some(e) = self.status.borrow().failed.clone() {
            return Err(e);
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(StreamError::Closed {
                url: self.stream_url.clone(),
                next_offset: self.status.borrow().next_offset.clone(),
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        let permits = u32::try_from(data.len())
            .unwrap_or(u32::MAX)
            .min(self.max_buffered);
        match self.buffer.clone().acquire_many_owned(permits).await {
            // The task gives the permits back when the server acknowledges these bytes.
            Ok(p) => p.forget(),
            Err(_) => return Err(self.stopped()),
        }
        self.tx
            .send(CommandBox(Command::Data(data, permits)))
            .map_err(|_| self.stopped())
    }

    /// Waits until the server has acknowledged everything appended before this call.
    pub async fn flush(&self) -> Result<(), StreamError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(CommandBox(Command::Flush(tx)))
            .map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Sends everything queued, then closes the stream (with this producer's next seq, so a
    /// retried close is idempotent too). Later appends fail with `Closed`. Answers the final
    /// tail offset when the server reports it.
    pub async fn close(&self) -> Result<Option<Offset>, StreamError> {
        self.closing.store(true, Ordering::Release);
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(CommandBox(Command::Close(tx)))
            .map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Stops the background task now, abandoning whatever is not yet acknowledged (a POST in
    /// flight may still land, so resume from [`ProducerState::next_epoch`] unless everything
    /// was flushed). Every handle's later calls fail with `ProducerStopped`.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// The current (epoch, next seq): persist it to resume later.
    pub fn state(&self) -> ProducerState {
        self.status.borrow().state.clone()
    }

    pub fn status(&self) -> ProducerStatus {
        self.status.borrow().clone()
    }

    /// Every status change, for a daemon that shows progress or outages.
    pub fn subscribe(&self) -> watch::Receiver<ProducerStatus> {
        self.status.clone()
    }

    fn stopped(&self) -> StreamError {
        let status = self.status.borrow();
        status
            .failed
            .clone()
            .unwrap_or_else(|| StreamError::ProducerStopped {
                producer_id: status.state.producer_id.clone(),
            })
    }
}

/// The background task: the only owner of the sequence.
struct Task {
    client: StreamClient,
    path: String,
    stream_url: String,
    config: ProducerConfig,
    state: ProducerState,
    rx: mpsc::UnboundedReceiver<CommandBox>,
    buffer: Arc<Semaphore>,
    status: watch::Sender<ProducerStatus>,
    /// Queued, not yet in a batch.
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// Bytes ever queued, and ever acknowledged: a flush waits for `acked` to reach the
    /// `enqueued` of its time.
    enqueued: u64,
    acked: u64,
    /// Buffer permits to give back once `acked` reaches the first number.
    owed: VecDeque<(u64, u32)>,
    flushes: VecDeque<(u64, oneshot::Sender<Result<(), StreamError>>)>,
    /// Set once a close was asked for: those waiting on it.
    closers: Option<Vec<CloseReply>>,
    closed: bool,
    next_offset: Option<Offset>,
}

impl Task {
    async fn run(mut self) {
        loop {
            while let Ok(cmd) = self.rx.try_recv() {
                self.accept(cmd.0);
            }
            if !self.pending.is_empty() {
                let body = take_batch(&mut self.pending, self.config.max_batch_bytes);
                self.pending_bytes = self.pending_bytes.saturating_sub(body.len());
                match self.send(body.clone(), false).await {
                    Ok(answer) => self.acknowledged(body.len(), answer),
                    Err(e) => return self.fail(e).await,
                }
                continue;
            }
            // Everything queued is acknowledged.
            self.answer_flushes();
            if let Some(closers) = self.closers.take() {
                match self.send(Bytes::new(), true).await {
                    Ok(answer) => {
                        self.acknowledged(0, answer);
                        self.closed = true;
                        self.status.send_modify(|s| s.closed = true);
                        for c in closers {
                            let _ = c.send(Ok(self.next_offset.clone()));
                        }
                    }
                    Err(e) => return self.fail(e).await,
                }
                continue;
            }
            match self.rx.recv().await {
                Some(cmd) => {
                    self.accept(cmd.0);
                    self.linger().await;
                }
                // Every handle is gone and everything is sent.
                None => return,
            }
        }
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Data(data, permits) => {
                if self.closed {
                    warn!(bytes = data.len(), "append after close dropped");
                    self.buffer.add_permits(permits as usize);
                    return;
                }
                self.enqueued += data.len() as u64;
                self.pending_bytes += data.len();
                self.pending.push_back(data);
                self.owed.push_back((self.enqueued, permits));
            }
            Command::Flush(tx) => self.flushes.push_back((self.enqueued, tx)),
            Command::Close(tx) => {
                if self.closed {
                    let _ = tx.send(Ok(self.next_offset.clone()));
                } else {
                    self.closers.get_or_insert_with(Vec::new).push(tx);
                }
            }
        }
    }

    /// After the first write of an idle spell, waits up to `linger` for more to batch with it.
    async fn linger(&mut self) {
        if self.config.linger.is_zero() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.config.linger;
        while self.pending_bytes < self.config.max_batch_bytes && self.closers.is_none() {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.accept(cmd.0),
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Sends one batch (or the close) under the next seq until the server answers it.
    async fn send(&mut self, body: Bytes, close: bool) -> Result<Appended, StreamError> {
        let seq = self.state.next_seq;
        let mut attempt = 0u32;
        loop {
            let append = Append {
                content_type: &self.config.content_type,
                body: body.clone(),
                producer: Some(ProducerStamp {
                    id: &self.state.producer_id,
                    epoch: self.state.epoch,
                    seq,
                }),
                close,
            };
            match self.client.append(&self.path, append).await {
                Ok(answer) => {
                    // A duplicate of a later seq means this seq carried other data before.
                    if let Some(server_seq) =
                        answer.producer_seq.filter(|s| answer.duplicate && *s > seq)
                    {
                        return Err(StreamError::SequenceReused {
                            producer_id: self.state.producer_id.clone(),
                            epoch: self.state.epoch,
                            sent: seq,
                            server_seq,
                        });
                    }
                    debug!(
                        seq,
                        bytes = body.len(),
                        duplicate = answer.duplicate,
                        attempt,
                        "acknowledged"
                    );
                    return Ok(answer);
                }
                Err(e) if e.is_retryable() => {
                    attempt = attempt.saturating_add(1);
                    let random = getrandom::u64().unwrap_or(0);
                    let delay = self.config.retry.delay(attempt, e.retry_after(), random);
                    warn!(seq, attempt, ?delay, error = %e, "append failed, retrying");
                    self.status.send_modify(|s| {
                        s.retries += 1;
                        s.retrying = Some(e);
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn acknowledged(&mut self, len: usize, answer: Appended) {
        self.acked += len as u64;
        self.state.next_seq += 1;
        if answer.next_offset.is_some() {
            self.next_offset = answer.next_offset;
        }
        while let Some(&(until, permits)) = self.owed.front() {
            if until > self.acked {
                break;
            }
            self.owed.pop_front();
            self.buffer.add_permits(permits as usize);
        }
        let (state, acked, next_offset) =
            (self.state.clone(), self.acked, self.next_offset.clone());
        self.status.send_modify(|s| {
            s.state = state;
            s.acked_bytes = acked;
            s.batches += 1;
            s.duplicates += u64::from(answer.duplicate);
            s.next_offset = next_offset;
            s.retrying = None;
        });
        self.answer_flushes();
    }

    fn answer_flushes(&mut self) {
        while let Some((until, _)) = self.flushes.front() {
            if *until > self.acked {
                break;
            }
            if let Some((_, tx)) = self.flushes.pop_front() {
                let _ = tx.send(Ok(()));
            }
        }
    }

    /// A fatal error: reports it to everyone waiting now or later, until every handle is gone.
    async fn fail(mut self, e: StreamError) {
        error!(error = %e, unsent_bytes = self.enqueued - self.acked, url = %self.stream_url, "producer stopped");
        self.status.send_modify(|s| {
            s.failed = Some(e.clone());
            s.retrying = None;
        });
        // Wakes appends waiting for buffer space; they then see the failure.
        self.buffer.close();
        for (_, tx) in self.flushes.drain(..) {
            let _ = tx.send(Err(e.clone()));
        }
        for tx in self.closers.take().into_iter().flatten() {
            let _ = tx.send(Err(e.clone()));
        }
        while let Some(cmd) = self.rx.recv().await {
            match cmd.0 {
                Command::Data(..) => {}
                Command::Flush(tx) => {
                    let _ = tx.send(Err(e.clone()));
                }
                Command::Close(tx) => {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Takes up to `max` bytes off the front of `pending`, splitting a chunk that does not fit;
/// a lone chunk goes out without a copy.
fn take_batch(pending: &mut VecDeque<Bytes>, max: usize) -> Bytes {
    let max = max.max(1);
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut size = 0;
    while size < max {
        let Some(mut front) = pending.pop_front() else {
            break;
        };
        let room = max - size;
        if front.len() > room {
            let head = front.split_to(room);
            pending.push_front(front);
            size += head.len();
            pieces.push(head);
        } else {
            size += front.len();
            pieces.push(front);
        }
    }
    if pieces.len() == 1 {
        return pieces.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(size);
    for p in pieces {
        out.extend_from_slice(&p);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(chunks: &[&'static [u8]]) -> VecDeque<Bytes> {
        chunks.iter().map(|c| Bytes::from_static(c)).collect()
    }

    #[test]
    fn batches_join_small_chunks_and_split_big_ones_in_order() {
        let mut q = queue(&[b"ab", b"cde", b"fghijkl", b"m"]);
        let mut out = Vec::new();
        while !q.is_empty() {
            out.push(take_batch(&mut q, 4));
        }
        assert_eq!(out, [&b"abcd"[..], b"efgh", b"ijkl", b"m"]);
    }

    #[test]
    fn a_lone_chunk_that_fits_is_not_copied() {
        let chunk = Bytes::from(vec![7u8; 100]);
        let mut q = VecDeque::from([chunk.clone()]);
        let batch = take_batch(&mut q, 1000);
        assert_eq!(batch.as_ptr(), chunk.as_ptr());
        assert!(q.is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_jitter() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(10),
        };
        // No jitter: half the base.
        assert_eq!(p.delay(1, None, 0), Duration::from_millis(50));
        assert_eq!(p.delay(2, None, 0), Duration::from_millis(100));
        assert_eq!(p.delay(3, None, 0), Duration::from_millis(200));
        assert_eq!(p.delay(10, None, 0), Duration::from_millis(500));
        assert_eq!(p.delay(u32::MAX, None, 0), Duration::from_millis(500));
        // Full jitter: the whole base, never more.
        assert_eq!(p.delay(2, None, 50_000_000), Duration::from_millis(150));
        assert!(p.delay(30, None, u64::MAX) <= Duration::from_secs(1));
        // Retry-After wins when longer, up to its own cap.
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3)), 0),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(99)), 0),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn a_new_epoch_restarts_the_sequence() {
        let s = ProducerState {
            producer_id: "p".into(),
            epoch: 3,
            next_seq: 42,
        };
        assert_eq!(
            s.next_epoch(),
            ProducerState {
                producer_id: "p".into(),
                epoch: 4,
                next_seq: 0
            }
        );
    }
}
