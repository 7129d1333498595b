//! Reading the mirror: which rows ([`Filter`]) and how current they are ([`Staleness`]).

use crate::Error;
use libsql::Value;
use std::time::Duration;

/// A table counts as live while its last response ended up to date and came at most this long
/// ago. A live table gets an answer at least every 20 s (the edge's long-poll timeout answers
/// up-to-date), so an older one means the daemon stopped or lost the edge.
pub const LIVE_WITHIN: Duration = Duration::from_secs(60);

/// How current what the mirror answered is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staleness {
    /// Unix ms of the last response that left the table(s) up to date; None: never synced
    /// (or not since the edge made it start over).
    pub synced_at: Option<i64>,
    /// Up to date at its last response, and that response is recent.
    pub live: bool,
    /// When this was read (Unix ms).
    pub now: i64,
}

impl Staleness {
    /// From the stored state: `stored_live` is whether the last response ended up to date.
    pub fn new(synced_at: Option<i64>, stored_live: bool, now: i64) -> Self {
        let recent = synced_at.is_some_and(|t| {
            now.saturating_sub(t) <= i64::try_from(LIVE_WITHIN.as_millis()).unwrap_or(i64::MAX)
        });
        Self {
            synced_at,
            live: stored_live && recent,
            now,
        }
    }

    /// Not live unless a daemon runs to keep it so (the CLI asks the state folder's lock).
    pub fn with_daemon(self, running: bool) -> Self {
        Self {
            live: self.live && running,
            ..self
        }
    }

    /// How long ago the last sync was.
    pub fn age(&self) -> Option<Duration> {
        self.synced_at
            .map(|t| Duration::from_millis(u64::try_from(self.now.saturating_sub(t)).unwrap_or(0)))
    }

    /// `{"synced_at": RFC 3339 or null, "age_secs": n or null, "live": bool}`: what the
    /// answers built from the mirror carry, so a reader (a model) knows how stale they may be.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "synced_at": self.synced_at.and_then(rfc3339),
            "age_secs": self.age().map(|a| a.as_secs()),
            "live": self.live,
        })
    }

    /// One line for people, e.g. `mirror synced 3 s ago (live)`. `daemon_running` picks the
    /// reason given when it is not live.
    pub fn describe(&self, daemon_running: bool) -> String {
        match (self.age(), self.live) {
            (None, _) if daemon_running => {
                "mirror not synced yet: the daemon has not reached the server".to_owned()
            }
            (None, _) => "mirror not synced yet: start the daemon (tether up)".to_owned(),
            (Some(age), true) => format!("mirror synced {} ago (live)", human(age)),
            (Some(age), false) if daemon_running => format!(
                "mirror last synced {} ago (not live: the daemon is catching up or cannot reach the server)",
                human(age)
            ),
            (Some(age), false) => {
                format!("mirror last synced {} ago (daemon not syncing)", human(age))
            }
        }
    }
}

/// Unix ms as RFC 3339 (UTC, milliseconds).
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A duration the way people say it: `3 s`, `5 min`, `2 h`, `3 d`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// A condition on one column of the stored rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Eq(String, String),
    /// Equal ignoring ASCII case (names, slugs).
    EqNoCase(String, String),
    /// Null or absent.
    IsNull(String),
    /// One of the values (none: no row matches).
    In(String, Vec<String>),
    /// The column holds a JSON array with this element, ignoring ASCII case (labels).
    Contains(String, String),
}

/// The order of the rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub column: String,
    /// Compare as integers (the text values of an integer column).
    pub numeric: bool,
    pub descending: bool,
}

/// Which rows of a table to read. Without an order, rows come by key when unfiltered, and in
/// no particular order when filtered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub conditions: Vec<Condition>,
    pub order: Option<Order>,
    /// Keyset paging: only rows strictly past this value of the order column.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

impl Filter {
    pub fn with(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    /// The query: `SELECT row FROM mirror_rows WHERE tbl = ?1 ...` and its parameters.
    pub(crate) fn sql(&self, table: &str) -> Result<(String, Vec<Value>), Error> {
        let mut sql = String::from("SELECT row FROM mirror_rows WHERE tbl = ?");
        let mut params = vec![Value::Text(table.to_owned())];
        for c in &self.conditions {
            match c {
                Condition::Eq(col, v) => {
                    sql.push_str(&format!(" AND {} = ?", column(col)?));
                    params.push(Value::Text(v.clone()));
                }
                Condition::EqNoCase(col, v) => {
                    sql.push_str(&format!(" AND {} = ? COLLATE NOCASE", column(col)?));
                    params.push(Value::Text(v.clone()));
                }
                Condition::IsNull(col) => sql.push_str(&format!(" AND {} IS NULL", column(col)?)),
                Condition::In(_, values) if values.is_empty() => sql.push_str(" AND 0"),
                Condition::In(col, values) => {
                    let marks = vec!["?"; values.len()].join(", ");
                    sql.push_str(&format!(" AND {} IN ({marks})", column(col)?));
                    params.extend(values.iter().map(|v| Value::Text(v.clone())));
                }
                Condition::Contains(col, v) => {
                    // A value that is not a JSON array holds nothing (and must not fail the query).
                    let c = column(col)?;
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid({c}) THEN {c} ELSE '[]' END) j
                                      WHERE j.value = ? COLLATE NOCASE)"
                    ));
                    params.push(Value::Text(v.clone()));
                }
            }
        }
        match &self.order {
            Some(o) => {
                let mut expr = column(&o.column)?;
                if o.numeric {
                    expr = format!("CAST({expr} AS INTEGER)");
                }
                if let Some(after) = &self.after {
                    let cmp = if o.descending { "<" } else { ">" };
                    if o.numeric {
                        sql.push_str(&format!(" AND {expr} {cmp} CAST(? AS INTEGER)"));
                    } else {
                        sql.push_str(&format!(" AND {expr} {cmp} ?"));
                    }
                    params.push(Value::Text(after.clone()));
                }
                // The state database indexes rows by `id` and `number` with these very
                // expressions, so the newest rows come without sorting the table. (Both are
                // unique, so no tie-breaker is needed.)
                let dir = if o.descending { "DESC" } else { "ASC" };
                sql.push_str(&format!(" ORDER BY {expr} {dir}"));
            }
            // Ordering a filtered read by key would make SQLite walk the table's keys rather
            // than use the `id` index.
            None if self.conditions.is_empty() => sql.push_str(" ORDER BY key"),
            None => {}
        }
        if let Some(limit) = self.limit {
            sql.push_str(" LIMIT ?");
            params.push(Value::Integer(i64::from(limit)));
        }
        Ok((sql, params))
    }
}

/// The SQL for a column's value in a stored row. Column names come from our code, but they
/// are spliced into SQL, so anything but `[a-z0-9_]` is refused.
fn column(name: &str) -> Result<String, Error> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(Error::MirrorColumn {
            column: name.to_owned(),
        });
    }
    Ok(format!("json_extract(row, '$.{name}')"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn staleness_in_words_and_json() {
        let now = 1_767_323_045_678;
        let never = Staleness::new(None, false, now);
        assert_eq!(
            never.describe(false),
            "mirror not synced yet: start the daemon (tether up)"
        );
        assert!(never.describe(true).starts_with("mirror not synced yet"));
        assert_eq!(
            never.to_json(),
            serde_json::json!({"synced_at": null, "age_secs": null, "live": false})
        );

        let live = Staleness::new(Some(now - 3_000), true, now);
        assert!(live.live);
        assert_eq!(live.describe(true), "mirror synced 3 s ago (live)");
        assert_eq!(
            live.to_json(),
            serde_json::json!({"synced_at": "2026-01-02T03:04:02.678Z", "age_secs": 3, "live": true})
        );
        // The same state with no daemon running is not live.
        let stopped = live.with_daemon(false);
        assert!(!stopped.live);
        assert_eq!(
            stopped.describe(false),
            "mirror last synced 3 s ago (daemon not syncing)"
        );

        // Up to date long ago is not live.
        let old = Staleness::new(Some(now - 2 * 3600 * 1000), true, now);
        assert!(!old.live);
        assert_eq!(
            old.describe(false),
            "mirror last synced 2 h ago (daemon not syncing)"
        );
        assert!(old.describe(true).contains("not live"));
        // Recent but not up to date (catching up) is not live either.
        assert!(!Staleness::new(Some(now), false, now).live);
    }

    #[test]
    fn durations_read_naturally() {
        let h = |s| human(Duration::from_secs(s));
        assert_eq!(
            [
                h(0),
                h(59),
                h(60),
                h(3599),
                h(3600),
                h(47 * 3600),
                h(50 * 3600)
            ],
            ["0 s", "59 s", "1 min", "59 min", "1 h", "47 h", "2 d"]
        );
    }

    #[test]
    fn filters_become_parameterised_sql() {
        let f = Filter {
            conditions: vec![
                Condition::Eq("status_id".into(), "sts_1".into()),
                Condition::IsNull("assignee_id".into()),
                Condition::In("project_id".into(), vec!["a".into(), "b".into()]),
                Condition::Contains("labels".into(), "bug".into()),
            ],
            order: Some(Order {
                column: "number".into(),
                numeric: true,
                descending: true,
            }),
            after: Some("10".into()),
            limit: Some(51),
        };
        let (sql, params) = f.sql("tasks").unwrap();
        assert!(
            sql.contains("json_extract(row, '$.status_id') = ?"),
            "{sql}"
        );
        assert!(
            sql.contains("CAST(json_extract(row, '$.number') AS INTEGER) < CAST(? AS INTEGER)"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ORDER BY CAST(json_extract(row, '$.number') AS INTEGER) DESC LIMIT ?"),
            "{sql}"
        );
        assert_eq!(params.len(), 7);
        let empty_in = Filter::default().with(Condition::In("id".into(), vec![]));
        assert!(empty_in.sql("tasks").unwrap().0.contains("AND 0"));
        let bad = Filter::default().with(Condition::Eq("id') OR 1 --".into(), "x".into()));
        assert!(matches!(bad.sql("tasks"), Err(Error::MirrorColumn { .. })));
    }
}
