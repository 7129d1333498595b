//! The host's side of pairing: ask the edge for a code, then poll until a member approves it.
//!
//! 1. `POST /v1/pairing {public_key, name, os, arch, agents}` answers `201 {code, expires_at,
//!    poll_token}`.
//! 2. A member approves the code (`tether hosts approve CODE`, or the API).
//! 3. Meanwhile the host polls `GET /v1/pairing/{code}` with `Authorization: Bearer
//!    <poll_token>` every few seconds until it answers `{status: "approved", host_id, org_id}`;
//!    a 404 or 410 (or passing `expires_at`) means the code is gone.

use crate::Error;
use crate::api::{ApiClient, PairingStarted};
use std::time::{Duration, SystemTime};
use tracing::{debug, warn};

/// How often the host asks whether its code was approved.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The API's limit on a host's name.
const MAX_NAME: usize = 100;
/// The longest a code can live, used when `expires_at` cannot be read.
const MAX_CODE_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// How a pairing ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Approved {
        host_id: String,
        org_id: String,
    },
    /// The code expired (or was used, or deleted) before anyone approved it.
    Expired,
    /// The edge ended the pairing with another status (for example `rejected`).
    Refused {
        status: String,
    },
}

/// Polls until the pairing is approved, refused or expired. Transient failures (no answer,
/// 5xx, 429) are logged and polling continues until the code's expiry.
pub async fn wait_for_approval(
    client: &ApiClient,
    started: &PairingStarted,
    interval: Duration,
) -> Result<Outcome, Error> {
    let deadline =
        expiry(&started.expires_at).unwrap_or_else(|| SystemTime::now() + MAX_CODE_LIFETIME);
    let mut wait = interval;
    loop {
        match client
            .pairing_status(&started.code, &started.poll_token)
            .await
        {
            Ok(s) => match s.status.as_str() {
                "pending" => {
                    debug!(code = %started.code, "pairing still pending");
                    wait = interval;
                }
                "approved" => {
                    let (Some(host_id), Some(org_id)) = (s.host_id, s.org_id) else {
                        return Err(Error::Protocol(
                            "the pairing was approved but the answer has no host_id or org_id",
                        ));
                    };
                    return Ok(Outcome::Approved { host_id, org_id });
                }
                "expired" => return Ok(Outcome::Expired),
                other => {
                    return Ok(Outcome::Refused {
                        status: other.to_owned(),
                    });
                }
            },
            Err(e) => match e.status() {
                Some(404 | 410) => return Ok(Outcome::Expired),
                Some(429) => {
                    warn!("pairing poll rate-limited; slowing down");
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Some(s) if s < 500 => return Err(e),
                _ => warn!(error = %e, "pairing poll failed; retrying"),
            },
        }
        if SystemTime::now() >= deadline {
            return Ok(Outcome::Expired);
        }
        tokio::time::sleep(wait).await;
    }
}

/// `expires_at` as a time, if it is RFC 3339.
pub fn expiry(expires_at: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(expires_at).ok()?;
    let ms = u64::try_from(t.timestamp_millis()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// This machine's name as pairing reports it.
pub fn host_name() -> String {
    let name = gethostname::gethostname()
        .to_string_lossy()
        .trim()
        .to_owned();
    if name.is_empty() {
        "unnamed-host".into()
    } else {
        name.chars().take(MAX_NAME).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parses_expiry() {
        let t = expiry("2026-01-02T03:04:05.678Z").unwrap();
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(ms, 1_767_323_045_678);
        assert!(expiry("tomorrow").is_none());
    }

    #[test]
    fn has_a_name() {
        assert!(!host_name().is_empty());
    }
}
