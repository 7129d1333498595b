//! The org's policies on this machine: listed (`GET /v1/policies`) and downloaded
//! (`GET /v1/policies/{name}/wasm?sha256=`) with the host token, checked against their SHA-256,
//! and kept in `<state>/policies/` as `<sha256>.wasm` files plus a manifest (`org.json`), so
//! the machine enforces them offline and across restarts.
//!
//! A binary whose SHA-256 is not the listed one is refused: it is not written, so the policy
//! cannot load, and if it fails closed every prompt and tool call is denied until a sync gets
//! the right one. Loading checks the SHA-256 again, so a cached file changed on disk is refused
//! too.

use crate::files::{Existing, write_private};
use crate::host_auth::HostAuth;
use crate::policy::PolicySource;
use sha2::{Digest, Sha256};
use std::path::Path;
use tether_durable::policy::{
    MAX_POLICIES, MAX_POLICY_BYTES, PolicyList, PolicyMeta, valid_name, valid_sha256,
};
use tracing::{error, warn};

/// The manifest's file name in the policies folder.
pub const MANIFEST: &str = "org.json";

/// Why a sync did not complete (the cached set stays in force).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Token(#[from] crate::host_auth::TokenError),
    #[error("the server: {0}")]
    Http(String),
    #[error("the policy list is not usable: {0}")]
    Listing(String),
    #[error("{0}")]
    Io(#[from] crate::Error),
}

/// The org's policies as the manifest lists them, in order (none when there is no manifest).
pub fn cached(dir: &Path) -> Vec<PolicyMeta> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            error!(path = %path.display(), error = %e, "the org policy manifest is unreadable");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// The cached org policies as sources to load, pinned by their SHA-256.
pub fn cached_sources(dir: &Path) -> Vec<PolicySource> {
    cached(dir)
        .into_iter()
        .map(|p| PolicySource {
            origin: format!("org:{}", p.name),
            path: dir.join(format!("{}.wasm", p.sha256)),
            config: serde_json::Value::Object(p.config).to_string(),
            failure: p.failure,
            sha256: Some(p.sha256),
        })
        .collect()
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Brings the cache in line with the org's list. Answers whether the manifest changed.
///
/// With `verify`, cached binaries are hashed again and one changed on disk is fetched anew (the
/// daemon asks for it only while a policy fails to load); otherwise a cached one is trusted
/// here, since loading checks its SHA-256 anyway.
pub async fn sync(
    http: &reqwest::Client,
    auth: &HostAuth,
    dir: &Path,
    verify: bool,
) -> Result<bool, SyncError> {
    let listing: PolicyList = serde_json::from_slice(&get(http, auth, "/v1/policies").await?)
        .map_err(|e| SyncError::Listing(e.to_string()))?;
    let list = listing.policies;
    if i64::try_from(list.len()).map_or(true, |n| n > MAX_POLICIES) {
        return Err(SyncError::Listing(format!("{} policies", list.len())));
    }
    // Names go into URLs and digests into file names: checked first.
    if let Some(bad) = list
        .iter()
        .find(|p| !valid_name(&p.name) || !valid_sha256(&p.sha256))
    {
        return Err(SyncError::Listing(format!("a policy named {:?}", bad.name)));
    }
    for p in &list {
        let file = dir.join(format!("{}.wasm", p.sha256));
        let cached = if verify {
            std::fs::read(&file).is_ok_and(|b| sha256_hex(&b) == p.sha256)
        } else {
            file.exists()
        };
        if cached {
            continue;
        }
        let path = format!("/v1/policies/{}/wasm?sha256={}", p.name, p.sha256);
        let bytes = get(http, auth, &path).await?;
        let found = sha256_hex(&bytes);
        if found == p.sha256 {
            write_private(&file, &bytes, Existing::Replace)?;
        } else {
            error!(
                policy = %p.name, expected = %p.sha256, %found,
                "the org policy's binary does not have the listed SHA-256: refused"
            );
        }
    }
    let changed = cached(dir) != list;
    if changed {
        let manifest =
            serde_json::to_vec_pretty(&list).map_err(|e| SyncError::Listing(e.to_string()))?;
        write_private(&dir.join(MANIFEST), &manifest, Existing::Replace)?;
    }
    remove_unlisted(dir, &list);
    Ok(changed)
}

/// Deletes cached binaries the list no longer has.
fn remove_unlisted(dir: &Path, list: &[PolicyMeta]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(sha) = name.strip_suffix(".wasm") else {
            continue;
        };
        if valid_sha256(sha)
            && !list.iter().any(|p| p.sha256 == sha)
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            warn!(file = %name, error = %e, "removing an old org policy failed");
        }
    }
}

async fn get(http: &reqwest::Client, auth: &HostAuth, path: &str) -> Result<Vec<u8>, SyncError> {
    let token = auth.token().await?;
    let res = http
        .get(format!("{}{path}", auth.server))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| SyncError::Http(e.to_string()))?;
    let status = res.status().as_u16();
    if status == 401 {
        auth.invalidate();
    }
    if status != 200 {
        let body = res.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        return Err(SyncError::Http(format!("GET {path}: HTTP {status} {body}")));
    }
    if res
        .content_length()
        .is_some_and(|n| n > MAX_POLICY_BYTES as u64)
    {
        return Err(SyncError::Http(format!(
            "GET {path}: over {MAX_POLICY_BYTES} bytes"
        )));
    }
    let bytes = res
        .bytes()
        .await
        .map_err(|e| SyncError::Http(e.to_string()))?;
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(SyncError::Http(format!(
            "GET {path}: over {MAX_POLICY_BYTES} bytes"
        )));
    }
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    use crate::policy::FailureMode;

    fn meta(name: &str, sha: &str, config: serde_json::Value, failure: FailureMode) -> PolicyMeta {
        PolicyMeta {
            name: name.into(),
            sha256: sha.repeat(64),
            size: 1,
            config: serde_json::from_value(config).unwrap(),
            failure,
            position: 0,
            created_by: "mem_1".into(),
            created_at: "2026-11-22T00:00:00Z".into(),
            updated_at: "2026-11-22T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_manifest_becomes_pinned_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(cached_sources(dir.path()).is_empty());
        let list = vec![
            meta(
                "secrets",
                "a",
                serde_json::json!({"mode": "redact"}),
                FailureMode::Deny,
            ),
            meta("commands", "b", serde_json::json!({}), FailureMode::Allow),
        ];
        std::fs::write(
            dir.path().join(MANIFEST),
            serde_json::to_vec(&list).unwrap(),
        )
        .unwrap();
        let sources = cached_sources(dir.path());
        assert_eq!(
            sources
                .iter()
                .map(|s| (s.origin.as_str(), s.config.as_str(), s.failure))
                .collect::<Vec<_>>(),
            [
                ("org:secrets", r#"{"mode":"redact"}"#, FailureMode::Deny),
                ("org:commands", "{}", FailureMode::Allow)
            ]
        );
        assert_eq!(sources[0].sha256.as_deref(), Some("a".repeat(64).as_str()));
        assert!(
            sources[1]
                .path
                .ends_with(format!("{}.wasm", "b".repeat(64)))
        );

        // Binaries the list no longer has are removed; others stay.
        for sha in ["a", "b", "c"] {
            std::fs::write(dir.path().join(format!("{}.wasm", sha.repeat(64))), b"x").unwrap();
        }
        remove_unlisted(dir.path(), &list);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("{}.wasm", "a".repeat(64)),
                format!("{}.wasm", "b".repeat(64)),
                MANIFEST.to_owned()
            ]
        );
    }

    #[test]
    fn digests_are_lowercase_hex() {
        assert!(valid_sha256(&sha256_hex(b"policy")));
    }
}
