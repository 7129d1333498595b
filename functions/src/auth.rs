//! Credentials: API keys (`tk_...`, stored only as SHA-256) and the short-lived JWTs they are
//! exchanged for; machines' credentials (pairing, signed nonces, host tokens) in [`host`].

pub mod host;

use crate::backend::Config;
use crate::error::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use host::{HostPrincipal, verify_host_token};

pub const KEY_PREFIX: &str = "tk_";
pub const ISSUER: &str = "tether";
pub const AUDIENCE: &str = "tether-api";
/// How much of a key is kept in clear to tell keys apart in lists (`tk_` + 8 characters).
const DISPLAY_LEN: usize = KEY_PREFIX.len() + 8;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }
}

/// Who is calling, resolved from a key or a token. Everything a handler does is scoped to
/// `org_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub org_id: String,
    pub member_id: String,
    pub user_id: String,
    pub role: Role,
    /// The API key used, directly or through the token it minted.
    pub key_id: String,
    pub credential: Credential,
}

/// What the request carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    /// The API key itself; its lookup also yields the org's task prefix.
    ApiKey { task_prefix: String },
    /// A token minted from a key.
    Token,
}

impl Principal {
    /// One of the org's machines acting through its host token (the daemon's local MCP server
    /// for its agents): a member's rights, never an admin's, recorded as the host itself.
    pub fn for_host(host: &HostPrincipal) -> Self {
        Self {
            org_id: host.org_id.clone(),
            member_id: host.host_id.clone(),
            user_id: String::new(),
            role: Role::Member,
            key_id: host.host_id.clone(),
            credential: Credential::Token,
        }
    }

    /// Whether this is one of the org's machines acting through [`Principal::for_host`].
    pub fn is_host(&self) -> bool {
        tether_durable::ids::is_valid(tether_durable::ids::HOST, &self.member_id)
    }

    /// 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role",
                role.as_str()
            )))
        }
    }

    /// 403 unless the caller may manage someone holding `role`: admins manage members and
    /// admins; only owners manage owners.
    pub fn require_over(&self, role: Role) -> Result<(), ApiError> {
        self.require(role.max(Role::Admin))
    }
}

/// A freshly generated API key. `secret` is shown once and never stored.
pub struct NewKey {
    pub secret: String,
    pub display_prefix: String,
    pub hash: String,
}

pub fn generate_key() -> Result<NewKey, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
    let secret = format!("{KEY_PREFIX}{}", bs58::encode(bytes).into_string());
    let display_prefix = secret.chars().take(DISPLAY_LEN).collect();
    let hash = hash_key(&secret);
    Ok(NewKey {
        secret,
        display_prefix,
        hash,
    })
}

/// Lower-case hex SHA-256 of the whole key.
pub fn hash_key(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// The cheap shape check done before any lookup: `tk_` and 40 to 48 base58 characters.
pub fn looks_like_key(s: &str) -> bool {
    s.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        (40..=48).contains(&rest.len())
            && bs58::decode(rest).into_vec().is_ok_and(|b| b.len() == 32)
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The member id.
    pub sub: String,
    pub org: String,
    pub uid: String,
    pub role: Role,
    /// The API key this token was minted from.
    pub kid: String,
    pub iat: i64,
    pub exp: i64,
}

pub fn issue_token(
    config: &Config,
    p: &Principal,
    now_secs: i64,
) -> Result<(String, i64), ApiError> {
    let exp = now_secs + config.token_ttl_secs;
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: p.member_id.clone(),
        org: p.org_id.clone(),
        uid: p.user_id.clone(),
        role: p.role,
        kid: p.key_id.clone(),
        iat: now_secs,
        exp,
    };
    Ok((sign(config, &claims)?, exp))
}

/// Signs `claims` as an HS256 JWT with the server's secret.
pub(crate) fn sign(config: &Config, claims: &impl Serialize) -> Result<String, ApiError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(&config.jwt_secret),
    )
    .map_err(|e| ApiError::internal(&e))
}

/// Verifies an HS256 JWT for one of `audiences`: signature, expiry (30 s leeway), issuer and
/// audience, all required; answers its claims. `what` names the token in the 401.
pub(crate) fn verify<C: DeserializeOwned>(
    config: &Config,
    token: &str,
    audiences: &[&str],
    what: &str,
) -> Result<C, ApiError> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_audience(audiences);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = 30;
    jsonwebtoken::decode::<C>(token, &DecodingKey::from_secret(&config.jwt_secret), &v)
        .map(|d| d.claims)
        .map_err(|e| ApiError::unauthorized(format!("invalid {what}: {e}")))
}

/// A token of either kind, for the routes both members and hosts use (the streams).
#[derive(Debug, Clone)]
pub enum Bearer {
    Member(Principal),
    Host(HostPrincipal),
}

impl Bearer {
    /// The key its request budget is charged to.
    pub fn rate_key(&self) -> &str {
        match self {
            Self::Member(p) => &p.key_id,
            Self::Host(h) => &h.host_id,
        }
    }

    /// The org it acts in.
    pub fn org_id(&self) -> &str {
        match self {
            Self::Member(p) => &p.org_id,
            Self::Host(h) => &h.org_id,
        }
    }

    /// Who acts: the member's id or the host's.
    pub fn actor(&self) -> &str {
        match self {
            Self::Member(p) => &p.member_id,
            Self::Host(h) => &h.host_id,
        }
    }
}

/// The claims of either token: the member-only ones are absent from host tokens.
#[derive(Deserialize)]
struct AnyClaims {
    aud: String,
    sub: String,
    org: String,
    uid: Option<String>,
    role: Option<Role>,
    kid: Option<String>,
}

/// Verifies a member token or a host token with one signature check, and says which it is.
pub fn verify_bearer(config: &Config, token: &str) -> Result<Bearer, ApiError> {
    let c: AnyClaims = verify(config, token, &[AUDIENCE, host::HOST_AUDIENCE], "token")?;
    if c.aud == host::HOST_AUDIENCE {
        return host::host_principal(c.sub, c.org).map(Bearer::Host);
    }
    match (c.uid, c.role, c.kid) {
        (Some(user_id), Some(role), Some(key_id)) => Ok(Bearer::Member(Principal {
            org_id: c.org,
            member_id: c.sub,
            user_id,
            role,
            key_id,
            credential: Credential::Token,
        })),
        _ => Err(ApiError::unauthorized("invalid token: missing claims")),
    }
}

/// Verifies signature (HS256 only), expiry, issuer and audience.
pub fn verify_token(config: &Config, token: &str) -> Result<Principal, ApiError> {
    let c: Claims = verify(config, token, &[AUDIENCE], "token")?;
    Ok(Principal {
        org_id: c.org,
        member_id: c.sub,
        user_id: c.uid,
        role: c.role,
        key_id: c.kid,
        credential: Credential::Token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    fn config() -> Config {
        Config {
            jwt_secret: vec![7; 32],
            bootstrap_token: None,
            token_ttl_secs: 900,
        }
    }

    #[test]
    fn one_verification_tells_member_and_host_tokens_apart() {
        let c = config();
        let (member, _) = issue_token(&c, &principal(), now()).unwrap();
        assert!(matches!(verify_bearer(&c, &member), Ok(Bearer::Member(m)) if m.key_id == "key_1"));
        let host = HostPrincipal {
            host_id: tether_durable::ids::new(host::HOST_ID),
            org_id: "org_a".into(),
        };
        let (token, _) = host::issue_host_token(&c, &host, now()).unwrap();
        assert!(matches!(verify_bearer(&c, &token), Ok(Bearer::Host(h)) if h == host));
        for bad in ["", "x.y.z", &format!("{member}x")] {
            assert_eq!(
                verify_bearer(&c, bad).unwrap_err().status.as_u16(),
                401,
                "{bad}"
            );
        }
    }

    fn principal() -> Principal {
        Principal {
            org_id: "org_1".into(),
            member_id: "mem_1".into(),
            user_id: "usr_1".into(),
            role: Role::Admin,
            key_id: "key_1".into(),
            credential: Credential::ApiKey {
                task_prefix: "TET".into(),
            },
        }
    }

    fn now() -> i64 {
        tether_durable::time::now_ms() / 1000
    }

    #[test]
    fn keys_are_256_bit_base58_and_hashed() {
        let k = generate_key().unwrap();
        assert!(looks_like_key(&k.secret), "{}", k.secret);
        assert!(k.secret.starts_with(&k.display_prefix));
        assert_eq!(k.hash.len(), 64);
        assert_ne!(generate_key().unwrap().secret, k.secret);
        assert!(!looks_like_key("tk_short"));
        assert!(!looks_like_key(&k.secret.replace("tk_", "tx_")));
        assert!(
            !looks_like_key(&format!("{}0", k.secret)),
            "0 is not base58"
        );
    }

    #[test]
    fn tokens_round_trip() {
        let (t, exp) = issue_token(&config(), &principal(), now()).unwrap();
        assert!(exp > now());
        let p = verify_token(&config(), &t).unwrap();
        assert_eq!(
            p,
            Principal {
                credential: Credential::Token,
                ..principal()
            }
        );
    }

    fn forge(
        header: &serde_json::Value,
        claims: &serde_json::Value,
        key: &[u8],
        alg: Algorithm,
    ) -> String {
        let h = B64.encode(serde_json::to_vec(header).unwrap());
        let c = B64.encode(serde_json::to_vec(claims).unwrap());
        let msg = format!("{h}.{c}");
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &EncodingKey::from_secret(key), alg)
            .unwrap();
        format!("{msg}.{sig}")
    }

    #[test]
    fn bad_tokens_are_rejected() {
        let cfg = config();
        let good = serde_json::to_value(Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "mem_1".into(),
            org: "org_1".into(),
            uid: "usr_1".into(),
            role: Role::Owner,
            kid: "key_1".into(),
            iat: now(),
            exp: now() + 60,
        })
        .unwrap();
        let hs256 = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        assert!(
            verify_token(
                &cfg,
                &forge(&hs256, &good, &cfg.jwt_secret, Algorithm::HS256)
            )
            .is_ok()
        );

        let mut expired = good.clone();
        expired["exp"] = (now() - 3600).into();
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = "someone-else".into();
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        for (name, token) in [
            (
                "expired",
                forge(&hs256, &expired, &cfg.jwt_secret, Algorithm::HS256),
            ),
            (
                "wrong audience",
                forge(&hs256, &wrong_aud, &cfg.jwt_secret, Algorithm::HS256),
            ),
            (
                "no exp",
                forge(&hs256, &no_exp, &cfg.jwt_secret, Algorithm::HS256),
            ),
            (
                "wrong key",
                forge(&hs256, &good, &[8; 32], Algorithm::HS256),
            ),
            (
                "wrong algorithm",
                forge(
                    &serde_json::json!({"alg": "HS512"}),
                    &good,
                    &cfg.jwt_secret,
                    Algorithm::HS512,
                ),
            ),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    B64.encode(br#"{"alg":"none"}"#),
                    B64.encode(good.to_string())
                ),
            ),
            ("garbage", "not.a.token".into()),
        ] {
            let e = verify_token(&cfg, &token).unwrap_err();
            assert_eq!(e.status.as_u16(), 401, "{name}");
        }
        // Tampered: a valid token with its payload swapped for an owner's.
        let (t, _) = issue_token(
            &cfg,
            &Principal {
                role: Role::Member,
                ..principal()
            },
            now(),
        )
        .unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        claims["role"] = "owner".into();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(
            verify_token(&cfg, &tampered).unwrap_err().status.as_u16(),
            401
        );
    }
}
