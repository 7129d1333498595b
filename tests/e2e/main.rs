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

use tether_tests::{Worker, new_org};
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
