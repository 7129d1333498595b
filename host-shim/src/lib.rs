//! `tether`: the host daemon's library. The `tether` binary (src/main.rs and src/cli/) is the
//! command line on top; everything it does that is not printing lives here.
//!
//! - [`paths`]: where the files live (XDG folders, `TETHER_CONFIG_DIR`/`TETHER_STATE_DIR`).
//! - [`config`]: `config.toml`, the CLI's login (server URL and API key).
//! - [`identity`]: the host's Ed25519 key (`host.key`, 0600), its fingerprint and signatures.
//! - [`state`]: the local libsql database (migrations, pairing, commands seen).
//! - [`api`]: the edge's REST calls the CLI makes; [`pairing`]: the host's side of pairing.
//! - [`doctor`]: the machine checks (git, agent CLIs, server, clock, identity).
//! - [`daemon`]: `tether up`; [`tunnel`]: its connection to the edge (host token, WebSocket,
//!   heartbeats, RPCs, commands handled once, reconnects); [`service`]: its systemd user unit.
//! - [`streams`]: the Durable Streams client the daemon publishes terminal output with: a
//!   plain [`streams::StreamClient`] and a batching, exactly-once [`streams::IdempotentProducer`].
//! - [`hooks`]: the agents' hook protocols (Claude Code, Codex) and Tether's managed entries in
//!   their config files, for the guardrails (`tether hook` answers them through the daemon's control socket).
//! - [`mcp`]: the local MCP server every agent gets (`tether mcp`, rmcp over stdio): the org's
//!   tools and its own session's, relayed by the daemon (which holds the host token) to the edge.
//! - [`mirror`]: the org's tables (tasks, statuses, projects, hosts, sessions, automations)
//!   mirrored into the state database over the edge's Electric shape API, and read back with
//!   how stale they are (`tether tasks list`, the agents' MCP read tools).
//! - [`host_auth`]: the host token (a signed server nonce), cached for the tunnel and the
//!   session code's HTTP calls.
//! - [`chat`]: the agents' structured protocols (Claude Code's stream-json, `codex exec
//!   --json`), turned into the chat event schema; pure, fed by the session runner.
//! - [`sessions`]: agent sessions: a start command becomes a worktree ([`worktree`]), an
//!   agent from a preset ([`presets`]) in a PTY, its output spooled and shipped exactly once
//!   into the session's stream, its status reported to the edge; a chat session's agent runs
//!   on pipes in its structured mode ([`sessions::chat`]: events, follow-ups, approvals).
//! - [`titles`]: session titles from a small model when the daemon has an API key.
//!
//! Secret files (the key, the config) are written through one helper that creates them 0600
//! and renames them into place, so they are never readable by others, even for a moment.

pub mod api;
pub mod chat;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
mod error;
mod files;
pub mod guardrails;
pub mod hooks;
pub mod host_auth;
pub mod identity;
pub mod mcp;
pub mod mirror;
pub mod pairing;
pub mod paths;
pub mod policy;
pub mod presets;
pub mod service;
pub mod sessions;
pub mod state;
pub mod streams;
pub mod titles;
pub mod tunnel;
pub mod worktree;

pub use error::Error;
