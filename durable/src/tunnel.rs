//! The host tunnel's wire protocol: what the edge's Host object and the `tether` daemon say to
//! each other over one WebSocket. Both sides use this module, so they cannot drift apart.
//!
//! - One [`Frame`] per binary WebSocket message, encoded with postcard (compact, serde-based,
//!   the same on every target). [`encode`] / [`decode`] are the only way in and out; a frame
//!   over [`MAX_FRAME`] or one that does not decode is a protocol error ([`CloseCode::BadFrame`]).
//! - Multiplexing: request/response RPC in both directions (ids, deadlines, cancel), byte
//!   channels with credit-based flow control ([`flow`]), persisted commands with acks (each
//!   delivered in order and handled once), heartbeats both ways ([`liveness`]), in-band drain.
//! - [`CloseCode`]: typed close codes, each with the one [`Recovery`] the daemon must follow.
//! - [`pending`]: the table of requests awaiting answers, with its cap and deadlines.
//!
//! Version: the WebSocket subprotocol is [`SUBPROTOCOL`]; a breaking change gets a new one.

pub mod flow;
pub mod liveness;
pub mod pending;

use serde::{Deserialize, Serialize};

/// The WebSocket subprotocol both sides ask for.
pub const SUBPROTOCOL: &str = "tether-tunnel.v1";
/// The largest encoded frame. Byte channels send data in pieces of at most [`MAX_DATA`].
pub const MAX_FRAME: usize = 1024 * 1024;
/// The most bytes one `Data` frame carries.
pub const MAX_DATA: usize = 256 * 1024;
/// Longest RPC method, command kind or channel kind.
pub const MAX_NAME: usize = 64;

/// One message on the tunnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Liveness, either way. The other side answers with `Pong` carrying the same nonce.
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },

    /// Ask the other side to do something. `deadline_ms` is relative to receipt: past it the
    /// caller has given up, so the callee may drop the work. `body` is JSON.
    Request {
        id: u64,
        method: String,
        deadline_ms: u32,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// The answer to `Request { id }`.
    Response {
        id: u64,
        result: RpcResult,
    },
    /// The caller gave up on `Request { id }`.
    Cancel {
        id: u64,
    },

    /// Open byte channel `channel` (chosen by the opener; the edge opens even ids, the daemon odd
    /// ones) of some `kind` (such as `terminal`), granting the other side `window` bytes of
    /// credit for data it sends back on this channel.
    Open {
        channel: u32,
        kind: String,
        #[serde(with = "serde_bytes")]
        meta: Vec<u8>,
        window: u32,
    },
    /// Bytes on a channel; never more than the sender's credit.
    Data {
        channel: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The receiver consumed `bytes` more: the sender may send that much more.
    Credit {
        channel: u32,
        bytes: u32,
    },
    /// The channel is done (in this direction and the other); `error` says why, when it failed.
    Close {
        channel: u32,
        error: Option<String>,
    },

    /// A command the edge persisted for this host, delivered in `seq` order, possibly more than
    /// once (after a reconnect): the daemon handles each `id` once and always acks.
    Command {
        id: String,
        seq: u64,
        kind: String,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// The daemon has handled (or had already handled) `Command { id }`.
    Ack {
        id: String,
    },

    /// Stop starting new work: the sender is about to close (edge deploy, daemon shutdown).
    /// In-flight requests may finish; reconnect after `retry_after_ms`.
    Drain {
        reason: String,
        retry_after_ms: u32,
    },
}

/// The outcome of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RpcResult {
    /// JSON.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    Err(RpcError),
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: RpcErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcErrorCode {
    /// No such method.
    NotFound,
    /// The arguments were wrong.
    BadRequest,
    /// The deadline passed before an answer.
    DeadlineExceeded,
    /// Too many requests are pending; try later.
    Overloaded,
    /// The handler failed.
    Internal,
    /// The other side is going away.
    Draining,
    /// The request does not fit the state of what it names (a session that has ended).
    Conflict,
}

/// A frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(&'static str),
}

impl Frame {
    /// Checks the limits a decoded frame must respect.
    fn validate(&self) -> Result<(), WireError> {
        let name_ok = |n: &str| !n.is_empty() && n.len() <= MAX_NAME;
        match self {
            Self::Request { method, .. } if !name_ok(method) => {
                Err(WireError::Invalid("bad method name"))
            }
            Self::Open { kind, .. } | Self::Command { kind, .. } if !name_ok(kind) => {
                Err(WireError::Invalid("bad kind"))
            }
            Self::Data { bytes, .. } if bytes.len() > MAX_DATA => {
                Err(WireError::Invalid("data frame over MAX_DATA"))
            }
            Self::Command { id, .. } | Self::Ack { id } if id.is_empty() || id.len() > MAX_NAME => {
                Err(WireError::Invalid("bad command id"))
            }
            _ => Ok(()),
        }
    }
}

pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    frame.validate()?;
    let bytes = postcard::to_allocvec(frame).map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let frame: Frame =
        postcard::from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    frame.validate()?;
    Ok(frame)
}

/// What the daemon does after the tunnel closes with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Transient: reconnect with backoff.
    Reconnect,
    /// Get a fresh host token (sign a new nonce), then reconnect.
    RefreshAndReconnect,
    /// Permanent: stop retrying and say why.
    Stop,
}

/// The tunnel's close codes. Application codes are 4xxx, echoing HTTP where one fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: a clean close (the daemon shutting down).
    Normal,
    /// 1001: the edge is going away (restart, deploy).
    GoingAway,
    /// 1011: an unexpected failure on the other side.
    InternalError,
    /// 1012: the edge restarted the object.
    ServiceRestart,
    /// 4000: closed after an in-band `Drain`.
    Drained,
    /// 4400: the peer sent a frame that breaks the protocol.
    BadFrame,
    /// 4401: the host token expired.
    AuthExpired,
    /// 4403: the host was revoked or is not allowed.
    Forbidden,
    /// 4408: no heartbeat in time: the connection is considered dead.
    Stale,
    /// 4409: a newer connection of the same host replaced this one.
    Replaced,
    /// 4410: the host was deleted.
    Gone,
    /// 4429: too much pending work; slow down.
    Overloaded,
}

impl CloseCode {
    pub const ALL: [Self; 12] = [
        Self::Normal,
        Self::GoingAway,
        Self::InternalError,
        Self::ServiceRestart,
        Self::Drained,
        Self::BadFrame,
        Self::AuthExpired,
        Self::Forbidden,
        Self::Stale,
        Self::Replaced,
        Self::Gone,
        Self::Overloaded,
    ];

    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::InternalError => 1011,
            Self::ServiceRestart => 1012,
            Self::Drained => 4000,
            Self::BadFrame => 4400,
            Self::AuthExpired => 4401,
            Self::Forbidden => 4403,
            Self::Stale => 4408,
            Self::Replaced => 4409,
            Self::Gone => 4410,
            Self::Overloaded => 4429,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// What the daemon must do after a close with this code. An unknown code (or a socket that
    /// died without one) is transient.
    pub fn recovery(code: Option<u16>) -> Recovery {
        match code.and_then(Self::from_code) {
            Some(Self::AuthExpired) => Recovery::RefreshAndReconnect,
            Some(Self::Forbidden | Self::Replaced | Self::Gone) => Recovery::Stop,
            _ => Recovery::Reconnect,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Ping { nonce: 7 },
            Frame::Pong { nonce: u64::MAX },
            Frame::Request {
                id: 1,
                method: "host.info".into(),
                deadline_ms: 5_000,
                body: b"{}".to_vec(),
            },
            Frame::Response {
                id: 1,
                result: RpcResult::Ok(br#"{"ok":true}"#.to_vec()),
            },
            Frame::Response {
                id: 2,
                result: RpcResult::Err(RpcError {
                    code: RpcErrorCode::DeadlineExceeded,
                    message: "late".into(),
                }),
            },
            Frame::Cancel { id: 3 },
            Frame::Open {
                channel: 2,
                kind: "terminal".into(),
                meta: vec![],
                window: 65_536,
            },
            Frame::Data {
                channel: 2,
                bytes: vec![0, 255, 10, 13],
            },
            Frame::Credit {
                channel: 2,
                bytes: 4,
            },
            Frame::Close {
                channel: 2,
                error: Some("exited".into()),
            },
            Frame::Command {
                id: "cmd_1".into(),
                seq: 1,
                kind: "session.start".into(),
                body: b"{}".to_vec(),
            },
            Frame::Ack { id: "cmd_1".into() },
            Frame::Drain {
                reason: "deploy".into(),
                retry_after_ms: 1_000,
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for f in samples() {
            let bytes = encode(&f).unwrap();
            assert_eq!(decode(&bytes).unwrap(), f);
        }
    }

    #[test]
    fn data_is_carried_as_bytes_not_a_sequence() {
        let bytes = encode(&Frame::Data {
            channel: 1,
            bytes: vec![0xAB; 1000],
        })
        .unwrap();
        assert!(
            bytes.len() < 1010,
            "{} bytes of overhead",
            bytes.len() - 1000
        );
    }

    #[test]
    fn garbage_and_oversize_frames_are_refused() {
        assert!(matches!(
            decode(&[0xFF, 0xFF, 0xFF]),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(decode(&[]), Err(WireError::Malformed(_))));
        assert!(matches!(
            decode(&vec![0; MAX_FRAME + 1]),
            Err(WireError::TooLarge(_))
        ));
        // Every prefix of a valid frame is refused, never misread.
        let full = encode(&samples()[2]).unwrap();
        for cut in 0..full.len() {
            assert!(decode(&full[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let big = Frame::Data {
            channel: 1,
            bytes: vec![0; MAX_DATA + 1],
        };
        assert!(matches!(encode(&big), Err(WireError::Invalid(_))));
        let unnamed = Frame::Request {
            id: 1,
            method: String::new(),
            deadline_ms: 1,
            body: vec![],
        };
        assert!(encode(&unnamed).is_err());
        // A bad frame crafted by hand (bypassing `encode`) is caught on decode too.
        let crafted = postcard::to_allocvec(&unnamed).unwrap();
        assert!(matches!(decode(&crafted), Err(WireError::Invalid(_))));
    }

    #[test]
    fn close_codes_say_what_to_do() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(
            CloseCode::recovery(Some(4401)),
            Recovery::RefreshAndReconnect
        );
        for stop in [4403, 4409, 4410] {
            assert_eq!(CloseCode::recovery(Some(stop)), Recovery::Stop, "{stop}");
        }
        for again in [1000, 1001, 1006, 1011, 1012, 4000, 4400, 4408, 4429, 4999] {
            assert_eq!(
                CloseCode::recovery(Some(again)),
                Recovery::Reconnect,
                "{again}"
            );
        }
        assert_eq!(CloseCode::recovery(None), Recovery::Reconnect);
    }
}
