//! The same handler code as a Spin component under `wasmtime serve`.

use crate::shared;
use serde_json::json;
use tether_tests::{Api, Spin};

#[tokio::test]
async fn spin_serves_the_public_routes_with_the_same_code() {
    let s = shared().await;
    let spin = Spin::start(None).await.unwrap();
    let anon = Api::anonymous(&spin.url);
    let (st, health) = anon.get("/health").await;
    assert_eq!((st, health["status"].as_str()), (200, Some("ok")));
    let (_, version) = anon.get("/version").await;
    assert_eq!(version["runtime"], "spin");
    let (_, worker_version) = Api::anonymous(&s.worker.url).get("/version").await;
    assert_eq!(version["version"], worker_version["version"]);
    let (_, doc) = anon.get("/v1/openapi.json").await;
    let (_, worker_doc) = Api::anonymous(&s.worker.url).get("/v1/openapi.json").await;
    assert_eq!(doc, worker_doc, "one OpenAPI document from one code base");
    let (st, e) = anon.get("/v1/tasks").await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn spin_forwards_the_api_to_the_edge() {
    let s = shared().await;
    let spin = Spin::start(Some(&s.worker.url)).await.unwrap();
    assert_eq!(Api::anonymous(&spin.url).get("/v1/me").await.0, 401);
    let api = Api::new(&spin.url, &s.owner_key);
    let (st, me) = api.get("/v1/me").await;
    assert_eq!((st, me["role"].as_str()), (200, Some("owner")));
    let (st, t) = api
        .post("/v1/tasks", json!({"title": "through spin"}))
        .await;
    assert_eq!(st, 201, "{t}");
}
