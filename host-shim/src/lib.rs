//! `tether`: the host daemon's library. The `tether` binary (src/main.rs) is the CLI on top.
//!
//! - [`streams`]: the Durable Streams client the daemon publishes terminal output with: a
//!   plain [`streams::StreamClient`] and a batching, exactly-once [`streams::IdempotentProducer`].

pub mod streams;
