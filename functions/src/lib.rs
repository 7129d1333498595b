//! Tether's runtime-agnostic HTTP surface: the REST API, authentication, the directory and the
//! OpenAPI document. No dependency on any edge runtime.
//!
//! - [`api::handle`] serves a request given a [`backend::Backend`]: the directory database,
//!   the org Durable Objects and a rate limiter, all behind traits. It also serves the MCP
//!   server at `/mcp`, whose tools call the REST handlers' functions.
//! - [`public::handle`] serves the credential-free routes; the Spin component uses only this.
//! - [`directory`] is the D1 SQL (users, orgs, members, API keys; hosts, pairing and connect
//!   nonces); org data is handled by `tether_durable::org` inside each org's Durable Object.
//! - [`webhooks`] checks GitHub, Slack and Linear deliveries (signatures, events); the routes
//!   and their D1 rows are in `api` and [`directory`].
//! - [`http`] and [`error`] hold the body/query decoding and the one JSON error shape.

pub mod api;
pub mod auth;
pub mod backend;
pub mod directory;
pub mod error;
pub mod http;
pub mod public;
pub mod streams;
pub mod webhooks;

/// The D1 migrations, in order, for backends that apply them themselves (tests).
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_directory.sql",
        include_str!("../migrations/0001_directory.sql"),
    ),
    (
        "0002_hosts.sql",
        include_str!("../migrations/0002_hosts.sql"),
    ),
    (
        "0003_webhooks.sql",
        include_str!("../migrations/0003_webhooks.sql"),
    ),
    (
        "0004_automations.sql",
        include_str!("../migrations/0004_automations.sql"),
    ),
];
