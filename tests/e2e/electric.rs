//! The org's shapes synced by the official Electric client (`@electric-sql/client`: ShapeStream
//! and Shape, tests/conformance/electric-client.mjs) from the Worker in workerd: the initial
//! sync, a live insert, update and delete made through the REST API, a filtered shape, and the
//! recovery from a 409 forced by compacting the change log while the stream was stopped; and
//! the hosts shape, mirrored from the directory, read with a machine's own host token and
//! followed live by a member.

use crate::fresh_org;
use crate::streams_js::NodeScript;
use serde_json::{Value, json};
use tether::identity::Identity;
use tether_tests::Api;

#[tokio::test]
async fn the_official_electric_client_syncs_goes_live_and_recovers_from_a_409() {
    let (url, key) = fresh_org("Electric client", "ELC").await;
    let (ok, printed) =
        NodeScript::start("tests/conformance/electric-client.mjs", &url, &key).finish();
    assert!(
        ok && printed.lines().any(|l| l == "ELECTRIC_CLIENT ok"),
        "electric-client.mjs failed (see the output above)"
    );
    let seen: Value = printed
        .lines()
        .find_map(|l| l.strip_prefix("ELECTRIC_CLIENT {"))
        .map(|rest| serde_json::from_str(&format!("{{{rest}")).unwrap())
        .unwrap_or_else(|| panic!("no ELECTRIC_CLIENT line in the output"));
    assert_eq!(seen["initial_rows"], 3);
    assert_eq!(
        seen["live_ops"],
        serde_json::json!(["insert", "update", "delete"])
    );
    let requests = seen["resumed_requests"].as_array().unwrap();
    assert!(
        requests[0].as_str().unwrap().starts_with("409 "),
        "{requests:?}"
    );
    // alpha deleted live, beta while away; gamma, the live one and the one made while away.
    assert_eq!(seen["final_rows"], 3);
}

/// One shape request: (status, offset, handle, body).
async fn read_shape(api: &Api, path: &str) -> (u16, String, String, Value) {
    let res = api.request("GET", path).send().await.unwrap();
    let status = res.status().as_u16();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (offset, handle) = (header("electric-offset"), header("electric-handle"));
    (status, offset, handle, res.json().await.unwrap())
}

#[tokio::test]
async fn hosts_sync_from_the_directory_to_members_and_machines() {
    let (url, key) = fresh_org("Electric hosts", "ELH").await;
    let api = Api::new(&url, &key);
    let (_, me) = api.get("/v1/me").await;
    let org = me["org"]["id"].as_str().unwrap().to_owned();

    // A machine pairs over REST with a real key, and connects for a host token.
    let id = Identity::generate().unwrap();
    let anon = Api::anonymous(&url);
    let (s, p) = anon
        .post(
            "/v1/pairing",
            json!({"public_key": id.public_key_base64url(), "name": "box", "os": "linux",
                   "arch": "x86_64", "agents": [{"name": "claude", "version": "2.0.1"}]}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let (s, h) = api
        .post(
            &format!("/v1/pairing/{}/approve", p["code"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{h}");
    let host = h["id"].as_str().unwrap().to_owned();
    let (_, n) = anon
        .post(&format!("/v1/hosts/{host}/nonce"), json!({}))
        .await;
    let nonce = n["nonce"].as_str().unwrap();
    let (s, t) = anon
        .post(
            &format!("/v1/hosts/{host}/token"),
            json!({"nonce": nonce, "signature": id.sign_auth(&host, nonce)}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let machine = api.with(t["token"].as_str().unwrap());

    // The machine reads the org's hosts: itself, agents as JSON text.
    let shape = format!("/v1/orgs/{org}/shape?table=hosts");
    let (s, offset, handle, rows) = read_shape(&machine, &shape).await;
    assert_eq!(s, 200, "{rows}");
    assert_eq!(rows[0]["value"]["id"], host.as_str());
    assert_eq!(rows[0]["value"]["name"], "box");
    assert!(
        rows[0]["value"]["agents"]
            .as_str()
            .unwrap()
            .contains("claude")
    );
    assert_eq!(
        rows.as_array().unwrap().last().unwrap()["headers"]["control"],
        "up-to-date"
    );

    // A member waiting live sees the revocation as an update.
    let live = format!("{shape}&offset={offset}&handle={handle}&live=true&cursor=");
    let waiting = tokio::spawn({
        let api = api.clone();
        async move { read_shape(&api, &live).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (s, _) = api.delete(&format!("/v1/hosts/{host}")).await;
    assert_eq!(s, 204);
    let (s, _, _, changes) = tokio::time::timeout(std::time::Duration::from_secs(15), waiting)
        .await
        .expect("the live read was not woken by the revocation")
        .unwrap();
    assert_eq!(s, 200, "{changes}");
    assert_eq!(changes[0]["headers"]["operation"], "update");
    assert!(changes[0]["value"]["revoked_at"].is_string());
    // The revoked machine's token reads no more.
    assert_eq!(read_shape(&machine, &shape).await.0, 401);
}
