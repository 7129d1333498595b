//! End-to-end tests: the built Worker in workerd (Miniflare) and the Spin component under
//! `wasmtime serve`, driven over HTTP on 127.0.0.1, and real `tether` daemons connected to the
//! Worker. See tests/README.md for the tiers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod agent_mcp;
mod api;
mod automations;
mod bad_input;
mod chat;
mod dev_script;
mod electric;
mod guardrails;
mod hosts;
mod identity;
mod isolation;
mod mcp;
mod mirror;
mod persistence;
mod sessions;
mod spin;
mod stream_client;
mod streams;
mod streams_js;
mod webhooks;

use serde_json::{Value, json};
use tether_tests::{Api, Worker, new_org};
use tokio::sync::OnceCell;

/// One Worker shared by the tests that do not restart it; each test makes its own org(s).
pub struct Shared {
    pub worker: Worker,
    pub owner_key: String,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();

pub async fn shared() -> &'static Shared {
    SHARED
        .get_or_init(|| async {
            let worker = Worker::start(None).expect("starting the Worker");
            let owner_key = worker.bootstrap().await.expect("bootstrap");
            Shared { worker, owner_key }
        })
        .await
}

/// A fresh org on the shared Worker: (base url, owner key of the new org).
pub async fn fresh_org(name: &str, prefix: &str) -> (String, String) {
    let s = shared().await;
    let key = new_org(&s.worker.url, &s.owner_key, name, prefix).await;
    (s.worker.url.clone(), key)
}

/// Calls an MCP tool with JSON-RPC over HTTP; answers (isError, the JSON in its text).
pub(crate) async fn mcp_tool(api: &Api, name: &str, args: Value) -> (bool, Value) {
    let req = api
        .request("POST", "/mcp")
        .header("accept", "application/json")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": name, "arguments": args}}));
    let (s, v) = api.send(req).await;
    assert_eq!(s, 200, "{v}");
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    (
        v["result"]["isError"].as_bool().unwrap_or(false),
        serde_json::from_str(text).unwrap(),
    )
}
