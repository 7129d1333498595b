//! API keys, tokens, bootstrap and "every route needs auth".

use crate::{fresh_org, shared};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tether_tests::Api;

#[tokio::test]
async fn every_route_but_health_version_and_openapi_needs_auth() {
    let s = shared().await;
    let anon = Api::anonymous(&s.worker.url);
    let (status, doc) = anon.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let public = ["/health", "/version", "/v1/openapi.json"];
    let machine_routes = [
        "/v1/pairing",
        "/v1/hosts/{id}/nonce",
        "/v1/hosts/{id}/token",
    ];
    let paths = doc["paths"].as_object().unwrap();
    let operations: usize = paths
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert!(
        operations >= 30,
        "the document lists the whole API, {operations} operations"
    );
    for (path, ops) in paths {
        let concrete = path
            .replace("{id_or_slug}", "TET-1")
            .replace("{code}", "ABCD-EFGH")
            .replace("{provider}", "github")
            .replace("{id}", "tsk_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d");
        for method in ops.as_object().unwrap().keys() {
            let (status, body) = anon
                .call(&method.to_uppercase(), &concrete, Some(json!({})))
                .await;
            if public.contains(&path.as_str()) {
                assert_eq!(status, 200, "{method} {path}");
            } else if machine_routes.contains(&path.as_str()) {
                // A machine pairing or connecting has no member credential: it proves itself
                // with its key later (a signed nonce). Asked with nothing, they refuse.
                assert!(
                    [400, 401, 404, 422].contains(&status),
                    "{method} {path}: {status} {body}"
                );
            } else if path.starts_with("/webhooks/") {
                // A provider's delivery proves itself with the webhook's signature; for a
                // webhook that does not exist there is nothing to check it against.
                assert!(
                    [401, 404].contains(&status),
                    "{method} {path}: {status} {body}"
                );
            } else if path == "/v1/bootstrap" {
                // Authenticated by the bootstrap token instead; already used on this Worker.
                assert!(
                    status == 401 || status == 409,
                    "{method} {path}: {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 401,
                    "{method} {path} answered {status} without credentials: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn keys_tokens_and_revocation() {
    let (url, key) = fresh_org("Ident", "IDN").await;
    let api = Api::new(&url, &key);
    let (s, t) = api.post("/v1/auth/token", json!({})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_i64().unwrap() <= 900);
    let token = api.with(t["token"].as_str().unwrap());
    let (s, me) = token.get("/v1/me").await;
    assert_eq!((s, me["auth"].as_str()), (200, Some("token")));
    assert_eq!(
        token.post("/v1/auth/token", json!({})).await.0,
        401,
        "tokens cannot mint tokens"
    );

    let (s, k2) = api.post("/v1/api-keys", json!({"name": "laptop"})).await;
    assert_eq!(s, 201);
    let secret = k2["secret"].as_str().unwrap();
    assert!(secret.starts_with("tk_") && secret.len() > 40);
    let second = api.with(secret);
    assert_eq!(second.get("/v1/me").await.0, 200);
    let (_, listed) = api.get("/v1/api-keys").await;
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == k2["id"])
        .unwrap()
        .clone();
    assert!(row.get("secret").is_none(), "listing never shows secrets");
    assert_eq!(row["prefix"].as_str().unwrap(), &secret[..11]);
    assert!(
        row["last_used_at"].is_string(),
        "last use is recorded: {row}"
    );
    assert_eq!(
        api.delete(&format!("/v1/api-keys/{}", k2["id"].as_str().unwrap()))
            .await
            .0,
        204
    );
    assert_eq!(second.get("/v1/me").await.0, 401);
    assert!(
        api.get(&format!("/v1/api-keys/{}", k2["id"].as_str().unwrap()))
            .await
            .1["revoked_at"]
            .is_string()
    );
}

fn claims(org: &str, member: &str, exp_offset: i64, aud: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    json!({"iss": "tether", "aud": aud, "sub": member, "org": org, "uid": "usr_x", "role": "owner",
           "kid": "key_x", "iat": now, "exp": now + exp_offset})
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_rejected() {
    let s = shared().await;
    let (url, key) = fresh_org("Forge", "FRG").await;
    let (_, me) = Api::new(&url, &key).get("/v1/me").await;
    let (org, member) = (
        me["org"]["id"].as_str().unwrap(),
        me["member_id"].as_str().unwrap(),
    );
    let secret = EncodingKey::from_secret(s.worker.jwt_secret.as_bytes());
    let sign = |alg: Algorithm, c: &Value, k: &EncodingKey| {
        jsonwebtoken::encode(&Header::new(alg), c, k).unwrap()
    };

    let good = sign(
        Algorithm::HS256,
        &claims(org, member, 300, "tether-api"),
        &secret,
    );
    assert_eq!(
        Api::new(&url, &good).get("/v1/me").await.0,
        200,
        "a well-formed token works"
    );

    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut c: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        c["org"] = "org_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d".into();
        format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2])
    };
    let cases = [
        (
            "expired",
            sign(
                Algorithm::HS256,
                &claims(org, member, -3600, "tether-api"),
                &secret,
            ),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::HS256,
                &claims(org, member, 300, "other"),
                &secret,
            ),
        ),
        (
            "wrong algorithm",
            sign(
                Algorithm::HS512,
                &claims(org, member, 300, "tether-api"),
                &secret,
            ),
        ),
        (
            "wrong key",
            sign(
                Algorithm::HS256,
                &claims(org, member, 300, "tether-api"),
                &EncodingKey::from_secret(&[9; 32]),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
                B64.encode(claims(org, member, 300, "tether-api").to_string())
            ),
        ),
        ("tampered", tampered),
    ];
    for (name, token) in cases {
        let (status, body) = Api::new(&url, &token).get("/v1/me").await;
        assert_eq!(status, 401, "{name}: {body}");
    }
}

#[tokio::test]
async fn bootstrap_is_guarded_and_happens_once() {
    let s = shared().await;
    let anon = Api::anonymous(&s.worker.url);
    let body = json!({"org_name": "Again", "email": "x@y.dev", "name": "X"});
    assert_eq!(anon.post("/v1/bootstrap", body.clone()).await.0, 401);
    assert_eq!(
        anon.with("not-the-token")
            .post("/v1/bootstrap", body.clone())
            .await
            .0,
        401
    );
    let (status, e) = anon
        .with(&s.worker.bootstrap_token)
        .post("/v1/bootstrap", body)
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("already_bootstrapped"))
    );
}
