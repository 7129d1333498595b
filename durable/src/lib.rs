//! Tether's Durable Objects as plain, natively tested logic, plus the types every side shares.
//!
//! - [`org`]: an organisation's projects, task statuses and tasks, owned by one Org Durable
//!   Object ([`org::store::Store`] over [`sql::Sql`]).
//! - [`stream`]: session streams (the Durable Streams protocol), one Stream Durable Object
//!   per stream ([`stream::store::Store`] over [`sql::Sql`]).
//! - [`policy`]: guardrail policies the org ships to its machines (stored by the Org object)
//!   and the decisions the machines report back.
//! - [`automation`]: scheduled automations (RRULE in an IANA zone, versioned prompts, runs),
//!   stored by the Org object and run by the Worker's cron.
//! - [`sync`]: the org's change log served as Electric shapes (tables, `where` filters,
//!   offsets and handles); the log itself is kept by the Org object.
//! - [`mcp`]: the audit trail of the MCP server's tool calls (stored by the Org object).
//! - [`chat`]: chat sessions' normalized event schema, follow-ups and approvals.
//! - [`session`]: agent sessions: the org's record of each, and the messages that start and
//!   drive them on a host.
//! - [`tunnel`]: the host tunnel's wire protocol (frames, close codes, flow control, heartbeats),
//!   shared by the Host object and the daemon.
//! - [`error`], [`ids`], [`validate`], [`time`]: the public error shape, resource ids, field
//!   caps and timestamps that the Worker, the objects and the daemon agree on.
//! - `objects` (feature `worker`): the Durable Object classes, thin workers-rs adapters.
//!
//! Without the `worker` feature this crate depends on serde and friends only, so the daemon and
//! the Spin component use the same types.

pub mod automation;
pub mod chat;
pub mod error;
pub mod host;
pub mod ids;
pub mod mcp;
pub mod org;
pub mod policy;
pub mod session;
pub mod sql;
pub mod stream;
pub mod sync;
pub mod time;
pub mod tunnel;
pub mod validate;

#[cfg(feature = "worker")]
pub mod objects;
