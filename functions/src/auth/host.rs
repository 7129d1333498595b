//! Machine credentials: pairing codes and poll tokens, the Ed25519 proof a host gives to
//! connect, and the host JWTs that proof is exchanged for.
//!
//! A host token is an HS256 JWT signed with the same secret as member tokens but for its own
//! audience (`tether-host`), so a host token is refused by the member API and a member token
//! by [`verify_host_token`].

use super::{ISSUER, hash_key};
use crate::backend::Config;
use crate::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The id prefix of hosts (`hst_0190...`).
pub const HOST_ID: &str = "hst";
pub const HOST_AUDIENCE: &str = "tether-host";
/// Lifetime of a host token; the daemon gets a new one (new nonce, new signature) before then.
pub const HOST_TOKEN_TTL_SECS: i64 = 900;
/// The first line of every signed connect challenge; a new version gets a new tag.
pub const SIGNATURE_CONTEXT: &str = "tether-host-auth:v1";

/// Pairing code characters: digits and upper-case letters without 0, O, 1, I and L, so a code
/// read aloud or off a screen is typed right.
pub const CODE_ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
pub const CODE_LEN: usize = 8;

fn random<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
    Ok(bytes)
}

/// A fresh pairing code, as stored: [`CODE_LEN`] characters of [`CODE_ALPHABET`], no dash.
pub fn generate_code() -> Result<String, ApiError> {
    // Rejection sampling keeps every character equally likely: 248 = 8 * 31.
    const LIMIT: u8 = (256 - 256 % CODE_ALPHABET.len()) as u8;
    let mut code = String::with_capacity(CODE_LEN);
    while code.len() < CODE_LEN {
        for b in random::<16>()? {
            if b < LIMIT
                && code.len() < CODE_LEN
                && let Some(c) = CODE_ALPHABET.get(usize::from(b) % CODE_ALPHABET.len())
            {
                code.push(char::from(*c));
            }
        }
    }
    Ok(code)
}

/// A stored code as people see it: `ABCD-EFGH`.
pub fn display_code(code: &str) -> String {
    match (code.get(..CODE_LEN / 2), code.get(CODE_LEN / 2..)) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => code.to_owned(),
    }
}

/// A code as typed - any case, with or without the dash (or spaces) - in its stored form;
/// `None` when it cannot be a code.
pub fn normalize_code(input: &str) -> Option<String> {
    if input.len() > 2 * CODE_LEN {
        return None;
    }
    let code: String = input
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(code)
}

/// 32 random bytes in base64url without padding (43 characters): poll tokens and nonces.
pub fn random_token() -> Result<String, ApiError> {
    Ok(B64.encode(random::<32>()?))
}

/// True when the hash of `secret` is `hash` (lower-case hex SHA-256), in constant time.
pub fn secret_matches(secret: &str, hash: &str) -> bool {
    hash_key(secret).as_bytes().ct_eq(hash.as_bytes()).into()
}

/// Decodes base64url (no padding) of exactly `N` bytes.
pub fn decode_fixed<const N: usize>(value: &str) -> Option<[u8; N]> {
    // Anything longer cannot decode to N bytes; refuse before allocating.
    if value.len() > N.div_ceil(3) * 4 {
        return None;
    }
    B64.decode(value).ok()?.try_into().ok()
}

/// Checks a host's public key (base64url of a 32-byte Ed25519 key that is a valid, non-weak
/// point) and answers its canonical spelling.
pub fn public_key(field: &str, value: &str) -> Result<String, ApiError> {
    let key = decode_fixed::<32>(value.trim())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .filter(|k| !k.is_weak())
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                "must be an Ed25519 public key: 32 bytes in base64url without padding",
            )
        })?;
    Ok(B64.encode(key.as_bytes()))
}

/// The bytes a host signs to answer `nonce` (as issued, base64url):
/// `tether-host-auth:v1\n{host_id}\n{nonce}`. Naming the host keeps a signature from being
/// replayed for another host that shares the key.
pub fn signed_message(host_id: &str, nonce: &str) -> Vec<u8> {
    format!("{SIGNATURE_CONTEXT}\n{host_id}\n{nonce}").into_bytes()
}

/// Verifies a host's signature over [`signed_message`] with its registered key (strict:
/// non-canonical signatures and weak keys fail).
pub fn verify_signature(
    public_key: &str,
    host_id: &str,
    nonce: &str,
    signature: &[u8; 64],
) -> bool {
    decode_fixed::<32>(public_key)
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .is_some_and(|k| {
            k.verify_strict(
                &signed_message(host_id, nonce),
                &Signature::from_bytes(signature),
            )
            .is_ok()
        })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostClaims {
    pub iss: String,
    pub aud: String,
    /// The host id.
    pub sub: String,
    pub org: String,
    pub iat: i64,
    pub exp: i64,
}

/// A machine, resolved from a host token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPrincipal {
    pub host_id: String,
    pub org_id: String,
}

pub fn issue_host_token(
    config: &Config,
    host: &HostPrincipal,
    now_secs: i64,
) -> Result<(String, i64), ApiError> {
    let exp = now_secs + HOST_TOKEN_TTL_SECS;
    let claims = HostClaims {
        iss: ISSUER.into(),
        aud: HOST_AUDIENCE.into(),
        sub: host.host_id.clone(),
        org: host.org_id.clone(),
        iat: now_secs,
        exp,
    };
    Ok((super::sign(config, &claims)?, exp))
}

/// Verifies a host token: signature (HS256 only), expiry, issuer and the host audience. Says
/// nothing about revocation since it was issued: [`crate::api::identify_host`] also checks
/// the directory.
pub fn verify_host_token(config: &Config, token: &str) -> Result<HostPrincipal, ApiError> {
    let c: HostClaims = super::verify(config, token, &[HOST_AUDIENCE], "host token")?;
    host_principal(c.sub, c.org)
}

/// The host named by a verified host token's subject.
pub(super) fn host_principal(sub: String, org: String) -> Result<HostPrincipal, ApiError> {
    if !tether_durable::ids::is_valid(HOST_ID, &sub) {
        return Err(ApiError::unauthorized("invalid host token: not a host"));
    }
    Ok(HostPrincipal {
        host_id: sub,
        org_id: org,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn config() -> Config {
        Config {
            jwt_secret: vec![7; 32],
            bootstrap_token: None,
            token_ttl_secs: 900,
        }
    }

    #[test]
    fn codes_use_the_unambiguous_alphabet_and_normalise() {
        for _ in 0..200 {
            let c = generate_code().unwrap();
            assert_eq!(c.len(), CODE_LEN);
            assert!(!c.contains(['0', 'O', '1', 'I', 'L']), "{c}");
            assert_eq!(normalize_code(&c).as_deref(), Some(c.as_str()));
            let shown = display_code(&c);
            assert_eq!(shown.len(), CODE_LEN + 1);
            assert_eq!(normalize_code(&shown.to_lowercase()), Some(c));
        }
        assert_eq!(normalize_code(" abcd-efgh ").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize_code("ABCD EFGH").as_deref(), Some("ABCDEFGH"));
        for bad in [
            "",
            "ABCD-EFG",
            "ABCD-EFGHJ",
            "ABCD-EFG0",
            "OBCD-EFGH",
            "ÄBCD-EFGH",
            "x".repeat(100).as_str(),
        ] {
            assert_eq!(normalize_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn codes_cover_the_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            seen.extend(generate_code().unwrap().into_bytes());
        }
        assert_eq!(seen.len(), CODE_ALPHABET.len());
    }

    #[test]
    fn public_keys_must_be_valid_strong_points() {
        let k = SigningKey::from_bytes(&[5; 32]).verifying_key();
        let b64 = B64.encode(k.as_bytes());
        assert_eq!(public_key("public_key", &b64).unwrap(), b64);
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for bad in [
            String::new(),
            "not base64!".into(),
            B64.encode([1u8; 31]),
            B64.encode([1u8; 33]),
            format!("{b64}="),
            B64.encode(identity),
        ] {
            let e = public_key("public_key", &bad).unwrap_err();
            assert_eq!(e.status.as_u16(), 422, "{bad}");
        }
    }

    #[test]
    fn signatures_bind_host_and_nonce() {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let pk = B64.encode(sk.verifying_key().as_bytes());
        let sig = sk.sign(&signed_message("hst_a", "n1")).to_bytes();
        assert!(verify_signature(&pk, "hst_a", "n1", &sig));
        assert!(!verify_signature(&pk, "hst_b", "n1", &sig));
        assert!(!verify_signature(&pk, "hst_a", "n2", &sig));
        let other = B64.encode(SigningKey::from_bytes(&[8; 32]).verifying_key().as_bytes());
        assert!(!verify_signature(&other, "hst_a", "n1", &sig));
    }

    #[test]
    fn host_tokens_are_their_own_audience() {
        let cfg = config();
        let host = HostPrincipal {
            host_id: tether_durable::ids::new(HOST_ID),
            org_id: "org_1".into(),
        };
        let now = tether_durable::time::now_ms() / 1000;
        let (t, exp) = issue_host_token(&cfg, &host, now).unwrap();
        assert_eq!(exp, now + HOST_TOKEN_TTL_SECS);
        assert_eq!(verify_host_token(&cfg, &t).unwrap(), host);
        assert_eq!(
            super::super::verify_token(&cfg, &t)
                .unwrap_err()
                .status
                .as_u16(),
            401
        );
        let (expired, _) = issue_host_token(&cfg, &host, now - 3600).unwrap();
        assert_eq!(
            verify_host_token(&cfg, &expired)
                .unwrap_err()
                .status
                .as_u16(),
            401
        );
        let other = Config {
            jwt_secret: vec![8; 32],
            ..cfg
        };
        assert_eq!(
            verify_host_token(&other, &t).unwrap_err().status.as_u16(),
            401
        );
    }
}
