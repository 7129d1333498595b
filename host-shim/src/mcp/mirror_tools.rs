//! The org's read tools answered from the daemon's mirror ([`crate::mirror`]) instead of the
//! edge: `tasks_list`, `tasks_get`, `task_statuses_list`, `projects_list`, `sessions_list`,
//! `sessions_get` and `automations_list`, with the edge tools' argument names, filters and
//! cursors. Every answer carries `"mirror": {"synced_at", "age_secs", "live"}`, so the model
//! knows how stale it may be; lists the edge answers as a bare array (`task_statuses_list`)
//! come as `{"data": [...], "mirror": ...}`.
//!
//! Whatever the mirror cannot answer as the edge would goes to the edge ([`answer`] is None):
//! arguments that do not fit, a table never synced, a row the mirror lacks (it may be newer
//! than the mirror), a database error. Writes always go to the edge.

use crate::mirror::{Mirror, views};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tether_durable::ids;
use tether_durable::org::model::{PageQuery, TaskQuery};
use tether_durable::session::SessionQuery;
use tether_durable::validate;
use tracing::warn;

/// The tools the mirror answers.
pub const TOOLS: &[&str] = &[
    "tasks_list",
    "tasks_get",
    "task_statuses_list",
    "projects_list",
    "sessions_list",
    "sessions_get",
    "automations_list",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Nothing {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskKey {
    id_or_slug: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionId {
    session_id: String,
}

/// The JSON answer of `tool` from the mirror, or None when the edge should answer.
pub async fn answer(mirror: &Mirror, tool: &str, args: &Map<String, Value>) -> Option<Value> {
    let answered = match tool {
        "tasks_list" => match parse::<TaskQuery>(args).filter(task_filters_valid) {
            Some(q) => views::tasks(mirror, &q)
                .await
                .map(|p| p.map(|p| p.to_json())),
            None => return None,
        },
        "tasks_get" => match parse::<TaskKey>(args) {
            Some(k) => views::task(mirror, &k.id_or_slug)
                .await
                .map(|t| t.map(|(t, s)| with_mirror(t, &s))),
            None => return None,
        },
        "task_statuses_list" => match parse::<Nothing>(args) {
            Some(_) => views::statuses(mirror).await.map(|(rows, s)| {
                s.synced_at
                    .is_some()
                    .then(|| serde_json::json!({"data": rows, "mirror": s.to_json()}))
            }),
            None => return None,
        },
        "projects_list" => match parse::<PageQuery>(args) {
            Some(q) => views::projects(mirror, &q)
                .await
                .map(|p| p.map(|p| p.to_json())),
            None => return None,
        },
        "automations_list" => match parse::<PageQuery>(args) {
            Some(q) => views::automations(mirror, &q)
                .await
                .map(|p| p.map(|p| p.to_json())),
            None => return None,
        },
        "sessions_list" => match parse::<SessionQuery>(args).filter(session_filters_valid) {
            Some(q) => views::sessions(mirror, &q)
                .await
                .map(|p| p.map(|p| p.to_json())),
            None => return None,
        },
        "sessions_get" => match parse::<SessionId>(args) {
            Some(k) => views::session(mirror, &k.session_id)
                .await
                .map(|t| t.map(|(t, s)| with_mirror(t, &s))),
            None => return None,
        },
        _ => return None,
    };
    answered
        .inspect_err(|e| warn!(tool, error = %e, "reading the mirror failed; asking the edge"))
        .ok()
        .flatten()
}

/// Whether a task query's filters are well formed, as the edge checks them (a malformed one
/// gets the edge's 400 rather than an empty list from the mirror).
fn task_filters_valid(q: &TaskQuery) -> bool {
    q.status_id
        .as_deref()
        .is_none_or(|s| ids::is_valid(ids::STATUS, s))
        && q.project_id
            .as_deref()
            .is_none_or(|p| ids::is_valid(ids::PROJECT, p))
        && q.assignee_id
            .as_deref()
            .is_none_or(|a| a == "none" || ids::is_valid(ids::MEMBER, a))
        && q.label
            .as_deref()
            .is_none_or(|l| validate::line("label", l, validate::LABEL_MAX).is_ok())
}

/// The same for a session query.
fn session_filters_valid(q: &SessionQuery) -> bool {
    q.host_id
        .as_deref()
        .is_none_or(|h| ids::is_valid(ids::HOST, h))
        && q.project_id
            .as_deref()
            .is_none_or(|p| ids::is_valid(ids::PROJECT, p))
}

/// The arguments as the tool's input type; None when they do not fit (the edge says why).
fn parse<T: DeserializeOwned>(args: &Map<String, Value>) -> Option<T> {
    serde_json::from_value(Value::Object(args.clone())).ok()
}

/// A single row with the mirror's staleness beside its fields.
fn with_mirror(mut row: Value, staleness: &crate::mirror::Staleness) -> Value {
    if let Some(o) = row.as_object_mut() {
        o.insert("mirror".into(), staleness.to_json());
    }
    row
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::mirror::protocol::Message;
    use crate::mirror::store::Batch;
    use serde_json::json;

    async fn load(m: &Mirror, table: &str, rows: &[Value]) {
        let mut messages: Vec<Message> = rows
            .iter()
            .map(|r| Message::Insert {
                key: r["id"].as_str().unwrap().to_owned(),
                value: r.as_object().unwrap().clone(),
            })
            .collect();
        messages.push(Message::UpToDate);
        let batch = Batch {
            handle: "h".into(),
            offset: "1_0".into(),
            schema: Some(r#"{"number":{"type":"int4"},"position":{"type":"int4"}}"#.into()),
            messages,
            ..Batch::default()
        };
        m.apply(table, &batch).await.unwrap();
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// A well-formed id: the prefix and 32 hex digits.
    fn id(prefix: &str, n: u8) -> String {
        format!("{prefix}_{:032x}", n)
    }

    #[tokio::test]
    async fn read_tools_answer_from_the_mirror_with_its_staleness() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mirror::open(&dir.path().join("state.db")).await.unwrap();
        // Nothing synced: every read goes to the edge.
        for tool in TOOLS {
            assert_eq!(answer(&m, tool, &Map::new()).await, None, "{tool}");
        }
        load(
            &m,
            "task_statuses",
            &[json!({"id":"sts_1","name":"Todo","category":"unstarted","position":"0"})],
        )
        .await;
        let (mem, hst) = (id("mem", 1), id("hst", 1));
        load(
            &m,
            "tasks",
            &[
                json!({"id":"tsk_1","number":"1","slug":"T-1","status_id":"sts_1","assignee_id":null,"labels":"[\"ui\"]","priority":"high"}),
                json!({"id":"tsk_2","number":"2","slug":"T-2","status_id":"sts_1","assignee_id":mem,"labels":"[]","priority":"low"}),
            ],
        )
        .await;
        load(
            &m,
            "sessions",
            &[json!({"id":"ses_1","status":"running","host_id":hst,"project_id":"prj_1"})],
        )
        .await;

        let list = answer(&m, "tasks_list", &args(json!({"assignee_id": "none"})))
            .await
            .unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["data"][0]["slug"], "T-1");
        assert_eq!(list["data"][0]["status"]["name"], "Todo");
        assert_eq!(list["mirror"]["live"], true, "{list}");
        assert_eq!(list["next_cursor"], Value::Null);
        let list = answer(
            &m,
            "tasks_list",
            &args(json!({"priority": "low", "limit": 200})),
        )
        .await
        .unwrap();
        assert_eq!(list["data"][0]["slug"], "T-2", "{list}");
        let list = answer(&m, "tasks_list", &args(json!({"assignee_id": mem})))
            .await
            .unwrap();
        assert_eq!(list["data"][0]["slug"], "T-2", "{list}");
        let list = answer(&m, "tasks_list", &args(json!({"label": "UI"})))
            .await
            .unwrap();
        assert_eq!(list["data"][0]["slug"], "T-1", "{list}");

        let got = answer(&m, "tasks_get", &args(json!({"id_or_slug": "t-2"})))
            .await
            .unwrap();
        assert_eq!(
            (got["id"].as_str(), got["number"].as_i64()),
            (Some("tsk_2"), Some(2))
        );
        assert!(got["mirror"]["synced_at"].is_string(), "{got}");

        let statuses = answer(&m, "task_statuses_list", &Map::new()).await.unwrap();
        assert_eq!(statuses["data"][0]["id"], "sts_1", "{statuses}");
        assert!(statuses["mirror"].is_object());

        let sessions = answer(
            &m,
            "sessions_list",
            &args(json!({"status": "running", "host_id": hst})),
        )
        .await
        .unwrap();
        assert_eq!(sessions["data"][0]["id"], "ses_1", "{sessions}");
        let none = answer(&m, "sessions_list", &args(json!({"host_id": id("hst", 2)})))
            .await
            .unwrap();
        assert_eq!(none["data"], json!([]));
        let one = answer(&m, "sessions_get", &args(json!({"session_id": "ses_1"})))
            .await
            .unwrap();
        assert_eq!(one["status"], "running");

        // The edge answers what the mirror cannot: a row it lacks, arguments that do not fit,
        // a table not synced, a write.
        for (tool, a) in [
            ("tasks_get", json!({"id_or_slug": "T-9"})),
            ("tasks_get", json!({})),
            ("tasks_list", json!({"limit": 0})),
            ("tasks_list", json!({"bogus": 1})),
            ("tasks_list", json!({"status_category": "sideways"})),
            ("tasks_list", json!({"status_id": "sts_1"})),
            ("tasks_list", json!({"assignee_id": "mem_1"})),
            ("tasks_list", json!({"label": ""})),
            ("sessions_list", json!({"host_id": "hst_1"})),
            ("task_statuses_list", json!({"x": 1})),
            ("sessions_get", json!({"session_id": "ses_9"})),
            ("projects_list", json!({})),
            ("automations_list", json!({})),
            ("tasks_create", json!({"title": "x"})),
        ] {
            assert_eq!(answer(&m, tool, &args(a.clone())).await, None, "{tool} {a}");
        }
    }
}
