//! The org's tables (tasks, task statuses, projects, hosts, sessions, automations), mirrored
//! into the state database over the edge's Electric shape API
//! (`GET /v1/orgs/{org}/shape`, `../shared/protocols/electric-shapes.md`), so `tether tasks
//! list` and the agents' MCP servers can read them without the network, saying how stale they
//! are.
//!
//! - [`protocol`]: the messages and headers; values typed by the shape's schema.
//! - [`client`]: one shape request with the host token, and how to recover from each failure.
//! - [`store`]: the `mirror_rows` and `mirror_shapes` tables; every answer applied in one
//!   transaction with its offset and handle, so a restart resumes exactly where it stopped.
//! - [`sync`]: the daemon's loop: every table at once, catch up, then long-poll for ever; a 409
//!   empties the table and starts it over.
//! - [`read`]: filters over the stored rows and the [`read::Staleness`] of an answer.
//! - [`views`]: rows as the API shows them (typed values, a task's status inlined).

pub mod client;
pub mod protocol;
pub mod read;
pub mod store;
pub mod sync;
pub mod views;

pub use client::{ShapeClient, SyncError};
pub use read::{Condition, Filter, Order, Staleness};
pub use store::{Mirror, TABLES, owner};
pub use sync::Syncer;
