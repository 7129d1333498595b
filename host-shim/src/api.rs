//! A small client of the edge's REST API: the calls the CLI makes (who am I, pairing, the host
//! list) and the health probe `tether doctor` uses.
//!
//! Every error answer is decoded from the API's one error shape
//! (`{"error": {"code", "message"}}`) into [`Error::Api`], so the CLI can print the server's
//! own sentence. Nothing here retries; callers decide.

use crate::Error;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a non-JSON error body goes into the message.
const ERROR_BODY_CHARS: usize = 300;

/// Checks and normalises an edge URL: http(s), a host, no query; the trailing slash dropped.
pub fn normalize_server(url: &str) -> Result<String, Error> {
    let invalid = |reason| Error::InvalidServer {
        url: url.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(url.trim()).map_err(|_| invalid("not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a base URL has no query or fragment"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// `GET /v1/me`.
#[derive(Clone, Debug, Deserialize)]
pub struct Me {
    pub user_id: String,
    pub member_id: String,
    pub role: String,
    pub org: OrgSummary,
}

#[derive(Clone, Debug, Deserialize)]
pub struct OrgSummary {
    pub id: String,
    pub name: String,
}

/// An agent CLI found on the machine, as pairing reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    pub version: String,
}

/// `POST /v1/pairing`: the host asks for a code.
#[derive(Clone, Debug, Serialize)]
pub struct PairingRequest {
    /// Unpadded base64url of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    pub name: String,
    pub os: String,
    pub arch: String,
    pub agents: Vec<AgentInfo>,
}

/// The answer to [`PairingRequest`].
#[derive(Clone, Debug, Deserialize)]
pub struct PairingStarted {
    /// What a member types to approve the host.
    pub code: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Authenticates the host's polls of this pairing (and nothing else).
    pub poll_token: String,
}

/// `GET /v1/pairing/{code}` as the host sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct PairingStatus {
    /// `pending`, `approved`, or a final refusal such as `expired`.
    pub status: String,
    #[serde(default)]
    pub host_id: Option<String>,
    #[serde(default)]
    pub org_id: Option<String>,
}

/// A host as `GET /v1/hosts` lists it: the fields the CLI prints (the rest is ignored; see
/// [`ApiClient::list_hosts_json`] for all of it).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HostSummary {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub online: Option<bool>,
    /// Why it is offline (or `connected`).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub last_seen_at: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub queued_commands: Option<i64>,
}

/// What `GET /health` showed.
#[derive(Clone, Debug)]
pub struct Health {
    /// Time from sending the request to the end of the answer.
    pub latency: Duration,
    /// The server's `Date` header, if it sent a valid one.
    pub server_date: Option<SystemTime>,
    /// Local time halfway through the request: what `server_date` should be compared with.
    pub local_midpoint: SystemTime,
}

impl Health {
    /// Server clock minus local clock, in seconds (positive: the server is ahead). `Date` has
    /// whole seconds, so anything within ±1 s is noise.
    pub fn clock_skew_secs(&self) -> Option<f64> {
        let server = self.server_date?;
        Some(match server.duration_since(self.local_midpoint) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        })
    }
}

/// A client of one edge, optionally with a bearer credential.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    server: String,
    bearer: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// `server` is checked with [`normalize_server`].
    pub fn new(server: &str, bearer: Option<&str>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Self {
            http,
            server: normalize_server(server)?,
            bearer: bearer.map(str::to_owned),
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// The credential it sends, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.server));
        match &self.bearer {
            Some(b) => req.bearer_auth(b),
            None => req,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        req: RequestBuilder,
    ) -> Result<Response, Error> {
        let resp = req.send().await.map_err(|source| Error::Transport {
            method: method_name(&method),
            url: format!("{}{path}", self.server),
            source,
        })?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(api_error(resp).await)
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        req: RequestBuilder,
    ) -> Result<T, Error> {
        let url = format!("{}{path}", self.server);
        let resp = self.send(method.clone(), path, req).await?;
        let bytes = resp.bytes().await.map_err(|source| Error::Transport {
            method: method_name(&method),
            url: url.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::UnexpectedBody {
            method: method_name(&method),
            url,
            source,
        })
    }

    /// `GET path`, its JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.json(Method::GET, path, self.request(Method::GET, path))
            .await
    }

    /// `POST path` with a JSON body, its JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, Error> {
        self.json(
            Method::POST,
            path,
            self.request(Method::POST, path).json(body),
        )
        .await
    }

    /// `DELETE path`.
    pub async fn delete_path(&self, path: &str) -> Result<(), Error> {
        self.send(Method::DELETE, path, self.request(Method::DELETE, path))
            .await
            .map(drop)
    }

    /// `GET /health`, timed, with the server's clock.
    pub async fn health(&self) -> Result<Health, Error> {
        let started = Instant::now();
        let sent_at = SystemTime::now();
        let resp = self
            .send(
                Method::GET,
                "/health",
                self.http.get(format!("{}/health", self.server)),
            )
            .await?;
        let server_date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let _ = resp.bytes().await;
        let latency = started.elapsed();
        Ok(Health {
            latency,
            server_date,
            local_midpoint: sent_at + latency / 2,
        })
    }

    /// `GET /v1/me`: who the credential belongs to.
    pub async fn me(&self) -> Result<Me, Error> {
        self.json(Method::GET, "/v1/me", self.request(Method::GET, "/v1/me"))
            .await
    }

    /// `POST /v1/pairing` (no credential: the host has none yet).
    pub async fn start_pairing(&self, body: &PairingRequest) -> Result<PairingStarted, Error> {
        let req = self
            .http
            .post(format!("{}/v1/pairing", self.server))
            .json(body);
        self.json(Method::POST, "/v1/pairing", req).await
    }

    /// `GET /v1/pairing/{code}`, authenticated by the poll token.
    pub async fn pairing_status(
        &self,
        code: &str,
        poll_token: &str,
    ) -> Result<PairingStatus, Error> {
        let path = format!("/v1/pairing/{}", segment(code));
        let req = self
            .http
            .get(format!("{}{path}", self.server))
            .bearer_auth(poll_token);
        self.json(Method::GET, &path, req).await
    }

    /// `POST /v1/pairing/{code}/approve` (a member). Returns the API's answer as is.
    pub async fn approve_pairing(&self, code: &str) -> Result<serde_json::Value, Error> {
        let path = format!("/v1/pairing/{}/approve", segment(code));
        let req = self.request(Method::POST, &path);
        self.json(Method::POST, &path, req).await
    }

    /// `GET /v1/hosts`.
    pub async fn list_hosts(&self) -> Result<Vec<HostSummary>, Error> {
        let req = self.request(Method::GET, "/v1/hosts");
        self.json(Method::GET, "/v1/hosts", req).await
    }

    /// `GET /v1/hosts`, each host exactly as the API sent it.
    pub async fn list_hosts_json(&self) -> Result<Vec<serde_json::Value>, Error> {
        let req = self.request(Method::GET, "/v1/hosts");
        self.json(Method::GET, "/v1/hosts", req).await
    }

    /// `GET /v1/hosts/{id}`: one host with its tunnel's status.
    pub async fn host(&self, id: &str) -> Result<HostSummary, Error> {
        let path = format!("/v1/hosts/{}", segment(id));
        let req = self.request(Method::GET, &path);
        self.json(Method::GET, &path, req).await
    }

    /// `DELETE /v1/hosts/{id}`: revokes the host.
    pub async fn revoke_host(&self, id: &str) -> Result<(), Error> {
        let path = format!("/v1/hosts/{}", segment(id));
        let req = self.request(Method::DELETE, &path);
        let resp = self.send(Method::DELETE, &path, req).await?;
        let _ = resp.bytes().await;
        Ok(())
    }
}

/// The API's JSON error, or the start of whatever else came back.
async fn api_error(resp: Response) -> Error {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<Body>(&bytes) {
        Ok(b) => Error::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => {
            let text: String = String::from_utf8_lossy(&bytes)
                .trim()
                .chars()
                .take(ERROR_BODY_CHARS)
                .collect();
            Error::Api {
                status: status.as_u16(),
                code: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_lowercase()
                    .replace(' ', "_"),
                message: if text.is_empty() {
                    format!("the server answered {status}")
                } else {
                    text
                },
            }
        }
    }
}

/// Percent-encodes one path segment (codes and ids are plain, but user input is not trusted).
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        _ => "HTTP",
    }
}

/// Whether an error means "the credential was refused" (401).
pub fn is_unauthorized(e: &Error) -> bool {
    e.status() == Some(StatusCode::UNAUTHORIZED.as_u16())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn normalizes_servers() {
        assert_eq!(
            normalize_server("http://127.0.0.1:8787/").unwrap(),
            "http://127.0.0.1:8787"
        );
        assert_eq!(
            normalize_server(" https://t.example.com/base/ ").unwrap(),
            "https://t.example.com/base"
        );
        for bad in [
            "",
            "127.0.0.1:8787",
            "ftp://x",
            "http://x/?a=1",
            "not a url",
        ] {
            assert!(normalize_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("ABCD-1234"), "ABCD-1234");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn hosts_decode_with_their_status() {
        let host = serde_json::json!({
            "id": "hst_1", "org_id": "org_1", "name": "box", "os": "linux", "arch": "x86_64",
            "public_key": "abc", "agents": [{"name": "claude", "version": "1.0.0"}],
            "created_by": "mem_1", "created_at": "2026-01-01T00:00:00Z", "revoked_at": null,
            "online": false, "reason": "never connected", "last_seen_at": null,
            "queued_commands": 0
        });
        let all: Vec<HostSummary> = serde_json::from_value(serde_json::json!([host])).unwrap();
        let h = all.first().unwrap();
        assert_eq!(h.online, Some(false));
        assert_eq!(h.reason.as_deref(), Some("never connected"));
        assert_eq!(h.revoked_at, None);
        assert_eq!(h.queued_commands, Some(0));
    }

    #[test]
    fn skew_sign() {
        let now = SystemTime::now();
        let h = Health {
            latency: Duration::ZERO,
            server_date: Some(now + Duration::from_secs(40)),
            local_midpoint: now,
        };
        assert!((h.clock_skew_secs().unwrap() - 40.0).abs() < 0.01);
        let h = Health {
            server_date: Some(now - Duration::from_secs(5)),
            ..h
        };
        assert!((h.clock_skew_secs().unwrap() + 5.0).abs() < 0.01);
    }
}
