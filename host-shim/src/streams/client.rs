//! `StreamClient`: one HTTP call per protocol operation, no retries (the producer owns those).

use super::{Offset, StreamError, headers as h};
use bytes::Bytes;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// The reference server holds a long-poll for 30 s; a client that gives up first would turn
/// every quiet interval into a transport error.
pub const DEFAULT_LONG_POLL_TIMEOUT: Duration = Duration::from_secs(45);
/// For every call that is not a long-poll.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error body we keep for the error message.
const ERROR_BODY_CHARS: usize = 512;

/// A client of the Durable Streams HTTP protocol for streams under `<base>/v1/stream/<path>`,
/// authenticated with a bearer key. Cheap to clone (one shared connection pool).
#[derive(Clone)]
pub struct StreamClient {
    http: reqwest::Client,
    base: Url,
    key: String,
    request_timeout: Duration,
    long_poll_timeout: Duration,
}

impl std::fmt::Debug for StreamClient {
    /// Leaves the key out: clients end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClient")
            .field("base", &self.base.as_str())
            .field("request_timeout", &self.request_timeout)
            .field("long_poll_timeout", &self.long_poll_timeout)
            .finish_non_exhaustive()
    }
}

/// How to create a stream.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Every append must carry the same type. Default `application/octet-stream`.
    pub content_type: String,
    /// Sliding time to live, reset by every read and write (whole seconds are sent).
    pub ttl: Option<Duration>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            content_type: "application/octet-stream".into(),
            ttl: None,
        }
    }
}

/// The answer to a create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// False when the stream already existed with the same configuration.
    pub created: bool,
    pub next_offset: Offset,
}

/// A stream's metadata (HEAD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub content_type: Option<String>,
    /// The tail: where the next append will land.
    pub next_offset: Offset,
    pub closed: bool,
    pub ttl_secs: Option<u64>,
    pub expires_at: Option<String>,
}

/// One read's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Empty when a long-poll timed out or the stream is closed at this offset.
    pub data: Bytes,
    /// Where the next read continues.
    pub next_offset: Offset,
    /// The reader has everything the stream holds (as of this answer).
    pub up_to_date: bool,
    /// The stream is closed and the reader is at its end: no more data will ever come.
    pub closed: bool,
    /// The long-poll cursor to echo on the next long-poll (None for catch-up reads).
    pub cursor: Option<String>,
}

/// A producer's identity on one append: the server keeps (epoch, last seq) per id and stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerStamp<'a> {
    pub id: &'a str,
    pub epoch: u64,
    pub seq: u64,
}

/// One POST.
#[derive(Clone, Debug)]
pub struct Append<'a> {
    pub content_type: &'a str,
    /// May be empty only with `close`.
    pub body: Bytes,
    pub producer: Option<ProducerStamp<'a>>,
    /// Close the stream, atomically with the body if there is one.
    pub close: bool,
}

/// The answer to an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The tail after the append (a producer's duplicate answer may not carry it).
    pub next_offset: Option<Offset>,
    /// The server already had this (producer, epoch, seq): nothing was written this time.
    pub duplicate: bool,
    pub closed: bool,
    /// The producer's highest accepted seq, as the server reports it.
    pub producer_seq: Option<u64>,
}

impl StreamClient {
    /// A client with its own connection pool. `base_url` is the server's origin (plus any
    /// path prefix); streams live under `<base_url>/v1/stream/`.
    pub fn new(base_url: &str, key: &str) -> Result<Self, StreamError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| StreamError::Client(Arc::new(e)))?;
        Self::with_http(http, base_url, key)
    }

    /// A client over an existing `reqwest::Client` (to share its pool and TLS settings).
    pub fn with_http(
        http: reqwest::Client,
        base_url: &str,
        key: &str,
    ) -> Result<Self, StreamError> {
        let base = Url::parse(base_url).map_err(|e| StreamError::InvalidUrl {
            url: base_url.into(),
            source: Some(e),
        })?;
        if base.cannot_be_a_base() {
            return Err(StreamError::InvalidUrl {
                url: base_url.into(),
                source: None,
            });
        }
        Ok(Self {
            http,
            base,
            key: key.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            long_poll_timeout: DEFAULT_LONG_POLL_TIMEOUT,
        })
    }

    /// The same client (and connection pool) with another bearer key, such as a refreshed
    /// host token.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: key.into(),
            ..self.clone()
        }
    }

    /// Overrides the per-request timeouts. Keep `long_poll` above the server's hold time.
    pub fn with_timeouts(mut self, request: Duration, long_poll: Duration) -> Self {
        self.request_timeout = request;
        self.long_poll_timeout = long_poll;
        self
    }

    /// `<base>/v1/stream/<path>`, each segment of `path` percent-encoded.
    pub fn stream_url(&self, path: &str) -> Result<Url, StreamError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| StreamError::InvalidUrl {
                url: self.base.to_string(),
                source: None,
            })?
            .pop_if_empty()
            .extend(["v1", "stream"])
            .extend(path.split('/').filter(|s| !s.is_empty()));
        Ok(url)
    }

    fn request(&self, method: Method, url: Url, timeout: Duration) -> RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.key)
            .timeout(timeout)
    }

    async fn send(
        &self,
        method: &'static str,
        url: &Url,
        req: RequestBuilder,
    ) -> Result<Response, StreamError> {
        let res = req.send().await.map_err(|e| transport(method, url, e))?;
        debug!(method, %url, status = res.status().as_u16(), "streams");
        Ok(res)
    }

    /// PUT: creates the stream, or confirms it exists with the same configuration.
    pub async fn create(&self, path: &str, opts: &CreateOptions) -> Result<Created, StreamError> {
        let url = self.stream_url(path)?;
        let mut req = self
            .request(Method::PUT, url.clone(), self.request_timeout)
            .header(reqwest::header::CONTENT_TYPE, &opts.content_type);
        if let Some(ttl) = opts.ttl {
            req = req.header(h::TTL, ttl.as_secs().to_string());
        }
        let res = self.send("PUT", &url, req).await?;
        match res.status() {
            StatusCode::CREATED | StatusCode::OK => Ok(Created {
                created: res.status() == StatusCode::CREATED,
                next_offset: next_offset("PUT", &url, &res)?,
            }),
            StatusCode::CONFLICT => Err(StreamError::ConfigConflict { url: url.into() }),
            _ => Err(unexpected("PUT", &url, res).await),
        }
    }

    /// HEAD: the stream's metadata and tail offset.
    pub async fn head(&self, path: &str) -> Result<StreamInfo, StreamError> {
        let url = self.stream_url(path)?;
        let req = self.request(Method::HEAD, url.clone(), self.request_timeout);
        let res = self.send("HEAD", &url, req).await?;
        if res.status() != StatusCode::OK {
            return Err(unexpected("HEAD", &url, res).await);
        }
        Ok(StreamInfo {
            content_type: header(&res, reqwest::header::CONTENT_TYPE.as_str()).map(str::to_owned),
            next_offset: next_offset("HEAD", &url, &res)?,
            closed: flag(&res, h::CLOSED),
            ttl_secs: header(&res, h::TTL).and_then(|v| v.parse().ok()),
            expires_at: header(&res, h::EXPIRES_AT).map(str::to_owned),
        })
    }

    /// A catch-up read from `offset`: as much as the server gives in one answer.
    pub async fn read(&self, path: &str, offset: &Offset) -> Result<Chunk, StreamError> {
        let mut url = self.stream_url(path)?;
        url.query_pairs_mut().append_pair("offset", offset.as_str());
        let req = self.request(Method::GET, url.clone(), self.request_timeout);
        let res = self.send("GET", &url, req).await?;
        if res.status() != StatusCode::OK {
            return Err(unexpected("GET", &url, res).await);
        }
        chunk("GET", &url, res).await
    }

    /// Catch-up reads from `from`, following `Stream-Next-Offset` until up to date; answers
    /// everything read, concatenated, with the last answer's offset and flags.
    pub async fn read_to_end(&self, path: &str, from: &Offset) -> Result<Chunk, StreamError> {
        let mut data = bytes::BytesMut::new();
        let mut offset = from.clone();
        loop {
            let c = self.read(path, &offset).await?;
            data.extend_from_slice(&c.data);
            // An answer that does not move the offset cannot make progress: stop there too.
            if c.up_to_date || c.closed || c.next_offset == offset {
                return Ok(Chunk {
                    data: data.freeze(),
                    ..c
                });
            }
            offset = c.next_offset;
        }
    }

    /// A long-poll read: answers at once if there is data after `offset`, else waits (on the
    /// server, up to its timeout) for some. A wait that ends without data answers an empty
    /// chunk with `up_to_date`. Echo the answer's `cursor` on the next call.
    pub async fn long_poll(
        &self,
        path: &str,
        offset: &Offset,
        cursor: Option<&str>,
    ) -> Result<Chunk, StreamError> {
        let mut url = self.stream_url(path)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("offset", offset.as_str());
            q.append_pair("live", "long-poll");
            if let Some(c) = cursor {
                q.append_pair("cursor", c);
            }
        }
        let req = self.request(Method::GET, url.clone(), self.long_poll_timeout);
        let res = self.send("GET", &url, req).await?;
        match res.status() {
            StatusCode::OK => chunk("GET", &url, res).await,
            // Timed out at the tail, or the stream is closed: no body.
            StatusCode::NO_CONTENT => Ok(Chunk {
                data: Bytes::new(),
                next_offset: next_offset("GET", &url, &res)?,
                up_to_date: true,
                closed: flag(&res, h::CLOSED),
                cursor: header(&res, h::CURSOR).map(str::to_owned),
            }),
            _ => Err(unexpected("GET", &url, res).await),
        }
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<(), StreamError> {
        let url = self.stream_url(path)?;
        let req = self.request(Method::DELETE, url.clone(), self.request_timeout);
        let res = self.send("DELETE", &url, req).await?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(unexpected("DELETE", &url, res).await)
        }
    }

    /// One POST, no retries. With a producer stamp, a duplicate (204) is reported as
    /// `duplicate`, a stale epoch as `Fenced` and a sequence gap as `SequenceGap`.
    pub async fn append(&self, path: &str, append: Append<'_>) -> Result<Appended, StreamError> {
        let url = self.stream_url(path)?;
        let mut req = self.request(Method::POST, url.clone(), self.request_timeout);
        if !append.body.is_empty() {
            // A close-only request carries no body and so no type.
            req = req.header(reqwest::header::CONTENT_TYPE, append.content_type);
        }
        if let Some(p) = append.producer {
            req = req
                .header(h::PRODUCER_ID, p.id)
                .header(h::PRODUCER_EPOCH, p.epoch.to_string())
                .header(h::PRODUCER_SEQ, p.seq.to_string());
        }
        if append.close {
            req = req.header(h::CLOSED, "true");
        }
        let has_body = !append.body.is_empty();
        let res = self.send("POST", &url, req.body(append.body)).await?;
        let status = res.status();
        let closed = flag(&res, h::CLOSED);
        match (status, append.producer) {
            // 200 is a producer's new append, 204 a plain append or a close-only request.
            (StatusCode::OK, _) | (StatusCode::NO_CONTENT, None) => Ok(Appended {
                next_offset: Some(next_offset("POST", &url, &res)?),
                duplicate: false,
                closed,
                producer_seq: header_u64(&res, h::PRODUCER_SEQ),
            }),
            // A producer's 204: a duplicate, or the answer to a close-only request, which the
            // server answers 204 whether it is new or not. Either way the data is there.
            (StatusCode::NO_CONTENT, Some(_)) => Ok(Appended {
                next_offset: header(&res, h::NEXT_OFFSET).map(Offset::from),
                duplicate: has_body,
                closed,
                producer_seq: header_u64(&res, h::PRODUCER_SEQ),
            }),
            (StatusCode::FORBIDDEN, Some(p)) if header(&res, h::PRODUCER_EPOCH).is_some() => {
                Err(StreamError::Fenced {
                    producer_id: p.id.into(),
                    epoch: p.epoch,
                    current_epoch: header_u64(&res, h::PRODUCER_EPOCH),
                })
            }
            (StatusCode::CONFLICT, Some(p)) if header(&res, h::PRODUCER_EXPECTED_SEQ).is_some() => {
                Err(StreamError::SequenceGap {
                    producer_id: p.id.into(),
                    epoch: p.epoch,
                    sent: p.seq,
                    expected: header_u64(&res, h::PRODUCER_EXPECTED_SEQ),
                })
            }
            (StatusCode::CONFLICT, _) if closed => Err(StreamError::Closed {
                url: url.into(),
                next_offset: header(&res, h::NEXT_OFFSET).map(Offset::from),
            }),
            _ => Err(unexpected("POST", &url, res).await),
        }
    }
}

fn transport(method: &'static str, url: &Url, e: reqwest::Error) -> StreamError {
    StreamError::Transport {
        method,
        url: url.to_string(),
        source: Arc::new(e),
    }
}

fn header<'r>(res: &'r Response, name: &str) -> Option<&'r str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

fn header_u64(res: &Response, name: &str) -> Option<u64> {
    header(res, name).and_then(|v| v.trim().parse().ok())
}

fn flag(res: &Response, name: &str) -> bool {
    header(res, name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn next_offset(method: &'static str, url: &Url, res: &Response) -> Result<Offset, StreamError> {
    header(res, h::NEXT_OFFSET)
        .filter(|v| !v.is_empty())
        .map(Offset::from)
        .ok_or_else(|| StreamError::BadHeader {
            method,
            url: url.to_string(),
            header: h::NEXT_OFFSET,
        })
}

async fn chunk(method: &'static str, url: &Url, res: Response) -> Result<Chunk, StreamError> {
    let next_offset = next_offset(method, url, &res)?;
    let up_to_date = flag(&res, h::UP_TO_DATE);
    let closed = flag(&res, h::CLOSED);
    let cursor = header(&res, h::CURSOR).map(str::to_owned);
    let data = res.bytes().await.map_err(|e| transport(method, url, e))?;
    Ok(Chunk {
        data,
        next_offset,
        up_to_date,
        closed,
        cursor,
    })
}

/// Maps a status the operation did not expect to an error, keeping the start of the body.
async fn unexpected(method: &'static str, url: &Url, res: Response) -> StreamError {
    let status = res.status();
    let retry_after =
        header_u64(&res, reqwest::header::RETRY_AFTER.as_str()).map(Duration::from_secs);
    match status {
        StatusCode::NOT_FOUND => StreamError::NotFound {
            url: url.to_string(),
        },
        StatusCode::GONE => StreamError::Gone {
            url: url.to_string(),
        },
        _ => {
            // The body only explains the error; failing to read it must not hide the status.
            let body = res.text().await.unwrap_or_default();
            StreamError::Status {
                method,
                url: url.to_string(),
                status: status.as_u16(),
                body: body.chars().take(ERROR_BODY_CHARS).collect(),
                retry_after,
            }
        }
    }
}
