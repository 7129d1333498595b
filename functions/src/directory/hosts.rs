//! The host registry in D1: pairing codes, hosts, approval attempts and connect nonces.
//!
//! Pairing: the daemon registers a request (its public key, name, platform and agent CLIs)
//! and gets a short code plus a poll token; a member approves the code, which creates the host
//! in the member's org; the daemon's poll then learns its host id. Connecting: the daemon asks
//! for a nonce, signs it with its key, and redeems nonce and signature for a host token. Every
//! one-time thing (a code, a nonce) is consumed by one conditional statement, so two concurrent
//! uses cannot both succeed.

use super::count;
use crate::auth::Principal;
use crate::auth::host::{self as cred, HOST_ID, HostPrincipal};
use crate::backend::Db;
use crate::error::ApiError;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tether_durable::host::HostStatus;
use tether_durable::ids;
use tether_durable::sync::MirrorHost;
use tether_durable::time::rfc3339;
use tether_durable::validate;
use utoipa::ToSchema;

/// Live (unrevoked) hosts per org.
pub const MAX_HOSTS_PER_ORG: i64 = 500;
/// Unexpired pairing codes across the deployment; past it new codes wait (503).
pub const MAX_PENDING_CODES: i64 = 10_000;
pub const MAX_AGENTS: usize = 32;
pub const HOST_NAME_MAX: usize = 100;
/// `os` and `arch`, e.g. `linux` / `x86_64`.
pub const PLATFORM_MAX: usize = 50;
pub const AGENT_NAME_MAX: usize = 50;
pub const AGENT_VERSION_MAX: usize = 100;
/// How long a pairing code can be approved.
pub const CODE_TTL_MS: i64 = 10 * 60 * 1000;
/// How long after approval the daemon can still poll for its host id.
pub const APPROVED_POLL_MS: i64 = 10 * 60 * 1000;
pub const NONCE_TTL_MS: i64 = 60 * 1000;
/// Outstanding nonces kept per host; a new one past this evicts the oldest.
pub const MAX_NONCES_PER_HOST: i64 = 20;
/// Failed approvals (unknown, expired or used codes) allowed per API key per window.
pub const MAX_FAILED_APPROVALS: i64 = 10;
pub const FAILED_APPROVAL_WINDOW_MS: i64 = 10 * 60 * 1000;

/// An agent CLI found on a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The command, e.g. `claude` or `codex` (at most 50 characters).
    pub name: String,
    /// What `--version` said (at most 100 characters).
    pub version: String,
}

/// What the daemon sends to start pairing.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePairing {
    /// The host's Ed25519 public key: 32 bytes, base64url without padding.
    pub public_key: String,
    /// 1 to 100 characters; usually the hostname.
    pub name: String,
    /// e.g. `linux`, `macos` (at most 50 characters).
    pub os: String,
    /// e.g. `x86_64`, `aarch64` (at most 50 characters).
    pub arch: String,
    /// At most 32, names unique.
    #[serde(default)]
    pub agents: Vec<Agent>,
}

/// A pairing code, for the daemon to show its user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pairing {
    /// `XXXX-XXXX`; accepted in any case, with or without the dash. Single use.
    pub code: String,
    pub expires_at: String,
    /// For `GET /v1/pairing/{code}` (`Authorization: Bearer`). Shown once; only its hash is kept.
    pub poll_token: String,
}

/// The answer to the daemon's poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PairingStatus {
    /// Nobody has approved the code yet.
    Pending,
    /// The host exists; it can now ask for a nonce and connect.
    Approved { host_id: String, org_id: String },
}

/// A host's status as far as the directory knows: offline, because revoked or (as far as it
/// can tell) never connected, nothing queued. Whether a host is connected is known only to its
/// Durable Object; the Worker replaces this with that object's `GET /status` (the same type).
pub fn directory_status(revoked: bool) -> HostStatus {
    HostStatus {
        online: false,
        reason: if revoked {
            "revoked"
        } else {
            "never connected"
        }
        .into(),
        last_seen_at: None,
        queued_commands: 0,
    }
}

/// A paired machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub os: String,
    pub arch: String,
    /// Ed25519, base64url without padding.
    pub public_key: String,
    pub agents: Vec<Agent>,
    /// The member who approved the pairing.
    pub created_by: String,
    pub created_at: String,
    /// Set once the host is revoked: it can no longer get nonces or tokens.
    pub revoked_at: Option<String>,
    /// Online, why not, last seen, queued commands.
    #[serde(flatten)]
    pub status: HostStatus,
}

/// A challenge for the host to sign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostNonce {
    /// 32 random bytes, base64url. Sign `tether-host-auth:v1\n{host_id}\n{nonce}` (UTF-8) with
    /// the host's key and redeem within a minute, once.
    pub nonce: String,
    pub expires_at: String,
}

/// A signed nonce, redeemed for a host token.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemNonce {
    pub nonce: String,
    /// Ed25519 over `tether-host-auth:v1\n{host_id}\n{nonce}`: 64 bytes, base64url.
    pub signature: String,
}

// ---- rows ----

#[derive(Deserialize)]
struct HostRow {
    id: String,
    org_id: String,
    name: String,
    os: String,
    arch: String,
    public_key: String,
    agents: String,
    created_by: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl HostRow {
    fn into_host(self) -> Result<Host, ApiError> {
        Ok(Host {
            agents: serde_json::from_str(&self.agents).map_err(|e| ApiError::internal(&e))?,
            id: self.id,
            org_id: self.org_id,
            name: self.name,
            os: self.os,
            arch: self.arch,
            public_key: self.public_key,
            created_by: self.created_by,
            created_at: rfc3339(self.created_at),
            revoked_at: self.revoked_at.map(rfc3339),
            status: directory_status(self.revoked_at.is_some()),
        })
    }
}

const HOST_SELECT: &str = "SELECT id, org_id, name, os, arch, public_key, agents, created_by,
    created_at, revoked_at FROM hosts";

/// A pairing request, checked: what an approval copies into the host row.
struct Checked {
    public_key: String,
    name: String,
    os: String,
    arch: String,
    /// The agents as JSON.
    agents: String,
}

fn check(input: CreatePairing) -> Result<Checked, ApiError> {
    let public_key = cred::public_key("public_key", &input.public_key)?;
    let name = validate::line("name", &input.name, HOST_NAME_MAX)?;
    let os = validate::line("os", &input.os, PLATFORM_MAX)?;
    let arch = validate::line("arch", &input.arch, PLATFORM_MAX)?;
    if input.agents.len() > MAX_AGENTS {
        return Err(ApiError::invalid(
            "agents",
            format!("at most {MAX_AGENTS} agents"),
        ));
    }
    let mut agents: Vec<Agent> = Vec::with_capacity(input.agents.len());
    for a in &input.agents {
        let agent = Agent {
            name: validate::line("agents.name", &a.name, AGENT_NAME_MAX)?,
            version: validate::line("agents.version", &a.version, AGENT_VERSION_MAX)?,
        };
        if agents.iter().any(|o| o.name == agent.name) {
            return Err(ApiError::invalid(
                "agents.name",
                format!("`{}` is listed twice", agent.name),
            ));
        }
        agents.push(agent);
    }
    Ok(Checked {
        public_key,
        name,
        os,
        arch,
        agents: serde_json::to_string(&agents).map_err(|e| ApiError::internal(&e))?,
    })
}

fn key_registered() -> ApiError {
    ApiError::conflict(
        "host_key_registered",
        "this public key belongs to a paired host; revoke that host or use a new key",
    )
}

/// Registers a pairing request and answers its code. Expired codes are purged on the way.
pub async fn create_pairing(
    db: &impl Db,
    input: CreatePairing,
    now: i64,
) -> Result<Pairing, ApiError> {
    let req = check(input)?;
    db.execute(
        "DELETE FROM pairing_codes WHERE expires_at <= ?",
        &[now.into()],
    )
    .await?;
    let live = count(
        db,
        "SELECT count(*) AS n FROM hosts WHERE public_key = ? AND revoked_at IS NULL",
        &[req.public_key.clone().into()],
    )
    .await?;
    if live > 0 {
        return Err(key_registered());
    }
    if count(db, "SELECT count(*) AS n FROM pairing_codes", &[]).await? >= MAX_PENDING_CODES {
        return Err(ApiError {
            retry_after: Some(60),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "pairing_busy",
                "too many machines are pairing right now; try again in a minute",
            )
        });
    }
    let poll_token = cred::random_token()?;
    let expires_at = now + CODE_TTL_MS;
    // 31^8 codes: a collision with one of at most 10 000 live codes is rare; retry it anyway.
    for _ in 0..3 {
        let code = cred::generate_code()?;
        let inserted = db
            .execute(
                "INSERT INTO pairing_codes
                 (code, poll_hash, public_key, name, os, arch, agents, created_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    code.clone().into(),
                    crate::auth::hash_key(&poll_token).into(),
                    req.public_key.clone().into(),
                    req.name.clone().into(),
                    req.os.clone().into(),
                    req.arch.clone().into(),
                    req.agents.clone().into(),
                    now.into(),
                    expires_at.into(),
                ],
            )
            .await;
        match inserted {
            Ok(_) => {
                return Ok(Pairing {
                    code: cred::display_code(&code),
                    expires_at: rfc3339(expires_at),
                    poll_token,
                });
            }
            Err(e) if e.unique_violation => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(&"no free pairing code after 3 tries"))
}

/// The daemon's poll. An unknown or expired code and a wrong token answer the same 404.
pub async fn pairing_status(
    db: &impl Db,
    code: &str,
    poll_token: &str,
    now: i64,
) -> Result<PairingStatus, ApiError> {
    #[derive(Deserialize)]
    struct Row {
        poll_hash: String,
        org_id: Option<String>,
        host_id: Option<String>,
    }
    let row: Option<Row> = db
        .query_one(
            "SELECT poll_hash, org_id, host_id FROM pairing_codes WHERE code = ? AND expires_at > ?",
            &[code.into(), now.into()],
        )
        .await?;
    match row {
        Some(r) if cred::secret_matches(poll_token, &r.poll_hash) => {
            Ok(match (r.host_id, r.org_id) {
                (Some(host_id), Some(org_id)) => PairingStatus::Approved { host_id, org_id },
                _ => PairingStatus::Pending,
            })
        }
        _ => Err(ApiError::not_found("pairing code")),
    }
}

/// Refuses when `key_id` has used up its failed approvals for the window (429, with the
/// seconds until the oldest one leaves it).
async fn check_attempts(db: &impl Db, key_id: &str, now: i64) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Attempts {
        n: i64,
        oldest: Option<i64>,
    }
    let a: Option<Attempts> = db
        .query_one(
            "SELECT count(*) AS n, min(at) AS oldest FROM pairing_attempts
             WHERE key_id = ? AND at > ?",
            &[key_id.into(), (now - FAILED_APPROVAL_WINDOW_MS).into()],
        )
        .await?;
    match a {
        Some(Attempts {
            n,
            oldest: Some(oldest),
        }) if n >= MAX_FAILED_APPROVALS => {
            let wait_ms = (oldest + FAILED_APPROVAL_WINDOW_MS - now).max(1000);
            let secs = u32::try_from((wait_ms + 999) / 1000).unwrap_or(u32::MAX);
            Err(ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many unknown pairing codes from this key; try again in {secs} s"),
                )
            })
        }
        _ => Ok(()),
    }
}

/// Approves a pairing code (already normalised): creates the host in the caller's org and
/// marks the code used, in one batch. An unknown, expired or used code is a 404 and counts
/// against the caller's key.
pub async fn approve_pairing(
    db: &impl Db,
    p: &Principal,
    code: &str,
    now: i64,
) -> Result<Host, ApiError> {
    check_attempts(db, &p.key_id, now).await?;
    let live = count(
        db,
        "SELECT count(*) AS n FROM hosts WHERE org_id = ? AND revoked_at IS NULL",
        &[p.org_id.clone().into()],
    )
    .await?;
    validate::cap(live, MAX_HOSTS_PER_ORG, "hosts per org; revoke one first")?;
    let host_id = ids::new(HOST_ID);
    let changed = db
        .batch(&[
            // Copies the request only while the code is unused and unexpired ...
            (
                "INSERT INTO hosts
                 (id, org_id, name, os, arch, public_key, agents, created_by, created_at)
                 SELECT ?, ?, name, os, arch, public_key, agents, ?, ? FROM pairing_codes
                 WHERE code = ? AND host_id IS NULL AND expires_at > ?",
                vec![
                    host_id.clone().into(),
                    p.org_id.clone().into(),
                    p.member_id.clone().into(),
                    now.into(),
                    code.into(),
                    now.into(),
                ],
            ),
            // ... and uses it up only if that host now exists, leaving the daemon time to poll.
            (
                "UPDATE pairing_codes SET org_id = ?, host_id = ?, approved_by = ?, expires_at = ?
                 WHERE code = ? AND host_id IS NULL AND EXISTS (SELECT 1 FROM hosts WHERE id = ?)",
                vec![
                    p.org_id.clone().into(),
                    host_id.clone().into(),
                    p.member_id.clone().into(),
                    (now + APPROVED_POLL_MS).into(),
                    code.into(),
                    host_id.clone().into(),
                ],
            ),
        ])
        .await
        .map_err(|e| {
            if e.unique_violation {
                key_registered()
            } else {
                ApiError::from(e)
            }
        })?;
    if changed.first().copied() != Some(1) {
        db.batch(&[
            (
                "INSERT INTO pairing_attempts (key_id, at) VALUES (?, ?)",
                vec![p.key_id.clone().into(), now.into()],
            ),
            (
                "DELETE FROM pairing_attempts WHERE key_id = ? AND at <= ?",
                vec![
                    p.key_id.clone().into(),
                    (now - FAILED_APPROVAL_WINDOW_MS).into(),
                ],
            ),
        ])
        .await?;
        return Err(ApiError::not_found("pairing code"));
    }
    host(db, &p.org_id, &host_id).await
}

/// The org's hosts, revoked ones included (until the cron purges them).
pub async fn hosts(db: &impl Db, org_id: &str) -> Result<Vec<Host>, ApiError> {
    let rows: Vec<HostRow> = db
        .query(
            &format!("{HOST_SELECT} WHERE org_id = ? ORDER BY id"),
            &[org_id.into()],
        )
        .await?;
    rows.into_iter().map(HostRow::into_host).collect()
}

/// The org's hosts (revoked ones included) as its object mirrors them for the `hosts` shape.
pub async fn mirror_hosts(db: &impl Db, org_id: &str) -> Result<Vec<MirrorHost>, ApiError> {
    Ok(db
        .query(
            &format!("{MIRROR_SELECT} WHERE org_id = ? ORDER BY id"),
            &[org_id.into()],
        )
        .await?)
}

/// One host of the org as its object mirrors it.
pub async fn mirror_host(
    db: &impl Db,
    org_id: &str,
    host_id: &str,
) -> Result<MirrorHost, ApiError> {
    db.query_one(
        &format!("{MIRROR_SELECT} WHERE org_id = ? AND id = ?"),
        &[org_id.into(), host_id.into()],
    )
    .await?
    .ok_or_else(|| ApiError::not_found("host"))
}

const MIRROR_SELECT: &str =
    "SELECT id, name, os, arch, agents, created_by, created_at, revoked_at FROM hosts";

/// A host of `org_id`; other orgs' hosts are "not found".
pub async fn host(db: &impl Db, org_id: &str, host_id: &str) -> Result<Host, ApiError> {
    ids::check(HOST_ID, "id", host_id)?;
    let row: Option<HostRow> = db
        .query_one(
            &format!("{HOST_SELECT} WHERE org_id = ? AND id = ?"),
            &[org_id.into(), host_id.into()],
        )
        .await?;
    row.ok_or_else(|| ApiError::not_found("host"))?.into_host()
}

/// Revokes a host (idempotent): from now on it gets no nonce and no token, and its outstanding
/// nonces are gone. Answers the host as it now is.
pub async fn revoke_host(
    db: &impl Db,
    org_id: &str,
    host_id: &str,
    now: i64,
) -> Result<Host, ApiError> {
    host(db, org_id, host_id).await?;
    db.batch(&[
        (
            "UPDATE hosts SET revoked_at = ? WHERE org_id = ? AND id = ? AND revoked_at IS NULL",
            vec![now.into(), org_id.into(), host_id.into()],
        ),
        (
            "DELETE FROM host_nonces WHERE host_id = ?",
            vec![host_id.into()],
        ),
    ])
    .await?;
    host(db, org_id, host_id).await
}

/// The org of a live (registered, unrevoked) host.
pub async fn live_host_org(db: &impl Db, host_id: &str) -> Result<Option<String>, ApiError> {
    #[derive(Deserialize)]
    struct Row {
        org_id: String,
    }
    if !ids::is_valid(HOST_ID, host_id) {
        return Ok(None);
    }
    let row: Option<Row> = db
        .query_one(
            "SELECT org_id FROM hosts WHERE id = ? AND revoked_at IS NULL",
            &[host_id.into()],
        )
        .await?;
    Ok(row.map(|r| r.org_id))
}

/// Issues a nonce for a live host (unknown and revoked hosts: 404). Used and expired nonces
/// are dropped, and past [`MAX_NONCES_PER_HOST`] the oldest outstanding ones: whoever floods
/// a host's nonces only shortens how long its daemon has to answer, never locks it out.
pub async fn issue_nonce(db: &impl Db, host_id: &str, now: i64) -> Result<HostNonce, ApiError> {
    ids::check(HOST_ID, "id", host_id)?;
    if live_host_org(db, host_id).await?.is_none() {
        return Err(ApiError::not_found("host"));
    }
    let nonce = cred::random_token()?;
    let expires_at = now + NONCE_TTL_MS;
    db.batch(&[
        (
            "DELETE FROM host_nonces WHERE host_id = ? AND nonce NOT IN (
                 SELECT nonce FROM host_nonces
                 WHERE host_id = ? AND used_at IS NULL AND expires_at > ?
                 ORDER BY expires_at DESC LIMIT ?)",
            vec![
                host_id.into(),
                host_id.into(),
                now.into(),
                (MAX_NONCES_PER_HOST - 1).into(),
            ],
        ),
        (
            "INSERT INTO host_nonces (nonce, host_id, expires_at) VALUES (?, ?, ?)",
            vec![nonce.clone().into(), host_id.into(), expires_at.into()],
        ),
    ])
    .await?;
    Ok(HostNonce {
        nonce,
        expires_at: rfc3339(expires_at),
    })
}

fn refused(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Checks a signed nonce and uses the nonce up. The signature is checked before the nonce is
/// touched, so nobody without the key can burn a host's nonce; the nonce is then consumed by
/// one conditional update, so a replay or a concurrent second use fails (401).
pub async fn redeem_nonce(
    db: &impl Db,
    host_id: &str,
    input: &RedeemNonce,
    now: i64,
) -> Result<HostPrincipal, ApiError> {
    ids::check(HOST_ID, "id", host_id)?;
    if cred::decode_fixed::<32>(&input.nonce).is_none() {
        return Err(ApiError::invalid(
            "nonce",
            "must be a nonce from POST .../nonce",
        ));
    }
    let signature = cred::decode_fixed::<64>(&input.signature).ok_or_else(|| {
        ApiError::invalid(
            "signature",
            "must be an Ed25519 signature: 64 bytes in base64url without padding",
        )
    })?;
    #[derive(Deserialize)]
    struct Row {
        org_id: String,
        public_key: String,
    }
    let host: Row = db
        .query_one(
            "SELECT org_id, public_key FROM hosts WHERE id = ? AND revoked_at IS NULL",
            &[host_id.into()],
        )
        .await?
        .ok_or_else(|| refused("unauthorized", "unknown or revoked host"))?;
    if !cred::verify_signature(&host.public_key, host_id, &input.nonce, &signature) {
        return Err(refused(
            "invalid_signature",
            "the signature does not verify with this host's key",
        ));
    }
    let used = db
        .execute(
            "UPDATE host_nonces SET used_at = ?
             WHERE nonce = ? AND host_id = ? AND used_at IS NULL AND expires_at > ?
             AND EXISTS (SELECT 1 FROM hosts WHERE id = ? AND revoked_at IS NULL)",
            &[
                now.into(),
                input.nonce.clone().into(),
                host_id.into(),
                now.into(),
                host_id.into(),
            ],
        )
        .await?;
    if used != 1 {
        return Err(refused(
            "invalid_nonce",
            "unknown, expired or already used nonce; ask for a new one",
        ));
    }
    Ok(HostPrincipal {
        host_id: host_id.to_owned(),
        org_id: host.org_id,
    })
}

/// Drops expired pairing codes, used or expired nonces and approval attempts past their
/// window (the cron; the routes also purge what they touch). Answers the rows removed.
pub async fn purge_expired(db: &impl Db, now: i64) -> Result<u64, ApiError> {
    let removed = db
        .batch(&[
            (
                "DELETE FROM pairing_codes WHERE expires_at <= ?",
                vec![now.into()],
            ),
            (
                "DELETE FROM host_nonces WHERE expires_at <= ? OR used_at IS NOT NULL",
                vec![now.into()],
            ),
            (
                "DELETE FROM pairing_attempts WHERE at <= ?",
                vec![(now - FAILED_APPROVAL_WINDOW_MS).into()],
            ),
        ])
        .await?;
    Ok(removed.iter().sum())
}

/// Revoked hosts are kept for a while so lists can show them, then purged (the cron).
pub async fn purge_revoked_hosts(db: &impl Db, older_than: i64) -> Result<u64, ApiError> {
    Ok(db
        .execute(
            "DELETE FROM hosts WHERE revoked_at IS NOT NULL AND revoked_at < ?",
            &[older_than.into()],
        )
        .await?)
}
