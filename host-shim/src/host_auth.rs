//! The host's own credential: a short-lived host token, got by signing a fresh server nonce
//! with the host key. The tunnel uses one to connect; the session code uses one for its HTTP
//! calls (terminal streams, status reports, project links). [`HostAuth`] caches the token and
//! fetches a new one a minute before it expires, or after the edge refused it.

use crate::identity::Identity;
use serde::Deserialize;
use std::sync::Mutex;

/// Fetch a new token this long before the cached one expires.
const REFRESH_BEFORE_MS: i64 = 60_000;

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// No answer at all (refused, reset, timed out).
    #[error("the server is unreachable: {0}")]
    Unreachable(String),
    /// The edge answered with an error worth retrying later.
    #[error("{0}")]
    Transient(String),
    /// The host is unknown or revoked (404 on the nonce).
    #[error("the host was revoked or is unknown to the server: pair this machine again")]
    Revoked,
    /// The edge refused the signature or the host for good.
    #[error("the server refused this host: {0}")]
    Refused(String),
}

#[derive(Deserialize)]
struct Nonce {
    nonce: String,
}

#[derive(Deserialize)]
struct Token {
    token: String,
    expires_in: i64,
}

/// Gets and caches host tokens.
pub struct HostAuth {
    pub server: String,
    pub host_id: String,
    identity: Identity,
    http: reqwest::Client,
    cached: Mutex<Option<(String, i64)>>,
}

impl std::fmt::Debug for HostAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAuth")
            .field("server", &self.server)
            .field("host_id", &self.host_id)
            .finish_non_exhaustive()
    }
}

impl HostAuth {
    pub fn new(server: &str, host_id: &str, identity: Identity, http: reqwest::Client) -> Self {
        Self {
            server: server.trim_end_matches('/').to_owned(),
            host_id: host_id.to_owned(),
            identity,
            http,
            cached: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A valid token: the cached one, or a new one.
    pub async fn token(&self) -> Result<String, TokenError> {
        let now = crate::state::now_ms();
        if let Ok(cached) = self.cached.lock()
            && let Some((token, expires)) = cached.as_ref()
            && *expires - REFRESH_BEFORE_MS > now
        {
            return Ok(token.clone());
        }
        let (token, expires_in) = self.fetch().await?;
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((token.clone(), now + expires_in * 1000));
        }
        Ok(token)
    }

    /// Forgets the cached token (the edge refused it).
    pub fn invalidate(&self) {
        if let Ok(mut cached) = self.cached.lock() {
            *cached = None;
        }
    }

    /// Signs a fresh server nonce and trades it for a token: (token, seconds it lives).
    pub async fn fetch(&self) -> Result<(String, i64), TokenError> {
        let base = &self.server;
        let transient = |e: reqwest::Error| {
            if e.is_connect() || e.is_timeout() || e.is_request() {
                TokenError::Unreachable(e.to_string())
            } else {
                TokenError::Transient(e.to_string())
            }
        };
        let res = self
            .http
            .post(format!("{base}/v1/hosts/{}/nonce", self.host_id))
            .send()
            .await
            .map_err(transient)?;
        match res.status().as_u16() {
            201 => {}
            404 => return Err(TokenError::Revoked),
            s => return Err(TokenError::Transient(format!("nonce: HTTP {s}"))),
        }
        let nonce: Nonce = res.json().await.map_err(transient)?;
        let signature = self.identity.sign_auth(&self.host_id, &nonce.nonce);
        let res = self
            .http
            .post(format!("{base}/v1/hosts/{}/token", self.host_id))
            .json(&serde_json::json!({"nonce": nonce.nonce, "signature": signature}))
            .send()
            .await
            .map_err(transient)?;
        match res.status().as_u16() {
            200 => {
                let t: Token = res.json().await.map_err(transient)?;
                Ok((t.token, t.expires_in))
            }
            401 => {
                let body = res.text().await.unwrap_or_default();
                if body.contains("invalid_signature") || body.contains("host_revoked") {
                    Err(TokenError::Refused(body))
                } else {
                    Err(TokenError::Transient(format!("token refused: {body}")))
                }
            }
            s => Err(TokenError::Transient(format!("token: HTTP {s}"))),
        }
    }
}
