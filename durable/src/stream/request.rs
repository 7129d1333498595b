//! The protocol's request headers and query parameters, parsed into typed requests. Every
//! malformed value is a 400 here, before the stream is touched.

use super::{MAX_TOKEN, Offset, PATH_PREFIX, StreamError, h, valid_path};

/// Request headers with lower-cased names.
#[derive(Debug, Default, Clone)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `PUT`: create a stream (or confirm an identical one).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateReq {
    /// The Content-Type as sent, when it names a type at all.
    pub content_type: Option<String>,
    pub ttl_secs: Option<i64>,
    /// Stream-Expires-At as sent, and the instant it names (ms since the epoch).
    pub expires_at: Option<(String, i64)>,
    pub closed: bool,
    pub fork: Option<ForkReq>,
}

/// The Stream-Forked-From family.
#[derive(Debug, Clone, PartialEq)]
pub struct ForkReq {
    /// The source's path, without [`PATH_PREFIX`].
    pub source: String,
    pub offset: Option<Offset>,
    /// Bytes (or, in JSON streams, messages) of the append after `offset` that the fork keeps.
    pub sub_offset: i64,
}

/// Longest TTL accepted: ten years.
const MAX_TTL_SECS: i64 = 10 * 365 * 24 * 3600;

fn decimal(s: &str) -> Option<i64> {
    // Strict: no sign, no leading zeros, no exponent, no fraction.
    if s == "0"
        || (s.starts_with(|c: char| ('1'..='9').contains(&c))
            && s.bytes().all(|b| b.is_ascii_digit()))
    {
        s.parse().ok()
    } else {
        None
    }
}

/// A content type that names a type (`type/subtype...`), or none.
fn named_type(ct: Option<&str>) -> Option<String> {
    let ct = ct?.trim();
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let (ty, rest) = ct.split_once('/')?;
    let sub_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        .count();
    (word(ty) && sub_len > 0).then(|| ct.to_owned())
}

fn flag(headers: &Headers, name: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

pub fn parse_create(headers: &Headers) -> Result<CreateReq, StreamError> {
    let ttl = headers.get(h::TTL);
    let expires = headers.get(h::EXPIRES_AT);
    if ttl.is_some() && expires.is_some() {
        return Err(StreamError::bad_request(
            "send Stream-TTL or Stream-Expires-At, not both",
        ));
    }
    let ttl_secs = ttl
        .map(|v| {
            decimal(v).filter(|t| *t <= MAX_TTL_SECS).ok_or_else(|| {
                StreamError::bad_request(format!(
                    "Stream-TTL must be a whole number of seconds up to {MAX_TTL_SECS}"
                ))
            })
        })
        .transpose()?;
    let expires_at = expires
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v.trim())
                .map(|t| (v.to_owned(), t.timestamp_millis()))
                .map_err(|_| {
                    StreamError::bad_request("Stream-Expires-At must be an RFC 3339 timestamp")
                })
        })
        .transpose()?;
    let source = headers.get(h::FORKED_FROM);
    let fork_offset = headers.get(h::FORK_OFFSET);
    let sub = headers.get(h::FORK_SUB_OFFSET);
    let fork = match source {
        None if sub.is_some() || fork_offset.is_some() => {
            return Err(StreamError::bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        None => None,
        Some(src) => {
            let source = src
                .trim()
                .strip_prefix(PATH_PREFIX)
                .filter(|p| valid_path(p))
                .ok_or_else(|| {
                    StreamError::bad_request(format!(
                        "Stream-Forked-From must be a stream path ({PATH_PREFIX}...)"
                    ))
                })?
                .to_owned();
            let offset = fork_offset
                .map(|o| {
                    Offset::parse(o.trim())
                        .ok_or_else(|| StreamError::bad_request("malformed Stream-Fork-Offset"))
                })
                .transpose()?;
            let sub_offset = sub
                .map(|s| {
                    decimal(s.trim())
                        .ok_or_else(|| StreamError::bad_request("malformed Stream-Fork-Sub-Offset"))
                })
                .transpose()?
                .unwrap_or(0);
            if sub_offset > 0 && offset.is_none() {
                return Err(StreamError::bad_request(
                    "Stream-Fork-Sub-Offset needs Stream-Fork-Offset",
                ));
            }
            Some(ForkReq {
                source,
                offset,
                sub_offset,
            })
        }
    };
    Ok(CreateReq {
        content_type: named_type(headers.get("content-type")),
        ttl_secs,
        expires_at,
        closed: flag(headers, h::CLOSED),
        fork,
    })
}

/// Producer-Id / Producer-Epoch / Producer-Seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    pub id: String,
    pub epoch: i64,
    pub seq: i64,
}

/// `POST`: append and/or close.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendReq {
    pub content_type: Option<String>,
    pub seq: Option<String>,
    pub close: bool,
    pub producer: Option<Producer>,
}

/// The largest integer a JavaScript client can send exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

pub fn parse_append(headers: &Headers) -> Result<AppendReq, StreamError> {
    let id = headers.get(h::PRODUCER_ID);
    let epoch = headers.get(h::PRODUCER_EPOCH);
    let seq = headers.get(h::PRODUCER_SEQ);
    let producer = match (id, epoch, seq) {
        (None, None, None) => None,
        (Some(id), Some(epoch), Some(seq)) => {
            if id.is_empty() || id.len() > MAX_TOKEN {
                return Err(StreamError::bad_request(format!(
                    "Producer-Id must be 1 to {MAX_TOKEN} bytes"
                )));
            }
            let int = |v: &str, name: &str| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| v.bytes().all(|b| b.is_ascii_digit()) && *n <= MAX_SAFE_INTEGER)
                    .ok_or_else(|| {
                        StreamError::bad_request(format!("{name} must be a non-negative integer"))
                    })
            };
            Some(Producer {
                id: id.to_owned(),
                epoch: int(epoch, "Producer-Epoch")?,
                seq: int(seq, "Producer-Seq")?,
            })
        }
        _ => {
            return Err(StreamError::bad_request(
                "Producer-Id, Producer-Epoch and Producer-Seq go together",
            ));
        }
    };
    let seq = headers
        .get(h::SEQ)
        .map(|s| {
            if s.is_empty() || s.len() > MAX_TOKEN {
                Err(StreamError::bad_request(format!(
                    "Stream-Seq must be 1 to {MAX_TOKEN} bytes"
                )))
            } else {
                Ok(s.to_owned())
            }
        })
        .transpose()?;
    Ok(AppendReq {
        content_type: headers
            .get("content-type")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        seq,
        close: flag(headers, h::CLOSED),
        producer,
    })
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `-1` or no offset: the beginning.
    Beginning,
    /// `now`: the current tail.
    Now,
    At(Offset),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    No,
    LongPoll,
    Sse,
}

/// `GET`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadReq {
    pub start: Start,
    /// The offset parameter as sent (`-1` when absent), for the ETag.
    pub raw_offset: String,
    pub live: Live,
    pub cursor: Option<String>,
}

pub fn parse_read(query: &str) -> Result<ReadReq, StreamError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| StreamError::bad_request(format!("malformed query: {e}")))?;
    let mut offset = None;
    let mut live = Live::No;
    let mut cursor = None;
    for (k, v) in pairs {
        match k.as_str() {
            "offset" if offset.is_some() => {
                return Err(StreamError::bad_request("send one offset parameter"));
            }
            "offset" => offset = Some(v),
            "live" => {
                live = match v.as_str() {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    _ => {
                        return Err(StreamError::bad_request("live must be long-poll or sse"));
                    }
                }
            }
            "cursor" if v.len() <= MAX_TOKEN => cursor = Some(v),
            "cursor" => return Err(StreamError::bad_request("cursor is too long")),
            // Unknown parameters (cache busters and the like) are ignored.
            _ => {}
        }
    }
    let start = match offset.as_deref() {
        None | Some("-1") => Start::Beginning,
        Some("now") => Start::Now,
        Some(o) => Start::At(Offset::parse(o).ok_or_else(|| {
            StreamError::bad_request("malformed offset: use -1, now or an offset the server gave")
        })?),
    };
    if offset.is_none() && live != Live::No {
        return Err(StreamError::bad_request("live reads need an offset"));
    }
    Ok(ReadReq {
        start,
        raw_offset: offset.unwrap_or_else(|| "-1".into()),
        live,
        cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(pairs: &[(&str, &str)]) -> Headers {
        Headers::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn ttl_is_a_strict_decimal() {
        for bad in [
            "-1",
            "01",
            "+1",
            "1.5",
            "1e3",
            "",
            "abc",
            "99999999999999999999",
        ] {
            let e = parse_create(&hs(&[("Stream-TTL", bad)])).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
        }
        assert_eq!(
            parse_create(&hs(&[("stream-ttl", "0")])).unwrap().ttl_secs,
            Some(0)
        );
        let both = hs(&[
            ("stream-ttl", "5"),
            ("stream-expires-at", "2030-01-01T00:00:00Z"),
        ]);
        assert_eq!(parse_create(&both).unwrap_err().status, 400);
        let at = parse_create(&hs(&[("stream-expires-at", "2030-01-01T01:00:00+01:00")])).unwrap();
        assert_eq!(at.expires_at.unwrap().1, 1_893_456_000_000);
    }

    #[test]
    fn content_types_without_a_type_are_absent() {
        for (ct, want) in [
            ("text/plain", Some("text/plain")),
            ("", None),
            ("garbage", None),
            ("/x", None),
        ] {
            let r = parse_create(&hs(&[("content-type", ct)])).unwrap();
            assert_eq!(r.content_type.as_deref(), want, "{ct:?}");
        }
    }

    #[test]
    fn fork_headers_hang_together() {
        let f = parse_create(&hs(&[
            ("stream-forked-from", "/v1/stream/src"),
            ("stream-fork-offset", "0000000000000000_0000000000000005"),
            ("stream-fork-sub-offset", "2"),
        ]))
        .unwrap()
        .fork
        .unwrap();
        assert_eq!(
            (f.source.as_str(), f.offset, f.sub_offset),
            ("src", Some(Offset(5)), 2)
        );
        for bad in [
            vec![("stream-fork-sub-offset", "0")],
            vec![
                ("stream-forked-from", "/v1/stream/s"),
                ("stream-fork-sub-offset", "1"),
            ],
            vec![
                ("stream-forked-from", "/v1/stream/s"),
                ("stream-fork-sub-offset", "-1"),
            ],
            vec![("stream-forked-from", "/elsewhere/s")],
            vec![
                ("stream-forked-from", "/v1/stream/s"),
                ("stream-fork-offset", "x"),
            ],
        ] {
            assert_eq!(parse_create(&hs(&bad)).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn producer_headers_go_together_and_are_integers() {
        let ok = parse_append(&hs(&[
            ("producer-id", "p"),
            ("producer-epoch", "1"),
            ("producer-seq", "2"),
        ]))
        .unwrap();
        assert_eq!(
            ok.producer,
            Some(Producer {
                id: "p".into(),
                epoch: 1,
                seq: 2
            })
        );
        for bad in [
            vec![("producer-id", "p")],
            vec![
                ("producer-id", ""),
                ("producer-epoch", "0"),
                ("producer-seq", "0"),
            ],
            vec![
                ("producer-id", "p"),
                ("producer-epoch", "-1"),
                ("producer-seq", "0"),
            ],
            vec![
                ("producer-id", "p"),
                ("producer-epoch", "1.5"),
                ("producer-seq", "0"),
            ],
            vec![
                ("producer-id", "p"),
                ("producer-epoch", "0"),
                ("producer-seq", "9007199254740992"),
            ],
        ] {
            assert_eq!(parse_append(&hs(&bad)).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn read_queries() {
        let r = parse_read("offset=now&live=sse&cursor=7&x=1").unwrap();
        assert_eq!(
            (r.start, r.live, r.cursor.as_deref()),
            (Start::Now, Live::Sse, Some("7"))
        );
        assert_eq!(parse_read("").unwrap().start, Start::Beginning);
        for bad in [
            "offset=",
            "offset=a,b",
            "offset=1&offset=2",
            "live=sse",
            "offset=-1&live=x",
            "offset=0_1%20",
        ] {
            assert_eq!(parse_read(bad).unwrap_err().status, 400, "{bad:?}");
        }
    }
}
