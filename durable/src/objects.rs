//! The Durable Object classes: thin workers-rs adapters over the plain logic in this crate.
//! Each class lives in its own file; [`do_sql::DoSql`] is the object's SQLite behind [`crate::sql::Sql`].

mod do_sql;
mod org_store;

pub use org_store::OrgStore;

/// The internal URL the Worker uses to call an object; only the path matters.
pub const ORG_CALL_URL: &str = "https://org.internal/call";
