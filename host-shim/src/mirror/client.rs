//! One shape request: `GET {server}/v1/orgs/{org}/shape?table=&offset=&handle=[&live=true&cursor=]`
//! with the host token, read into a [`Batch`] or a must-refetch, or a [`SyncError`] that says
//! how to recover ([`SyncError::recovery`]).

use super::protocol::{self, Message, headers};
use super::store::{Batch, Position};
use crate::host_auth::{HostAuth, TokenError};
use reqwest::{Response, StatusCode};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tether_durable::error::ErrorBody;

/// The most bytes one response may have; a bigger one fails (and is asked again later).
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// A catch-up request's time limit.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// A live request's: the edge holds it up to 20 s, so this only catches a dead connection.
const LIVE_TIMEOUT: Duration = Duration::from_secs(45);
/// How much of an error body goes into the error.
const ERROR_BODY_CHARS: usize = 300;

/// Why a shape request gave nothing to apply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("the host token: {0}")]
    Token(#[source] TokenError),
    #[error("GET {url}: no answer from the server")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An error status. `code` is the API error body's, when it sent one.
    #[error("the server answered HTTP {status}: {body}")]
    Status {
        status: u16,
        code: Option<String>,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("the answer is bigger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the answer has no {0} header")]
    MissingHeader(&'static str),
    #[error("the answer is not a list of shape messages")]
    Body(#[source] serde_json::Error),
    #[error("invalid server URL")]
    Url(#[source] url::ParseError),
    /// Storing the answer failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
}

/// What to do after a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The host was revoked: syncing cannot work again.
    Stop,
    /// The token was refused: get a new one and ask again.
    RefreshToken,
    /// A passing failure (no answer, 429, 5xx, a broken answer): ask again after a backoff,
    /// or after the server's Retry-After when it gave one.
    Retry(Option<Duration>),
    /// The server refused the request as such (another 4xx): asking again soon will not help,
    /// so wait long, in case a newer edge or a fixed configuration changes the answer.
    BackOff,
}

impl SyncError {
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Token(TokenError::Revoked | TokenError::Refused(_)) => Recovery::Stop,
            Self::Status {
                status: 401, code, ..
            } if code.as_deref() == Some("host_revoked") => Recovery::Stop,
            Self::Status { status: 401, .. } => Recovery::RefreshToken,
            Self::Status {
                status,
                retry_after,
                ..
            } if *status == 408 || *status == 429 || *status >= 500 => {
                Recovery::Retry(*retry_after)
            }
            Self::Status { .. } | Self::Url(_) => Recovery::BackOff,
            Self::Token(_)
            | Self::Transport { .. }
            | Self::TooLarge { .. }
            | Self::MissingHeader(_)
            | Self::Body(_)
            | Self::Store(_) => Recovery::Retry(None),
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Messages to apply, with the position they leave the table at.
    Batch(Batch),
    /// The handle is no longer served (409, or must-refetch in a body): start over, with this
    /// handle when the server named one.
    MustRefetch { handle: Option<String> },
}

/// Asks one org's shape endpoint with a host's token.
pub struct ShapeClient {
    http: reqwest::Client,
    auth: Arc<HostAuth>,
    url: url::Url,
}

impl std::fmt::Debug for ShapeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapeClient")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl ShapeClient {
    /// The client of `org_id`'s shapes at `auth`'s server.
    pub fn new(
        http: reqwest::Client,
        auth: Arc<HostAuth>,
        org_id: &str,
    ) -> Result<Self, SyncError> {
        let mut url = url::Url::parse(&auth.server).map_err(SyncError::Url)?;
        url.path_segments_mut()
            .map_err(|()| SyncError::Url(url::ParseError::RelativeUrlWithCannotBeABaseBase))?
            .pop_if_empty()
            .extend(["v1", "orgs", org_id, "shape"]);
        Ok(Self { http, auth, url })
    }

    pub fn auth(&self) -> &Arc<HostAuth> {
        &self.auth
    }

    /// The URL of a request for `table` from `position` (live: a long-poll at the tail).
    pub fn request_url(&self, table: &str, position: &Position, live: bool) -> url::Url {
        let mut url = self.url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("table", table)
                .append_pair("offset", &position.offset);
            if let Some(handle) = &position.handle {
                q.append_pair("handle", handle);
            }
            if live {
                q.append_pair("live", "true")
                    .append_pair("cursor", position.cursor.as_deref().unwrap_or(""));
            }
        }
        url
    }

    /// One request for `table` from `position`.
    pub async fn fetch(
        &self,
        table: &str,
        position: &Position,
        live: bool,
    ) -> Result<Answer, SyncError> {
        let url = self.request_url(table, position, live);
        let token = self.auth.token().await.map_err(SyncError::Token)?;
        let transport = |source| SyncError::Transport {
            url: url.to_string(),
            source,
        };
        let res = self
            .http
            .get(url.clone())
            .bearer_auth(token)
            .timeout(if live { LIVE_TIMEOUT } else { CATCH_UP_TIMEOUT })
            .send()
            .await
            .map_err(transport)?;
        let status = res.status();
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match status {
            StatusCode::CONFLICT => Ok(Answer::MustRefetch {
                handle: header(headers::HANDLE),
            }),
            StatusCode::OK | StatusCode::NO_CONTENT => {
                let handle =
                    header(headers::HANDLE).ok_or(SyncError::MissingHeader(headers::HANDLE))?;
                let offset =
                    header(headers::OFFSET).ok_or(SyncError::MissingHeader(headers::OFFSET))?;
                let cursor = header(headers::CURSOR);
                let schema = header(headers::SCHEMA);
                let messages = if status == StatusCode::NO_CONTENT {
                    // Deprecated, but allowed: nothing new, up to date.
                    vec![Message::UpToDate]
                } else {
                    let body = read_capped(res, MAX_RESPONSE_BYTES).await.map_err(|e| {
                        e.unwrap_or_else(|source| SyncError::Transport {
                            url: url.to_string(),
                            source,
                        })
                    })?;
                    protocol::parse_body(&body).map_err(SyncError::Body)?
                };
                if messages.contains(&Message::MustRefetch) {
                    return Ok(Answer::MustRefetch {
                        handle: Some(handle),
                    });
                }
                Ok(Answer::Batch(Batch {
                    handle,
                    offset,
                    cursor,
                    schema,
                    messages,
                }))
            }
            _ => Err(error_status(res).await),
        }
    }
}

/// The body, refused past `limit` bytes (by its length when it says, else as it arrives).
/// The outer error is ours (too large), the inner the transport's.
async fn read_capped(
    mut res: Response,
    limit: usize,
) -> Result<Vec<u8>, Result<SyncError, reqwest::Error>> {
    if res
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(Ok(SyncError::TooLarge { limit }));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(Err)? {
        if body.len() + chunk.len() > limit {
            return Err(Ok(SyncError::TooLarge { limit }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn error_status(res: Response) -> SyncError {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // The body only explains the error; failing to read it must not hide the status.
    let body = res.text().await.unwrap_or_default();
    let code = serde_json::from_str::<ErrorBody>(&body)
        .ok()
        .map(|b| b.error.code);
    SyncError::Status {
        status,
        code,
        body: body.chars().take(ERROR_BODY_CHARS).collect(),
        retry_after,
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::identity::Identity;

    fn client(server: &str) -> ShapeClient {
        let http = reqwest::Client::new();
        let auth = HostAuth::new(server, "hst_1", Identity::generate().unwrap(), http.clone());
        ShapeClient::new(http, Arc::new(auth), "org_1").unwrap()
    }

    #[test]
    fn request_urls() {
        let c = client("http://127.0.0.1:8787/base/");
        let start = Position::start(None);
        assert_eq!(
            c.request_url("tasks", &start, false).as_str(),
            "http://127.0.0.1:8787/base/v1/orgs/org_1/shape?table=tasks&offset=-1"
        );
        let after_409 = Position::start(Some("h 2".into()));
        assert_eq!(
            c.request_url("tasks", &after_409, false).query(),
            Some("table=tasks&offset=-1&handle=h+2")
        );
        let live = Position {
            handle: Some("h1".into()),
            offset: "12_0".into(),
            cursor: None,
        };
        assert_eq!(
            c.request_url("task_statuses", &live, true).query(),
            Some("table=task_statuses&offset=12_0&handle=h1&live=true&cursor=")
        );
    }

    #[test]
    fn recoveries() {
        let status = |status, code: Option<&str>, retry_after| SyncError::Status {
            status,
            code: code.map(str::to_owned),
            body: String::new(),
            retry_after,
        };
        assert_eq!(
            status(401, Some("host_revoked"), None).recovery(),
            Recovery::Stop
        );
        assert_eq!(
            status(401, Some("unauthorized"), None).recovery(),
            Recovery::RefreshToken
        );
        let after = Some(Duration::from_secs(7));
        assert_eq!(status(429, None, after).recovery(), Recovery::Retry(after));
        assert_eq!(status(503, None, None).recovery(), Recovery::Retry(None));
        assert_eq!(
            status(400, Some("bad_request"), None).recovery(),
            Recovery::BackOff
        );
        assert_eq!(status(404, None, None).recovery(), Recovery::BackOff);
        assert_eq!(
            SyncError::Token(TokenError::Revoked).recovery(),
            Recovery::Stop
        );
        assert_eq!(
            SyncError::Token(TokenError::Unreachable("down".into())).recovery(),
            Recovery::Retry(None)
        );
        assert_eq!(
            SyncError::TooLarge { limit: 1 }.recovery(),
            Recovery::Retry(None)
        );
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_worth_retrying() {
        let c = client("http://127.0.0.1:9");
        let e = c
            .fetch("tasks", &Position::start(None), false)
            .await
            .unwrap_err();
        assert_eq!(e.recovery(), Recovery::Retry(None), "{e}");
    }
}
