//! The mirror's rows as the API shows them, for `tether tasks list` and the agents' MCP tools:
//! values typed by each table's schema, a task's status inlined, a session's progress as one
//! object, lists newest first (tasks by number, sessions by id) or by id, with the API's own
//! filters and cursors (the same keyset cursors as the edge's, so a page from the mirror can
//! be continued at the edge and back).
//!
//! A query the mirror cannot answer as the edge would is not answered here (`None`): a table
//! never synced, a limit out of range, a cursor the mirror does not understand. The caller asks
//! the edge instead, which also gives the API's own error for a bad query.

use super::protocol::{Row, Schema, typed_row};
use super::read::{Condition, Filter, Order, Staleness};
use super::store::Mirror;
use crate::Error;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tether_durable::org::model::{PageQuery, TaskQuery, cursor};
use tether_durable::session::{SessionKind, SessionQuery};
use tether_durable::validate::{PAGE_DEFAULT, PAGE_MAX};

/// One page of a list read from the mirror.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub data: Vec<Value>,
    /// The API's cursor of the next page (the edge takes it too).
    pub next_cursor: Option<String>,
    pub staleness: Staleness,
}

impl Page {
    /// `{"data", "next_cursor", "mirror": {"synced_at", "age_secs", "live"}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "data": self.data,
            "next_cursor": self.next_cursor,
            "mirror": self.staleness.to_json(),
        })
    }
}

/// The task statuses in board order (category, position, id), typed.
pub async fn statuses(mirror: &Mirror) -> Result<(Vec<Value>, Staleness), Error> {
    let schema = mirror.schema("task_statuses").await?;
    let (rows, staleness) = mirror.rows("task_statuses", &Filter::default()).await?;
    let mut rows: Vec<Map<String, Value>> = rows.iter().map(|r| typed_row(r, &schema)).collect();
    rows.sort_by_key(|r| {
        (
            category_rank(r.get("category").and_then(Value::as_str)),
            r.get("position").and_then(Value::as_i64).unwrap_or(0),
            r.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
        )
    });
    Ok((rows.into_iter().map(Value::Object).collect(), staleness))
}

fn category_rank(category: Option<&str>) -> u8 {
    match category {
        Some("backlog") => 0,
        Some("unstarted") => 1,
        Some("started") => 2,
        Some("completed") => 3,
        _ => 4,
    }
}

/// The id of the status named `name_or_id` (an id, or a name in any case).
pub async fn find_status(mirror: &Mirror, name_or_id: &str) -> Result<Option<String>, Error> {
    find_id(mirror, "task_statuses", "name", name_or_id).await
}

/// The id of the project named `name_or_id` (an id, or a name in any case).
pub async fn find_project(mirror: &Mirror, name_or_id: &str) -> Result<Option<String>, Error> {
    find_id(mirror, "projects", "name", name_or_id).await
}

async fn find_id(
    mirror: &Mirror,
    table: &str,
    name_column: &str,
    name_or_id: &str,
) -> Result<Option<String>, Error> {
    for condition in [
        Condition::Eq("id".into(), name_or_id.to_owned()),
        Condition::EqNoCase(name_column.into(), name_or_id.to_owned()),
    ] {
        let filter = Filter {
            limit: Some(1),
            ..Filter::default().with(condition)
        };
        let (rows, _) = mirror.rows(table, &filter).await?;
        if let Some(id) = rows
            .first()
            .and_then(|r| r.get("id"))
            .and_then(Value::as_str)
        {
            return Ok(Some(id.to_owned()));
        }
    }
    Ok(None)
}

/// Tasks newest first (by number), filtered as `GET /v1/tasks` filters them.
pub async fn tasks(mirror: &Mirror, q: &TaskQuery) -> Result<Option<Page>, Error> {
    let Some((limit, mut filter)) = page_filter(q.limit, q.cursor.as_deref(), "number", true, true)
    else {
        return Ok(None);
    };
    let (statuses, status_staleness) = statuses(mirror).await?;
    if let Some(s) = &q.status_id {
        filter = filter.with(Condition::Eq("status_id".into(), s.clone()));
    }
    if let Some(category) = q.status_category {
        let ids = statuses
            .iter()
            .filter(|s| s.get("category").and_then(Value::as_str) == Some(category.as_str()))
            .filter_map(|s| s.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        filter = filter.with(Condition::In("status_id".into(), ids));
    }
    match q.assignee_id.as_deref() {
        Some("none") => filter = filter.with(Condition::IsNull("assignee_id".into())),
        Some(a) => filter = filter.with(Condition::Eq("assignee_id".into(), a.to_owned())),
        None => {}
    }
    if let Some(p) = &q.project_id {
        filter = filter.with(Condition::Eq("project_id".into(), p.clone()));
    }
    if let Some(l) = &q.label {
        filter = filter.with(Condition::Contains("labels".into(), l.trim().to_owned()));
    }
    if let Some(p) = q.priority {
        filter = filter.with(Condition::Eq("priority".into(), p.as_str().to_owned()));
    }
    let schema = mirror.schema("tasks").await?;
    let (rows, staleness) = mirror.rows("tasks", &filter).await?;
    let staleness = combine(staleness, status_staleness);
    if staleness.synced_at.is_none() {
        return Ok(None);
    }
    let by_id = status_refs(&statuses);
    let views: Vec<Value> = rows.iter().map(|r| task_view(r, &schema, &by_id)).collect();
    Ok(Some(page(views, limit, staleness, |t| {
        t.get("number").map(|n| match n {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    })))
}

/// One task by id (`tsk_...`) or slug (`TET-12`); None when the mirror has not synced tasks
/// or does not have it (it may be newer than the mirror: the edge knows).
pub async fn task(mirror: &Mirror, id_or_slug: &str) -> Result<Option<(Value, Staleness)>, Error> {
    let condition = if id_or_slug.starts_with("tsk_") {
        Condition::Eq("id".into(), id_or_slug.to_owned())
    } else {
        Condition::EqNoCase("slug".into(), id_or_slug.to_owned())
    };
    let (statuses, status_staleness) = statuses(mirror).await?;
    let schema = mirror.schema("tasks").await?;
    let filter = Filter {
        limit: Some(1),
        ..Filter::default().with(condition)
    };
    let (rows, staleness) = mirror.rows("tasks", &filter).await?;
    let staleness = combine(staleness, status_staleness);
    match rows.first() {
        Some(row) if staleness.synced_at.is_some() => Ok(Some((
            task_view(row, &schema, &status_refs(&statuses)),
            staleness,
        ))),
        _ => Ok(None),
    }
}

/// Projects by id, as `GET /v1/projects` pages them.
pub async fn projects(mirror: &Mirror, q: &PageQuery) -> Result<Option<Page>, Error> {
    by_id(mirror, "projects", q).await
}

/// Automations by id, as `GET /v1/automations` pages them (without their prompts' text,
/// which the mirror does not hold).
pub async fn automations(mirror: &Mirror, q: &PageQuery) -> Result<Option<Page>, Error> {
    by_id(mirror, "automations", q).await
}

async fn by_id(mirror: &Mirror, table: &str, q: &PageQuery) -> Result<Option<Page>, Error> {
    // Oldest first, as the API lists these.
    let Some((limit, filter)) = page_filter(q.limit, q.cursor.as_deref(), "id", false, false)
    else {
        return Ok(None);
    };
    let schema = mirror.schema(table).await?;
    let (rows, staleness) = mirror.rows(table, &filter).await?;
    if staleness.synced_at.is_none() {
        return Ok(None);
    }
    let views = rows
        .iter()
        .map(|r| Value::Object(typed_row(r, &schema)))
        .collect();
    Ok(Some(page(views, limit, staleness, id_of)))
}

/// Sessions newest first, filtered as `GET /v1/sessions` filters them.
pub async fn sessions(mirror: &Mirror, q: &SessionQuery) -> Result<Option<Page>, Error> {
    let Some((limit, mut filter)) = page_filter(q.limit, q.cursor.as_deref(), "id", false, true)
    else {
        return Ok(None);
    };
    if let Some(s) = q.status {
        filter = filter.with(Condition::Eq("status".into(), s.as_str().to_owned()));
    }
    match q.kind {
        Some(SessionKind::Chat) => {
            filter = filter.with(Condition::Eq("kind".into(), "chat".to_owned()));
        }
        // Rows synced before sessions had a kind are terminal ones without the column: the
        // edge answers this filter.
        Some(SessionKind::Terminal) => return Ok(None),
        None => {}
    }
    if let Some(h) = &q.host_id {
        filter = filter.with(Condition::Eq("host_id".into(), h.clone()));
    }
    if let Some(p) = &q.project_id {
        filter = filter.with(Condition::Eq("project_id".into(), p.clone()));
    }
    let schema = mirror.schema("sessions").await?;
    let (rows, staleness) = mirror.rows("sessions", &filter).await?;
    if staleness.synced_at.is_none() {
        return Ok(None);
    }
    let views = rows.iter().map(|r| session_view(r, &schema)).collect();
    Ok(Some(page(views, limit, staleness, id_of)))
}

/// One session; None when the mirror has not synced sessions or does not have it.
pub async fn session(mirror: &Mirror, id: &str) -> Result<Option<(Value, Staleness)>, Error> {
    let schema = mirror.schema("sessions").await?;
    let filter = Filter {
        limit: Some(1),
        ..Filter::default().with(Condition::Eq("id".into(), id.to_owned()))
    };
    let (rows, staleness) = mirror.rows("sessions", &filter).await?;
    match rows.first() {
        Some(row) if staleness.synced_at.is_some() => {
            Ok(Some((session_view(row, &schema), staleness)))
        }
        _ => Ok(None),
    }
}

/// A task as the API shows it: typed, with `status: {id, name, category}` instead of
/// `status_id` (the id alone when the status is not in the mirror).
fn task_view(row: &Row, schema: &Schema, statuses: &HashMap<String, Value>) -> Value {
    let mut task = typed_row(row, schema);
    // Labels typed as text by an older schema still read as a list.
    if let Some(Value::String(s)) = task.get("labels")
        && let Ok(list @ Value::Array(_)) = serde_json::from_str::<Value>(s)
    {
        task.insert("labels".into(), list);
    }
    if let Some(Value::String(id)) = task.remove("status_id") {
        let status = statuses
            .get(&id)
            .cloned()
            .unwrap_or_else(|| json!({ "id": id }));
        task.insert("status".into(), status);
    }
    Value::Object(task)
}

/// A session as the API shows it: typed, its progress as `{message, percent, at}` or null.
/// Rows synced before sessions had a kind and a title are terminal sessions without one.
fn session_view(row: &Row, schema: &Schema) -> Value {
    let mut s = typed_row(row, schema);
    if s.get("kind").is_none_or(Value::is_null) {
        s.insert("kind".into(), json!("terminal"));
    }
    s.entry("title").or_insert(Value::Null);
    let message = s.remove("progress_message").unwrap_or(Value::Null);
    let percent = s.remove("progress_percent").unwrap_or(Value::Null);
    let at = s.remove("progress_at").unwrap_or(Value::Null);
    let progress = if message.is_null() {
        Value::Null
    } else {
        json!({"message": message, "percent": percent, "at": at})
    };
    s.insert("progress".into(), progress);
    Value::Object(s)
}

/// `{id, name, category}` of each status, by id.
fn status_refs(statuses: &[Value]) -> HashMap<String, Value> {
    statuses
        .iter()
        .filter_map(|s| {
            let id = s.get("id")?.as_str()?.to_owned();
            let r = json!({"id": id, "name": s.get("name"), "category": s.get("category")});
            Some((id, r))
        })
        .collect()
}

/// The oldest of two, live only if both are.
fn combine(a: Staleness, b: Staleness) -> Staleness {
    Staleness {
        synced_at: a.synced_at.zip(b.synced_at).map(|(x, y)| x.min(y)),
        live: a.live && b.live,
        now: a.now.max(b.now),
    }
}

fn id_of(v: &Value) -> Option<String> {
    v.get("id").and_then(Value::as_str).map(str::to_owned)
}

/// Splits rows fetched with one extra into a page and the next page's cursor.
fn page(
    mut rows: Vec<Value>,
    limit: u32,
    staleness: Staleness,
    key: impl Fn(&Value) -> Option<String>,
) -> Page {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().and_then(key).map(|k| cursor::encode(&k))
    } else {
        None
    };
    Page {
        data: rows,
        next_cursor,
        staleness,
    }
}

/// The API's page size rule: 1 to 200, default 50 (None: out of range).
fn page_limit(limit: Option<u32>) -> Option<u32> {
    Some(limit.unwrap_or(PAGE_DEFAULT)).filter(|n| (1..=PAGE_MAX).contains(n))
}

/// A page's limit and its filter: ordered by `column` (a number when `numeric`), after the
/// cursor, one row more than the page (to tell whether another follows). None for a limit
/// out of range or a malformed cursor: the edge answers those.
fn page_filter(
    limit: Option<u32>,
    cursor: Option<&str>,
    column: &str,
    numeric: bool,
    descending: bool,
) -> Option<(u32, Filter)> {
    let limit = page_limit(limit)?;
    let after = match cursor {
        Some(c) => Some(cursor::decode(c).filter(|v| !numeric || v.parse::<i64>().is_ok())?),
        None => None,
    };
    let filter = Filter {
        order: Some(Order {
            column: column.into(),
            numeric,
            descending,
        }),
        after,
        limit: Some(limit + 1),
        ..Filter::default()
    };
    Some((limit, filter))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::mirror::protocol::Message;
    use crate::mirror::store::Batch;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use tether_durable::session::SessionStatus;

    const TASK_SCHEMA: &str = r#"{"id":{"type":"text","pk_index":0},"number":{"type":"int4"},
        "slug":{"type":"text"},"title":{"type":"text"},"priority":{"type":"text"},
        "status_id":{"type":"text"},"project_id":{"type":"text"},"assignee_id":{"type":"text"},
        "labels":{"type":"jsonb"},"created_at":{"type":"timestamptz"}}"#;

    async fn load(m: &Mirror, table: &str, schema: &str, rows: &[Value]) {
        let mut messages: Vec<Message> = rows
            .iter()
            .map(|r| Message::Insert {
                key: format!("\"public\".\"{table}\"/\"{}\"", r["id"].as_str().unwrap()),
                value: r.as_object().unwrap().clone(),
            })
            .collect();
        messages.push(Message::UpToDate);
        m.apply(
            table,
            &Batch {
                handle: "h".into(),
                offset: "1_0".into(),
                cursor: None,
                schema: Some(schema.into()),
                messages,
            },
        )
        .await
        .unwrap();
    }

    /// An org: two statuses, a project, 5 tasks (TST-1..5), 3 sessions.
    async fn org(dir: &tempfile::TempDir) -> Mirror {
        let m = Mirror::open(&dir.path().join("state.db")).await.unwrap();
        load(
            &m,
            "task_statuses",
            r#"{"id":{"type":"text"},"name":{"type":"text"},"category":{"type":"text"},"position":{"type":"int4"}}"#,
            &[
                json!({"id":"sts_done","name":"Done","category":"completed","position":"3"}),
                json!({"id":"sts_todo","name":"Todo","category":"unstarted","position":"1"}),
            ],
        )
        .await;
        load(
            &m,
            "projects",
            r#"{"id":{"type":"text"},"name":{"type":"text"}}"#,
            &[
                json!({"id":"prj_b","name":"Backend"}),
                json!({"id":"prj_a","name":"App"}),
            ],
        )
        .await;
        let task = |n: i64,
                    status: &str,
                    project: Option<&str>,
                    assignee: Option<&str>,
                    labels: &str,
                    priority: &str| {
            json!({"id": format!("tsk_{n}"), "number": n.to_string(), "slug": format!("TST-{n}"),
                   "title": format!("task {n}"), "priority": priority, "status_id": status,
                   "project_id": project, "assignee_id": assignee, "labels": labels,
                   "created_at": "2026-01-01T00:00:00.000Z"})
        };
        load(
            &m,
            "tasks",
            TASK_SCHEMA,
            &[
                task(1, "sts_todo", Some("prj_a"), None, r#"["bug"]"#, "high"),
                task(2, "sts_done", Some("prj_a"), Some("mem_1"), "[]", "low"),
                task(
                    3,
                    "sts_todo",
                    None,
                    Some("mem_1"),
                    r#"["Bug","ui"]"#,
                    "high",
                ),
                task(10, "sts_todo", Some("prj_b"), None, "[]", "none"),
                task(11, "sts_missing", None, None, "not json", "none"),
            ],
        )
        .await;
        load(
            &m,
            "sessions",
            r#"{"id":{"type":"text"},"status":{"type":"text"},"progress_percent":{"type":"int4"},"exit_code":{"type":"int4"}}"#,
            &[
                json!({"id":"ses_01","status":"exited","host_id":"hst_1","project_id":"prj_a","exit_code":"0","progress_message":null,"progress_percent":null,"progress_at":null}),
                json!({"id":"ses_02","status":"running","host_id":"hst_2","project_id":"prj_a","exit_code":null,"progress_message":"half","progress_percent":"50","progress_at":"2026-01-01T00:00:00.000Z"}),
                json!({"id":"ses_03","status":"running","host_id":"hst_1","project_id":"prj_b","exit_code":null,"progress_message":null,"progress_percent":null,"progress_at":null}),
            ],
        )
        .await;
        m
    }

    fn slugs(p: &Page) -> Vec<&str> {
        p.data.iter().map(|t| t["slug"].as_str().unwrap()).collect()
    }

    fn q(v: Value) -> TaskQuery {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn tasks_are_filtered_like_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let m = org(&dir).await;
        let all = tasks(&m, &TaskQuery::default()).await.unwrap().unwrap();
        // Newest first by number (10 after 3, numerically).
        assert_eq!(slugs(&all), ["TST-11", "TST-10", "TST-3", "TST-2", "TST-1"]);
        assert!(all.staleness.live && all.next_cursor.is_none());
        let t1 = &all.data[4];
        assert_eq!(t1["number"], 1);
        assert_eq!(t1["labels"], json!(["bug"]));
        assert_eq!(
            t1["status"],
            json!({"id":"sts_todo","name":"Todo","category":"unstarted"})
        );
        assert!(t1.get("status_id").is_none());
        // A status the mirror lacks shows its id alone; a non-JSON labels value stays text.
        assert_eq!(all.data[0]["status"], json!({"id":"sts_missing"}));

        let cases = [
            (
                json!({"status_id": "sts_todo"}),
                vec!["TST-10", "TST-3", "TST-1"],
            ),
            (json!({"status_category": "completed"}), vec!["TST-2"]),
            (json!({"status_category": "canceled"}), vec![]),
            (
                json!({"assignee_id": "none"}),
                vec!["TST-11", "TST-10", "TST-1"],
            ),
            (json!({"assignee_id": "mem_1"}), vec!["TST-3", "TST-2"]),
            (json!({"project_id": "prj_a"}), vec!["TST-2", "TST-1"]),
            (json!({"label": "BUG"}), vec!["TST-3", "TST-1"]),
            (json!({"priority": "high"}), vec!["TST-3", "TST-1"]),
            (
                json!({"priority": "high", "project_id": "prj_a", "label": "bug"}),
                vec!["TST-1"],
            ),
        ];
        for (query, want) in cases {
            let p = tasks(&m, &q(query.clone())).await.unwrap().unwrap();
            assert_eq!(slugs(&p), want, "{query}");
        }
    }

    #[tokio::test]
    async fn task_pages_use_the_apis_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let m = org(&dir).await;
        let first = tasks(&m, &q(json!({"limit": 2}))).await.unwrap().unwrap();
        assert_eq!(slugs(&first), ["TST-11", "TST-10"]);
        let cursor = first.next_cursor.clone().unwrap();
        // The edge's cursor for "after number 10".
        assert_eq!(cursor, URL_SAFE_NO_PAD.encode("10"));
        let second = tasks(&m, &q(json!({"limit": 2, "cursor": cursor})))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(slugs(&second), ["TST-3", "TST-2"]);
        let third = tasks(&m, &q(json!({"limit": 2, "cursor": second.next_cursor})))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(slugs(&third), ["TST-1"]);
        assert_eq!(third.next_cursor, None);
        // What the mirror does not answer, the edge does (with its own errors).
        for bad in [
            json!({"limit": 0}),
            json!({"limit": 201}),
            json!({"cursor": "%%%"}),
            json!({"cursor": URL_SAFE_NO_PAD.encode("not a number")}),
        ] {
            assert_eq!(tasks(&m, &q(bad.clone())).await.unwrap(), None, "{bad}");
        }
        let json = first.to_json();
        assert_eq!(json["mirror"]["live"], true, "{json}");
        assert!(json["mirror"]["age_secs"].is_u64(), "{json}");
    }

    #[tokio::test]
    async fn single_rows_lists_and_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let m = org(&dir).await;
        let (t, stale) = task(&m, "tst-3").await.unwrap().unwrap();
        assert_eq!(t["id"], "tsk_3");
        assert!(stale.live);
        assert_eq!(task(&m, "tsk_2").await.unwrap().unwrap().0["slug"], "TST-2");
        assert_eq!(task(&m, "TST-99").await.unwrap(), None);

        let (sts, _) = statuses(&m).await.unwrap();
        let names: Vec<&str> = sts.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Todo", "Done"]);
        assert_eq!(sts[0]["position"], 1);
        assert_eq!(
            find_status(&m, "todo").await.unwrap().as_deref(),
            Some("sts_todo")
        );
        assert_eq!(
            find_status(&m, "sts_done").await.unwrap().as_deref(),
            Some("sts_done")
        );
        assert_eq!(find_status(&m, "Doing").await.unwrap(), None);
        assert_eq!(
            find_project(&m, "app").await.unwrap().as_deref(),
            Some("prj_a")
        );

        let p = projects(&m, &PageQuery::default()).await.unwrap().unwrap();
        let ids: Vec<&str> = p.data.iter().map(|p| p["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["prj_a", "prj_b"]);
        let p = projects(
            &m,
            &PageQuery {
                cursor: None,
                limit: Some(1),
            },
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            p.next_cursor.as_deref(),
            Some(URL_SAFE_NO_PAD.encode("prj_a").as_str())
        );
        // Never synced: the edge answers.
        assert_eq!(automations(&m, &PageQuery::default()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn sessions_are_filtered_and_show_their_progress() {
        let dir = tempfile::tempdir().unwrap();
        let m = org(&dir).await;
        let ids = |p: &Page| -> Vec<String> {
            p.data
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let all = sessions(&m, &SessionQuery::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&all), ["ses_03", "ses_02", "ses_01"]);
        // Rows from before sessions had a kind are terminal sessions without a title.
        assert_eq!(
            (&all.data[0]["kind"], &all.data[0]["title"]),
            (&json!("terminal"), &Value::Null)
        );
        let kind = |kind| SessionQuery {
            kind: Some(kind),
            ..SessionQuery::default()
        };
        let chats = sessions(&m, &kind(SessionKind::Chat))
            .await
            .unwrap()
            .unwrap();
        assert!(chats.data.is_empty());
        assert_eq!(
            sessions(&m, &kind(SessionKind::Terminal)).await.unwrap(),
            None
        );
        let q = |status: Option<SessionStatus>, host: Option<&str>, project: Option<&str>| {
            SessionQuery {
                status,
                kind: None,
                host_id: host.map(str::to_owned),
                project_id: project.map(str::to_owned),
                cursor: None,
                limit: None,
            }
        };
        let running = sessions(&m, &q(Some(SessionStatus::Running), None, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&running), ["ses_03", "ses_02"]);
        let host1 = sessions(&m, &q(None, Some("hst_1"), Some("prj_a")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&host1), ["ses_01"]);
        assert_eq!(host1.data[0]["exit_code"], 0);
        assert_eq!(host1.data[0]["progress"], Value::Null);
        let (s, _) = session(&m, "ses_02").await.unwrap().unwrap();
        assert_eq!(
            s["progress"],
            json!({"message": "half", "percent": 50, "at": "2026-01-01T00:00:00.000Z"})
        );
        assert_eq!(session(&m, "ses_99").await.unwrap(), None);
    }
}
