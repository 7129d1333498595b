//! The change log and the shapes served from it: triggers on every synced table, snapshots
//! paged by rowid while writes go on, filters with rows moving in and out, compaction and
//! the must-refetch conditions.

use super::{HOST_A, MEMBER, call, new_session, task};
use crate::org::model::{CreateProject, CreateTaskStatus, Project, Task, TaskStatus};
use crate::org::store::Store;
use crate::org::{OrgCall, OrgOp};
use crate::sql::{NativeSql, Sql};
use crate::sync::filter::Filter;
use crate::sync::offset::{Handle, Offset};
use crate::sync::table::Table;
use crate::sync::{
    Compacted, MAX_CHANGES, MirrorHost, PAGE_ROWS, ShapeChunk, ShapeRead, ShapeStep,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, serde::Deserialize)]
struct Entry {
    lsn: i64,
    tbl: String,
    op: String,
    key: String,
    row: Option<String>,
    old: Option<String>,
}

fn entries(sql: &NativeSql) -> Vec<Entry> {
    sql.query(
        "SELECT lsn, tbl, op, key, row, old FROM changes ORDER BY lsn",
        &[],
    )
    .unwrap()
}

fn ok(sql: &NativeSql, op: OrgOp) -> Value {
    call::<Value>(sql, op).unwrap()
}

fn project(sql: &NativeSql, name: &str) -> Project {
    call(
        sql,
        OrgOp::CreateProject(CreateProject {
            name: name.into(),
            repo_url: None,
            default_branch: None,
        }),
    )
    .unwrap()
}

fn patch(sql: &NativeSql, key: &str, body: Value) -> Task {
    call(
        sql,
        OrgOp::UpdateTask {
            key: key.into(),
            patch: serde_json::from_value(body).unwrap(),
        },
    )
    .unwrap()
}

fn host(id: &str, name: &str, revoked_at: Option<i64>) -> MirrorHost {
    MirrorHost {
        id: id.into(),
        name: name.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agents: r#"[{"name":"claude","version":"2.0.1"}]"#.into(),
        created_by: MEMBER.into(),
        created_at: 1_795_300_000_000,
        revoked_at,
    }
}

fn read(sql: &NativeSql, r: &ShapeRead) -> ShapeStep {
    Store::open(sql).unwrap().shape(r, 1_000).unwrap()
}

fn start(table: Table, filter: Filter) -> ShapeRead {
    ShapeRead {
        table,
        filter,
        offset: Offset::Start,
        handle: None,
        live: false,
    }
}

fn messages(c: &ShapeChunk) -> Vec<Value> {
    serde_json::from_slice(&c.body).unwrap()
}

/// A client's copy of a shape: rows by key, applied as the Electric client applies messages.
#[derive(Default)]
struct Mirror {
    rows: HashMap<String, Map<String, Value>>,
    offset: Option<Offset>,
    handle: Option<Handle>,
    up_to_date: bool,
}

impl Mirror {
    fn apply(&mut self, c: &ShapeChunk) {
        assert!(!c.meta.must_refetch, "{:?}", c.meta);
        for m in messages(c) {
            let key = m["key"].as_str().map(str::to_owned);
            let value = m["value"].as_object().cloned();
            match (m["headers"]["operation"].as_str(), key, value) {
                (Some("insert"), Some(k), Some(v)) => {
                    self.rows.insert(k, v);
                }
                (Some("update"), Some(k), Some(v)) => {
                    self.rows.entry(k).or_default().extend(v);
                }
                (Some("delete"), Some(k), _) => {
                    self.rows.remove(&k);
                }
                _ => assert_eq!(m["headers"]["control"], "up-to-date", "{m}"),
            }
        }
        self.offset = Offset::parse(&c.meta.offset);
        self.handle = Handle::parse(&c.meta.handle);
        self.up_to_date = c.meta.up_to_date;
    }

    /// The next request: from where the last answer left off.
    fn next(&self, table: Table, filter: &Filter) -> ShapeRead {
        ShapeRead {
            table,
            filter: filter.clone(),
            offset: self.offset.unwrap_or(Offset::Start),
            handle: self.handle.clone(),
            live: false,
        }
    }

    /// Reads until up to date; answers how many requests it took.
    fn sync(&mut self, sql: &NativeSql, table: Table, filter: &Filter) -> usize {
        let mut n = 0;
        loop {
            n += 1;
            let c = read(sql, &self.next(table, filter)).into_chunk();
            self.apply(&c);
            if self.up_to_date {
                return n;
            }
            assert!(n < 1000, "never up to date");
        }
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rows
            .values()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// The table's rows now, as a fresh client would see them.
fn truth(sql: &NativeSql, table: Table, filter: &Filter) -> HashMap<String, Map<String, Value>> {
    let mut m = Mirror::default();
    m.sync(sql, table, filter);
    m.rows
}

fn filter(table: Table, w: &str) -> Filter {
    Filter::parse(table, Some(w), &BTreeMap::new()).unwrap()
}

#[test]
fn every_write_to_every_synced_table_is_logged_with_its_columns() {
    let sql = NativeSql::open_in_memory().unwrap();
    Store::open(&sql).unwrap();
    assert!(
        entries(&sql).is_empty(),
        "the default statuses predate the log"
    );

    let p = project(&sql, "app");
    ok(
        &sql,
        OrgOp::UpdateProject {
            id: p.id.clone(),
            patch: serde_json::from_value(json!({"repo_url": "https://github.com/a/b"})).unwrap(),
        },
    );
    let s: TaskStatus = call(
        &sql,
        OrgOp::CreateStatus(CreateTaskStatus {
            name: "Review".into(),
            category: crate::org::model::StatusCategory::Started,
            color: None,
            position: None,
        }),
    )
    .unwrap();
    let t = task(&sql, json!({"title": "one", "labels": ["bug"]}));
    patch(&sql, &t.id, json!({"status_id": s.id}));
    ok(&sql, OrgOp::DeleteTask { key: t.id.clone() });
    ok(
        &sql,
        OrgOp::DeleteStatus {
            id: s.id.clone(),
            replace_with: None,
        },
    );
    ok(&sql, OrgOp::PutHost(host(HOST_A, "devbox", None)));
    ok(&sql, OrgOp::PutHost(host(HOST_A, "devbox", Some(5))));
    let sess: Value = call(&sql, new_session(HOST_A, &p.id, 600)).unwrap();
    let auto: Value = call(
        &sql,
        OrgOp::CreateAutomation(serde_json::from_value(json!({
            "name": "nightly", "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
            "timezone": "Europe/Berlin", "starts_at": null, "paused": false,
            "target": {"project_id": p.id, "host": "any", "agent": "claude", "base_branch": null},
            "prompt": "Triage.",
        })).unwrap()),
    )
    .unwrap();
    ok(
        &sql,
        OrgOp::SetAutomationPaused {
            key: auto["id"].as_str().unwrap().into(),
            paused: true,
        },
    );
    ok(
        &sql,
        OrgOp::DeleteAutomation {
            key: auto["id"].as_str().unwrap().into(),
        },
    );
    ok(&sql, OrgOp::DeleteProject { id: p.id.clone() });

    let log = entries(&sql);
    let seen: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e.tbl.as_str(), e.op.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("projects", "insert"),
            ("projects", "update"),
            ("task_statuses", "insert"),
            ("tasks", "insert"),
            ("tasks", "update"),
            ("tasks", "delete"),
            ("task_statuses", "delete"),
            ("hosts", "insert"),
            ("hosts", "update"),
            ("sessions", "insert"),
            ("automations", "insert"),
            ("automations", "update"),
            ("automations", "delete"),
            ("projects", "delete"),
        ]
    );
    assert!(log.windows(2).all(|w| w[1].lsn == w[0].lsn + 1), "gapless");
    assert_eq!(log[3].key, t.id);
    assert_eq!(log[9].key, sess["id"].as_str().unwrap());
    // Each logged row has exactly the table's columns, as native values.
    for e in &log {
        let table = Table::parse(&e.tbl).unwrap();
        let want: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
        for json in [&e.row, &e.old].into_iter().flatten() {
            let row: Map<String, Value> = serde_json::from_str(json).unwrap();
            let mut have: Vec<&str> = row.keys().map(String::as_str).collect();
            let mut want = want.clone();
            have.sort_unstable();
            want.sort_unstable();
            assert_eq!(have, want, "{}", e.tbl);
        }
        assert_eq!(e.row.is_some(), e.op != "delete");
        assert_eq!(e.old.is_some(), e.op != "insert");
    }
    let inserted: Value = serde_json::from_str(log[3].row.as_deref().unwrap()).unwrap();
    assert_eq!(inserted["number"], 1);
    assert_eq!(inserted["labels"], "[\"bug\"]");
    let moved: Value = serde_json::from_str(log[4].row.as_deref().unwrap()).unwrap();
    let before: Value = serde_json::from_str(log[4].old.as_deref().unwrap()).unwrap();
    assert_eq!(
        (&moved["status_id"], &before["status_id"]),
        (&json!(s.id), &json!(t.status.id))
    );
}

#[test]
fn a_failed_write_logs_nothing_and_a_no_op_update_logs_nothing() {
    let sql = NativeSql::open_in_memory().unwrap();
    let t = task(&sql, json!({"title": "one"}));
    let n = entries(&sql).len();
    // A write that fails part way (a status that does not exist) rolls its log back too.
    let e = call::<Task>(
        &sql,
        OrgOp::UpdateTask {
            key: t.id.clone(),
            patch: serde_json::from_value(
                json!({"status_id": "sts_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"}),
            )
            .unwrap(),
        },
    );
    assert!(e.is_err());
    let failed: Result<(), crate::error::StoreError> = sql.transaction(|| {
        sql.execute("UPDATE tasks SET title = 'changed'", &[])?;
        Err(crate::error::StoreError::invalid("x", "rolled back"))
    });
    assert!(failed.is_err());
    assert_eq!(entries(&sql).len(), n);
    assert_eq!(
        call::<Task>(&sql, OrgOp::GetTask { key: t.id.clone() })
            .unwrap()
            .title,
        "one"
    );

    // Writing the same values changes nothing: no entry.
    sql.execute("UPDATE tasks SET title = title, labels = labels", &[])
        .unwrap();
    ok(&sql, OrgOp::PutHost(host(HOST_A, "devbox", None)));
    let n = entries(&sql).len();
    ok(&sql, OrgOp::PutHost(host(HOST_A, "devbox", None)));
    ok(
        &sql,
        OrgOp::SyncHosts {
            hosts: vec![host(HOST_A, "devbox", None)],
        },
    );
    assert_eq!(entries(&sql).len(), n);
    // Reconciling deletes what the directory no longer has.
    ok(&sql, OrgOp::SyncHosts { hosts: vec![] });
    let log = entries(&sql);
    assert_eq!(log.len(), n + 1);
    assert_eq!(
        (log[n].tbl.as_str(), log[n].op.as_str()),
        ("hosts", "delete")
    );
}

#[test]
fn a_snapshot_paged_while_writes_go_on_ends_equal_to_the_table() {
    let sql = NativeSql::open_in_memory().unwrap();
    let mut tasks = Vec::new();
    for i in 0..(2 * PAGE_ROWS + 300) {
        tasks.push(task(&sql, json!({"title": format!("t{i}")})));
    }
    let all = Filter::default();
    let mut m = Mirror::default();
    let first = read(&sql, &m.next(Table::Tasks, &all)).into_chunk();
    m.apply(&first);
    assert_eq!(messages(&first).len(), PAGE_ROWS);
    assert!(!first.meta.up_to_date);
    let tail = Store::open(&sql).unwrap().log_tail().unwrap();
    let h = Handle::parse(&first.meta.handle).unwrap();
    assert_eq!(h.at, tail, "the handle names the snapshot's log position");
    assert!(
        matches!(m.offset, Some(Offset::Snapshot { at, rowid }) if at == tail && rowid == PAGE_ROWS as i64)
    );

    // Meanwhile: a delivered row changes, an undelivered one changes and one goes, rows come.
    patch(
        &sql,
        &tasks[3].id,
        json!({"title": "changed after delivery"}),
    );
    patch(
        &sql,
        &tasks[PAGE_ROWS + 10].id,
        json!({"title": "changed before delivery"}),
    );
    ok(
        &sql,
        OrgOp::DeleteTask {
            key: tasks[2 * PAGE_ROWS + 5].id.clone(),
        },
    );
    ok(
        &sql,
        OrgOp::DeleteTask {
            key: tasks[7].id.clone(),
        },
    );
    let late = task(&sql, json!({"title": "late"}));

    let n = m.sync(&sql, Table::Tasks, &all);
    assert_eq!(
        n, 2,
        "two more snapshot pages, the last going on with the log"
    );
    assert_eq!(m.rows, truth(&sql, Table::Tasks, &all));
    let rows = &m.rows;
    assert_eq!(rows.len(), 2 * PAGE_ROWS + 300 - 2 + 1);
    assert_eq!(
        rows[&Table::Tasks.key(&tasks[3].id)]["title"],
        "changed after delivery"
    );
    assert_eq!(rows[&Table::Tasks.key(&late.id)]["title"], "late");
    assert!(!rows.contains_key(&Table::Tasks.key(&tasks[7].id)));
    // Values are Postgres text.
    let one = &rows[&Table::Tasks.key(&tasks[0].id)];
    assert_eq!(one["number"], "1");
    assert_eq!(one["labels"], "[]");
    assert!(one["created_at"].as_str().unwrap().ends_with('Z'));

    // Caught up, then a live read of nothing is idle at the tail; a change is answered.
    let idle = read(
        &sql,
        &ShapeRead {
            live: true,
            ..m.next(Table::Tasks, &all)
        },
    );
    let ShapeStep::Idle(c) = idle else {
        panic!("{idle:?}")
    };
    assert_eq!(
        messages(&c),
        [json!({"headers": {"control": "up-to-date"}})]
    );
    assert_eq!(c.meta.offset, m.offset.unwrap().to_string());
    patch(&sql, &late.id, json!({"priority": "high"}));
    let step = read(
        &sql,
        &ShapeRead {
            live: true,
            ..m.next(Table::Tasks, &all)
        },
    );
    let ShapeStep::Ready(c) = step else {
        panic!("{step:?}")
    };
    let msgs = messages(&c);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["headers"]["operation"], "update");
    assert_eq!(msgs[0]["value"]["priority"], "high");
    assert_eq!(
        msgs[0]["value"]["title"], "late",
        "updates carry the whole row"
    );
    assert!(c.meta.up_to_date);
}

#[test]
fn catch_up_is_chunked_and_ends_with_up_to_date() {
    let sql = NativeSql::open_in_memory().unwrap();
    let all = Filter::default();
    let mut m = Mirror::default();
    assert_eq!(
        m.sync(&sql, Table::Tasks, &all),
        1,
        "an empty table: one answer"
    );
    for i in 0..(PAGE_ROWS + 5) {
        task(&sql, json!({"title": format!("t{i}")}));
    }
    let c = read(&sql, &m.next(Table::Tasks, &all)).into_chunk();
    assert_eq!(messages(&c).len(), PAGE_ROWS);
    assert!(!c.meta.up_to_date);
    m.apply(&c);
    let c = read(&sql, &m.next(Table::Tasks, &all)).into_chunk();
    let msgs = messages(&c);
    assert_eq!(msgs.len(), 6);
    assert_eq!(msgs[5], json!({"headers": {"control": "up-to-date"}}));
    assert!(c.meta.up_to_date);
    m.apply(&c);
    assert_eq!(m.rows.len(), PAGE_ROWS + 5);

    // Other tables' writes move a caught-up shape's offset to the tail.
    project(&sql, "elsewhere");
    let tail = Store::open(&sql).unwrap().log_tail().unwrap();
    let c = read(&sql, &m.next(Table::Tasks, &all)).into_chunk();
    assert_eq!(messages(&c).len(), 1);
    assert_eq!(c.meta.offset, Offset::Log(tail).to_string());

    // offset=now: up to date at the tail with a handle, nothing else.
    let now = read(
        &sql,
        &ShapeRead {
            offset: Offset::Now,
            ..start(Table::Tasks, all)
        },
    )
    .into_chunk();
    assert_eq!(
        messages(&now),
        [json!({"headers": {"control": "up-to-date"}})]
    );
    assert_eq!(now.meta.offset, format!("{tail}_0"));
    assert_eq!(Handle::parse(&now.meta.handle).unwrap().at, tail);
}

#[test]
fn filters_move_rows_in_and_out() {
    let sql = NativeSql::open_in_memory().unwrap();
    let statuses: Vec<TaskStatus> = call(&sql, OrgOp::ListStatuses).unwrap();
    let (todo, done) = (&statuses[1].id, &statuses[3].id);
    let a = task(&sql, json!({"title": "a", "status_id": todo}));
    let b = task(&sql, json!({"title": "b", "status_id": done}));
    let f = filter(Table::Tasks, &format!("status_id = '{todo}'"));
    let mut m = Mirror::default();
    m.sync(&sql, Table::Tasks, &f);
    assert_eq!(m.ids(), std::slice::from_ref(&a.id));

    let step = |m: &mut Mirror| {
        let c = read(&sql, &m.next(Table::Tasks, &f)).into_chunk();
        m.apply(&c);
        messages(&c)
            .iter()
            .filter_map(|x| x["headers"]["operation"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    patch(&sql, &b.id, json!({"status_id": todo}));
    assert_eq!(step(&mut m), ["insert"], "moved in: the whole row");
    assert_eq!(m.rows[&Table::Tasks.key(&b.id)]["title"], "b");
    patch(&sql, &a.id, json!({"status_id": done}));
    let c = read(&sql, &m.next(Table::Tasks, &f)).into_chunk();
    assert_eq!(
        messages(&c)[0],
        json!({"headers": {"operation": "delete"}, "key": Table::Tasks.key(&a.id), "value": {"id": a.id}}),
        "moved out: a delete with the key only"
    );
    m.apply(&c);
    patch(&sql, &a.id, json!({"title": "still out"}));
    patch(&sql, &b.id, json!({"title": "b2"}));
    assert_eq!(step(&mut m), ["update"], "outside changes pass by");
    ok(&sql, OrgOp::DeleteTask { key: a.id.clone() });
    assert!(step(&mut m).is_empty());
    ok(&sql, OrgOp::DeleteTask { key: b.id.clone() });
    assert_eq!(step(&mut m), ["delete"]);
    assert!(m.rows.is_empty());
    assert_eq!(m.rows, truth(&sql, Table::Tasks, &f));

    // A live read whose table changed only outside its filter keeps waiting.
    task(&sql, json!({"title": "c", "status_id": done}));
    assert!(matches!(
        read(
            &sql,
            &ShapeRead {
                live: true,
                ..m.next(Table::Tasks, &f)
            }
        ),
        ShapeStep::Idle(_)
    ));
}

fn compact(sql: &NativeSql, keep: Option<i64>, now: i64) -> Compacted {
    let call = OrgCall {
        org_id: "org_x".into(),
        actor: MEMBER.into(),
        op: OrgOp::CompactChanges { keep },
    };
    serde_json::from_slice(&Store::open(sql).unwrap().call(call, now).unwrap()).unwrap()
}

#[test]
fn compaction_keeps_the_newest_and_stale_readers_must_refetch() {
    let sql = NativeSql::open_in_memory().unwrap();
    let all = Filter::default();
    let mut m = Mirror::default();
    for i in 0..5 {
        task(&sql, json!({"title": format!("t{i}")}));
    }
    m.sync(&sql, Table::Tasks, &all);
    let behind = m.next(Table::Tasks, &all);
    for i in 5..10 {
        task(&sql, json!({"title": format!("t{i}")}));
    }
    let c = compact(&sql, Some(3), 1_000);
    assert_eq!((c.min_lsn, c.tail_lsn, c.removed), (8, 10, 7));
    assert_eq!(entries(&sql).first().map(|e| e.lsn), Some(8));
    // The reader at 5 needs 6 and 7, which are gone: 409 with a fresh handle at the tail.
    let refetch = read(&sql, &behind).into_chunk();
    assert!(refetch.meta.must_refetch);
    assert_eq!(
        messages(&refetch),
        [json!({"headers": {"control": "must-refetch"}})]
    );
    let fresh = Handle::parse(&refetch.meta.handle).unwrap();
    assert_eq!(fresh.at, 10);
    assert_ne!(Some(fresh), m.handle);
    // A reader at 7 still has all it needs.
    let at7 = ShapeRead {
        offset: Offset::Log(7),
        ..behind.clone()
    };
    assert!(!read(&sql, &at7).into_chunk().meta.must_refetch);
    // Keeping none: the tail stays, every reader behind it refetches, a new one resyncs.
    let c = compact(&sql, Some(0), 1_000);
    assert_eq!((c.min_lsn, c.tail_lsn, c.removed), (11, 10, 3));
    assert!(entries(&sql).is_empty());
    assert!(read(&sql, &at7).into_chunk().meta.must_refetch);
    let at10 = ShapeRead {
        offset: Offset::Log(10),
        ..behind.clone()
    };
    assert!(
        !read(&sql, &at10).into_chunk().meta.must_refetch,
        "at the tail nothing is missing"
    );
    let mut again = Mirror::default();
    again.sync(&sql, Table::Tasks, &all);
    assert_eq!(again.rows.len(), 10);
    // New entries continue after the old tail.
    task(&sql, json!({"title": "t10"}));
    assert_eq!(entries(&sql)[0].lsn, 11);
    assert_eq!(compact(&sql, None, 1_000).removed, 0, "nothing is due");

    // Other reasons to refetch: another shape's handle, an offset past the tail, a snapshot
    // page of a snapshot whose log position is gone.
    let other = Handle::new(Table::Projects, &all, 10);
    let r = ShapeRead {
        handle: Some(other),
        offset: Offset::Log(10),
        ..behind.clone()
    };
    assert!(read(&sql, &r).into_chunk().meta.must_refetch);
    let r = ShapeRead {
        offset: Offset::Log(99),
        ..at10.clone()
    };
    assert!(read(&sql, &r).into_chunk().meta.must_refetch);
    let old = Handle::new(Table::Tasks, &all, 5);
    let r = ShapeRead {
        handle: Some(old.clone()),
        offset: Offset::Snapshot { at: 5, rowid: 2 },
        ..behind.clone()
    };
    assert!(read(&sql, &r).into_chunk().meta.must_refetch);
    let r = ShapeRead {
        handle: Some(old),
        offset: Offset::Snapshot { at: 10, rowid: 2 },
        ..behind
    };
    assert!(
        read(&sql, &r).into_chunk().meta.must_refetch,
        "a page of another snapshot"
    );
}

#[test]
fn writes_compact_by_size_and_age_in_batches() {
    let sql = NativeSql::open_in_memory().unwrap();
    Store::open(&sql).unwrap();
    // Fill the log straight to its cap (entries dated now), then write once more.
    sql.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO changes (tbl, op, key, row, old, at)
         SELECT 'tasks', 'insert', 'tsk_x', '{}', NULL, ? FROM n",
        &[(MAX_CHANGES + 50).into(), 1_000.into()],
    )
    .unwrap();
    task(&sql, json!({"title": "not yet"}));
    assert_eq!(
        entries(&sql).len() as i64,
        MAX_CHANGES + 51,
        "within the slack"
    );
    sql.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO changes (tbl, op, key, row, old, at)
         SELECT 'tasks', 'insert', 'tsk_x', '{}', NULL, 1000 FROM n",
        &[],
    )
    .unwrap();
    task(&sql, json!({"title": "now"}));
    let log = entries(&sql);
    assert_eq!(log.len() as i64, MAX_CHANGES);
    let tail = log.last().unwrap().lsn;
    assert_eq!(log[0].lsn, tail - MAX_CHANGES + 1);

    // A month later every entry is past its age: the next write drops them all but its own.
    let month = 31 * 24 * 3600 * 1000_i64;
    let call_at = |now: i64| {
        let call = OrgCall {
            org_id: "org_x".into(),
            actor: MEMBER.into(),
            op: OrgOp::ListStatuses,
        };
        Store::open(&sql).unwrap().call(call, now).unwrap();
    };
    sql.execute("UPDATE changes SET at = 1000", &[]).unwrap();
    call_at(1_000 + month);
    assert!(entries(&sql).is_empty());
    let c = compact(&sql, None, 1_000 + month);
    assert_eq!((c.min_lsn, c.tail_lsn), (tail + 1, tail));
}

#[test]
fn the_sessions_shape_fails_overdue_queued_sessions_first() {
    let sql = NativeSql::open_in_memory().unwrap();
    let p = project(&sql, "app");
    let s: Value = call(&sql, new_session(HOST_A, &p.id, 1)).unwrap();
    let r = start(Table::Sessions, Filter::default());
    let status = |now: i64| {
        let c = Store::open(&sql)
            .unwrap()
            .shape(&r, now)
            .unwrap()
            .into_chunk();
        messages(&c)[0]["value"]["status"].clone()
    };
    assert_eq!(status(1_000), "queued");
    assert_eq!(status(1_000 + 2_000 + 60_000), "failed");
    let log = entries(&sql);
    assert_eq!(log.last().map(|e| e.key.as_str()), s["id"].as_str());
}
