//! The tables an org syncs, their columns and Postgres types, and how a row is spelt on the
//! wire.
//!
//! Rows are read from SQLite as `json_object(...)` of these columns (the change log's triggers
//! store the same shape), so native SQLite values arrive here and are turned into the text
//! format Electric clients parse by the types in the `electric-schema` header.

use crate::time::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A synced table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Tasks,
    TaskStatuses,
    Projects,
    Hosts,
    Sessions,
    Automations,
}

/// A column's Postgres type as Electric clients know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// Small integers (numbers, positions, sizes): parsed to JS numbers.
    Int4,
    /// Stored as 0 or 1.
    Bool,
    /// Stored as JSON text.
    Jsonb,
    /// Stored as Unix milliseconds, served as RFC 3339 like the REST API.
    Timestamptz,
}

impl Kind {
    fn pg(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Int4 => "int4",
            Self::Bool => "bool",
            Self::Jsonb => "jsonb",
            Self::Timestamptz => "timestamptz",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub not_null: bool,
}

const fn c(name: &'static str, kind: Kind, not_null: bool) -> Column {
    Column {
        name,
        kind,
        not_null,
    }
}

use Kind::{Bool, Int4, Jsonb, Text, Timestamptz as Ts};

// Keep in step with the change log's triggers (org/schema.rs); a store test checks that the
// logged rows have exactly these columns.
const TASKS: &[Column] = &[
    c("id", Text, true),
    c("number", Int4, true),
    c("slug", Text, true),
    c("title", Text, true),
    c("description", Text, true),
    c("priority", Text, true),
    c("status_id", Text, true),
    c("project_id", Text, false),
    c("assignee_id", Text, false),
    c("labels", Jsonb, true),
    c("created_by", Text, false),
    c("created_at", Ts, true),
    c("updated_at", Ts, true),
];

const TASK_STATUSES: &[Column] = &[
    c("id", Text, true),
    c("name", Text, true),
    c("category", Text, true),
    c("color", Text, true),
    c("position", Int4, true),
    c("created_at", Ts, true),
    c("updated_at", Ts, true),
];

const PROJECTS: &[Column] = &[
    c("id", Text, true),
    c("name", Text, true),
    c("repo_url", Text, false),
    c("default_branch", Text, true),
    c("created_at", Ts, true),
    c("updated_at", Ts, true),
];

const HOSTS: &[Column] = &[
    c("id", Text, true),
    c("name", Text, true),
    c("os", Text, true),
    c("arch", Text, true),
    c("agents", Jsonb, true),
    c("created_by", Text, true),
    c("created_at", Ts, true),
    c("revoked_at", Ts, false),
];

const SESSIONS: &[Column] = &[
    c("id", Text, true),
    c("project_id", Text, true),
    c("host_id", Text, true),
    c("agent", Text, true),
    c("prompt", Text, false),
    c("task_id", Text, false),
    c("branch", Text, false),
    c("base_branch", Text, false),
    c("worktree", Text, false),
    c("status", Text, true),
    c("reason", Text, false),
    c("exit_code", Int4, false),
    c("stream_path", Text, true),
    c("cols", Int4, true),
    c("rows", Int4, true),
    c("created_by", Text, true),
    c("created_at", Ts, true),
    c("started_at", Ts, false),
    c("ended_at", Ts, false),
    c("start_by", Ts, true),
    c("progress_message", Text, false),
    c("progress_percent", Int4, false),
    c("progress_at", Ts, false),
    c("kind", Text, true),
    c("title", Text, false),
];

const AUTOMATIONS: &[Column] = &[
    c("id", Text, true),
    c("name", Text, true),
    c("rrule", Text, true),
    c("timezone", Text, true),
    c("starts_at", Text, true),
    c("anchor", Text, true),
    c("project_id", Text, true),
    c("host", Text, true),
    c("agent", Text, true),
    c("base_branch", Text, false),
    c("prompt_version", Int4, true),
    c("paused", Bool, true),
    c("next_run_at", Ts, false),
    c("last_run_at", Ts, false),
    c("created_by", Text, true),
    c("created_at", Ts, true),
    c("updated_at", Ts, true),
];

impl Table {
    pub const ALL: [Self; 6] = [
        Self::Tasks,
        Self::TaskStatuses,
        Self::Projects,
        Self::Hosts,
        Self::Sessions,
        Self::Automations,
    ];

    /// The SQL table name, which is also the shape's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tasks => "tasks",
            Self::TaskStatuses => "task_statuses",
            Self::Projects => "projects",
            Self::Hosts => "hosts",
            Self::Sessions => "sessions",
            Self::Automations => "automations",
        }
    }

    /// `tasks` or, as Electric clients may write it, `public.tasks`.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.strip_prefix("public.").unwrap_or(name);
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Self::Tasks => TASKS,
            Self::TaskStatuses => TASK_STATUSES,
            Self::Projects => PROJECTS,
            Self::Hosts => HOSTS,
            Self::Sessions => SESSIONS,
            Self::Automations => AUTOMATIONS,
        }
    }

    /// The columns a `where` may test: the key, and the indexed references.
    pub fn filterable(self) -> &'static [&'static str] {
        match self {
            Self::Tasks => &["id", "status_id", "project_id", "assignee_id"],
            Self::Sessions => &["id", "host_id", "project_id", "status", "task_id"],
            Self::Automations => &["id", "project_id"],
            Self::TaskStatuses | Self::Projects | Self::Hosts => &["id"],
        }
    }

    /// The column named `name` if a `where` may test it (the static name, never the input).
    pub fn filter_column(self, name: &str) -> Option<&'static str> {
        self.filterable().iter().copied().find(|c| *c == name)
    }

    /// The `electric-schema` header: column name -> `{type, not_null?, pk_index?}`.
    pub fn schema(self) -> String {
        let mut schema = Map::new();
        for col in self.columns() {
            let mut spec = Map::new();
            spec.insert("type".into(), col.kind.pg().into());
            if col.not_null {
                spec.insert("not_null".into(), true.into());
            }
            if col.name == "id" {
                spec.insert("pk_index".into(), 0.into());
            }
            schema.insert(col.name.into(), spec.into());
        }
        Value::Object(schema).to_string()
    }

    /// A row's key as Electric spells it: `"public"."tasks"/"tsk_..."`.
    pub fn key(self, id: &str) -> String {
        format!(
            "\"public\".\"{}\"/\"{}\"",
            self.name(),
            id.replace('"', "\"\"")
        )
    }

    /// `json_object('id', id, ...)` over this table's columns, as the triggers log rows.
    pub fn row_sql(self) -> String {
        let pairs: Vec<String> = self
            .columns()
            .iter()
            .map(|c| format!("'{0}', \"{0}\"", c.name))
            .collect();
        format!("json_object({})", pairs.join(", "))
    }

    /// A row (native SQLite values by column name) in Postgres text format: every value a
    /// string or null.
    pub fn value(self, row: &Map<String, Value>) -> Map<String, Value> {
        self.columns()
            .iter()
            .map(|col| {
                let v = row.get(col.name).unwrap_or(&Value::Null);
                (col.name.to_owned(), text(col.kind, v))
            })
            .collect()
    }
}

/// One native value in Postgres text format.
fn text(kind: Kind, v: &Value) -> Value {
    let s = match (kind, v) {
        (_, Value::Null) => return Value::Null,
        (Kind::Bool, Value::Number(n)) => (n.as_i64() != Some(0)).to_string(),
        (Kind::Bool, Value::Bool(b)) => b.to_string(),
        (Kind::Timestamptz, Value::Number(n)) => match n.as_i64() {
            Some(ms) => rfc3339(ms),
            None => n.to_string(),
        },
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    };
    Value::String(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_parse_with_or_without_the_schema() {
        for t in Table::ALL {
            assert_eq!(Table::parse(t.name()), Some(t));
            assert_eq!(Table::parse(&format!("public.{}", t.name())), Some(t));
        }
        for bad in ["", "task", "public.", "other.tasks", "TASKS", "tasks;"] {
            assert_eq!(Table::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_schema_names_types_and_the_key() {
        let s: Value = serde_json::from_str(&Table::Tasks.schema()).unwrap();
        assert_eq!(
            s["id"],
            json!({"type": "text", "not_null": true, "pk_index": 0})
        );
        assert_eq!(s["number"], json!({"type": "int4", "not_null": true}));
        assert_eq!(s["project_id"], json!({"type": "text"}));
        assert_eq!(s["labels"], json!({"type": "jsonb", "not_null": true}));
        assert_eq!(
            s["created_at"],
            json!({"type": "timestamptz", "not_null": true})
        );
        let a: Value = serde_json::from_str(&Table::Automations.schema()).unwrap();
        assert_eq!(a["paused"]["type"], "bool");
        for t in Table::ALL {
            assert!(t.filterable().contains(&"id"));
            assert!(t.columns().iter().any(|c| c.name == "id"));
            for f in t.filterable() {
                assert!(t.columns().iter().any(|c| c.name == *f), "{f}");
            }
        }
    }

    #[test]
    fn values_are_postgres_text() {
        let row = json!({
            "id": "tsk_1", "number": 7, "labels": "[\"a\"]", "project_id": null,
            "created_at": 1_795_300_000_123_i64,
        });
        let v = Table::Tasks.value(row.as_object().unwrap());
        assert_eq!(v["id"], "tsk_1");
        assert_eq!(v["number"], "7");
        assert_eq!(v["labels"], "[\"a\"]");
        assert_eq!(v["project_id"], Value::Null);
        assert_eq!(v["created_at"], "2026-11-21T22:26:40.123Z");
        assert_eq!(v["title"], Value::Null, "a missing column is null");
        let a = Table::Automations.value(json!({"paused": 1}).as_object().unwrap());
        assert_eq!(a["paused"], "true");
        let a = Table::Automations.value(json!({"paused": 0}).as_object().unwrap());
        assert_eq!(a["paused"], "false");
        assert_eq!(Table::Tasks.key("tsk_1"), r#""public"."tasks"/"tsk_1""#);
    }
}
