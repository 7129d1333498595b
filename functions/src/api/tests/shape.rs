//! Shapes through the router: who may read them, every malformed parameter a 400, the
//! protocol's headers, chunked catch-up ending up to date, the hosts mirror, compaction and
//! the 409 that follows it.

use super::{
    App, add_member, app, call, connect, machine, owner, pair, raw, second_org, sql as directory,
};
use serde_json::{Value, json};
use tether_durable::sql::Sql;
use tether_durable::sync::PAGE_ROWS;

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn messages(&self) -> &Vec<Value> {
        self.body
            .as_array()
            .unwrap_or_else(|| panic!("{}", self.body))
    }

    /// The rows' ids of the change messages, in order.
    fn ops(&self) -> Vec<(String, String)> {
        self.messages()
            .iter()
            .filter_map(|m| {
                Some((
                    m["headers"]["operation"].as_str()?.to_owned(),
                    m["value"]["id"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }
}

fn get(app: &App, cred: &str, path: &str) -> Answer {
    let res = raw(
        app,
        "GET",
        path,
        &[("authorization", &format!("Bearer {cred}"))],
        None,
    );
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    if status >= 400 && status != 409 {
        assert!(body["error"]["code"].is_string(), "error shape: {body}");
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn org_id(app: &App, key: &str) -> String {
    let (_, me) = call(app, "GET", "/v1/me", Some(key), None);
    me["org"]["id"].as_str().unwrap().to_owned()
}

fn shape(org: &str, query: &str) -> String {
    format!("/v1/orgs/{org}/shape?{query}")
}

fn new_task(app: &App, key: &str, title: &str) -> Value {
    let (s, t) = call(
        app,
        "POST",
        "/v1/tasks",
        Some(key),
        Some(json!({"title": title})),
    );
    assert_eq!(s, 201, "{t}");
    t
}

/// The next request of a client after `a`.
fn next(org: &str, table: &str, a: &Answer, live: bool) -> String {
    let mut q = format!(
        "table={table}&offset={}&handle={}",
        a.header("electric-offset").unwrap(),
        a.header("electric-handle").unwrap()
    );
    if live {
        q.push_str("&live=true&cursor=");
    }
    shape(org, &q)
}

#[test]
fn members_and_the_orgs_machines_read_shapes_and_nobody_else() {
    let app = app();
    let key = owner(&app);
    let org = org_id(&app, &key);
    let member = add_member(&app, &key, "bo@x.io", "member");
    let m = machine(1);
    let host = pair(&app, &key, &m);
    let host_token = connect(&app, &m, &host);
    let other = second_org(&app, &key);
    let path = shape(&org, "table=tasks&offset=-1");

    for cred in [&key, &member, &host_token] {
        assert_eq!(get(&app, cred, &path).status, 200);
    }
    let token = call(&app, "POST", "/v1/auth/token", Some(&member), None).1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&app, &token, &path).status, 200, "a member's JWT");
    // Another org's credential, and this org's credential on another org's id: not found.
    let a = get(&app, &other, &path);
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let a = get(&app, &key, &shape(&org_id(&app, &other), "table=tasks"));
    assert_eq!(a.status, 404);
    let res = raw(&app, "GET", &path, &[], None);
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(get(&app, "tk_garbage", &path).status, 401);
    let res = raw(&app, "POST", &path, &[("x-api-key", &key)], None);
    assert_eq!(res.status().as_u16(), 405);
    // A revoked machine's token no longer reads.
    let (s, _) = call(
        &app,
        "DELETE",
        &format!("/v1/hosts/{host}"),
        Some(&key),
        None,
    );
    assert_eq!(s, 204);
    assert_eq!(get(&app, &host_token, &path).status, 401);
}

#[test]
fn every_malformed_parameter_is_a_400() {
    let app = app();
    let key = owner(&app);
    let org = org_id(&app, &key);
    let handle = get(&app, &key, &shape(&org, "table=tasks"))
        .header("electric-handle")
        .unwrap()
        .to_owned();
    for (query, code) in [
        ("", "invalid_table"),
        ("table=members", "invalid_table"),
        ("table=tasks&where=title%20%3D%20%27x%27", "invalid_where"),
        (
            "table=tasks&where=status_id%20LIKE%20%27x%27",
            "invalid_where",
        ),
        ("table=tasks&where=status_id%20%3D%20%241", "invalid_where"),
        ("table=tasks&params%5B1%5D=x", "invalid_where"),
        ("table=tasks&params%5Bx%5D=x", "invalid_where"),
        ("table=tasks&offset=1", "invalid_offset"),
        ("table=tasks&offset=x_0", "invalid_offset"),
        ("table=tasks&offset=1_0", "invalid_handle"),
        (
            &format!("table=tasks&offset=-1&handle={handle}x"),
            "invalid_handle",
        ),
        ("table=tasks&live=true", "invalid_live"),
        ("table=tasks&live=1", "invalid_live"),
        ("table=tasks&nope=1", "invalid_query"),
        ("table=tasks&offset=-1&offset=now", "invalid_query"),
    ] {
        let a = get(&app, &key, &shape(&org, query));
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    let long = format!("table=tasks&where=id%20%3D%20%27{}%27", "x".repeat(1000));
    assert_eq!(
        get(&app, &key, &shape(&org, &long)).body["error"]["code"],
        "invalid_where"
    );
    let a = get(
        &app,
        &key,
        &shape(&org, "table=tasks&where=title%3D%27x%27"),
    );
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("status_id, project_id, assignee_id"), "{msg}");
}

#[test]
fn a_sync_catches_up_in_chunks_then_follows_changes() {
    let app = app();
    let key = owner(&app);
    let org = org_id(&app, &key);
    let first = new_task(&app, &key, "first");
    // Bulk rows straight into the org's object (the triggers log them like any write).
    let orgs = app.orgs.0.borrow();
    let store = &orgs[&org];
    store
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
             INSERT INTO tasks (id, number, slug, title, description, priority, status_id,
                                labels, created_at, updated_at)
             SELECT printf('tsk_%032x', i), i, 'TET-' || i, 'bulk ' || i, '', 'none',
                    (SELECT id FROM task_statuses LIMIT 1), '[]', 0, 0 FROM n",
            &[((PAGE_ROWS + 10) as i64).into()],
        )
        .unwrap();
    store
        .execute(
            "UPDATE counters SET value = ? WHERE name IN ('task_number', 'task_count')",
            &[((PAGE_ROWS + 10) as i64).into()],
        )
        .unwrap();
    drop(orgs);

    let a = get(&app, &key, &shape(&org, "table=public.tasks&offset=-1"));
    assert_eq!(a.status, 200);
    assert_eq!(a.messages().len(), PAGE_ROWS);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    let exposed = a.header("access-control-expose-headers").unwrap();
    for h in [
        "electric-offset",
        "electric-handle",
        "electric-schema",
        "electric-cursor",
        "electric-up-to-date",
    ] {
        assert!(exposed.contains(h), "{exposed}");
    }
    let schema: Value = serde_json::from_str(a.header("electric-schema").unwrap()).unwrap();
    assert_eq!(
        schema["id"],
        json!({"type": "text", "not_null": true, "pk_index": 0})
    );
    assert_eq!(schema["number"]["type"], "int4");
    assert!(a.header("electric-up-to-date").is_none());
    assert!(
        a.header("electric-offset")
            .unwrap()
            .ends_with(&format!("_{PAGE_ROWS}"))
    );
    let m = &a.messages()[0];
    assert_eq!(m["headers"]["operation"], "insert");
    assert_eq!(
        m["key"],
        format!("\"public\".\"tasks\"/\"{}\"", first["id"].as_str().unwrap())
    );
    assert_eq!(m["value"]["number"], "1");
    assert_eq!(m["value"]["created_at"], first["created_at"]);

    let b = get(&app, &key, &next(&org, "tasks", &a, false));
    assert_eq!(b.status, 200);
    let msgs = b.messages();
    assert_eq!(msgs.len(), 11, "the last 10 rows and up-to-date");
    assert_eq!(msgs[10], json!({"headers": {"control": "up-to-date"}}));
    assert_eq!(b.header("electric-up-to-date"), Some(""));
    assert_eq!(b.header("electric-handle"), a.header("electric-handle"));
    assert!(b.header("electric-schema").is_some());

    // Live: nothing new answers up-to-date at once here (the object would wait) with a
    // cursor and no schema; then changes come as insert, update and delete.
    let c = get(&app, &key, &next(&org, "tasks", &b, true));
    assert_eq!(c.status, 200);
    assert_eq!(
        c.messages(),
        &vec![json!({"headers": {"control": "up-to-date"}})]
    );
    assert!(c.header("electric-cursor").unwrap().parse::<i64>().is_ok());
    assert!(c.header("electric-schema").is_none());
    let t = new_task(&app, &key, "live");
    let id = t["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("/v1/tasks/{id}"),
        Some(&key),
        Some(json!({"title": "renamed"})),
    );
    assert_eq!(s, 200);
    let (s, _) = call(
        &app,
        "DELETE",
        &format!("/v1/tasks/{}", first["id"].as_str().unwrap()),
        Some(&key),
        None,
    );
    assert_eq!(s, 204);
    let d = get(&app, &key, &next(&org, "tasks", &c, true));
    assert_eq!(
        d.ops(),
        [
            ("insert".into(), id.clone()),
            ("update".into(), id.clone()),
            ("delete".into(), first["id"].as_str().unwrap().to_owned()),
        ]
    );
    assert_eq!(d.messages()[1]["value"]["title"], "renamed");
    assert_eq!(
        d.messages().last().unwrap()["headers"]["control"],
        "up-to-date"
    );

    // A filtered shape sees only its rows; now= skips history.
    let f = get(
        &app,
        &key,
        &shape(
            &org,
            &format!("table=tasks&where=id%20%3D%20%241&params%5B1%5D={id}"),
        ),
    );
    assert_eq!(f.ops(), [("insert".into(), id)]);
    assert_ne!(f.header("electric-handle"), a.header("electric-handle"));
    let n = get(&app, &key, &shape(&org, "table=tasks&offset=now"));
    assert_eq!(
        n.messages(),
        &vec![json!({"headers": {"control": "up-to-date"}})]
    );
    assert_eq!(n.header("electric-offset"), d.header("electric-offset"));
}

#[test]
fn compaction_is_for_admins_and_sends_stale_readers_back_with_a_409() {
    let app = app();
    let key = owner(&app);
    let org = org_id(&app, &key);
    let member = add_member(&app, &key, "bo@x.io", "member");
    new_task(&app, &key, "a");
    let a = get(&app, &key, &shape(&org, "table=tasks"));
    new_task(&app, &key, "b");
    new_task(&app, &key, "c");
    let compact = format!("/v1/orgs/{org}/sync/compact");
    assert_eq!(call(&app, "POST", &compact, Some(&member), None).0, 403);
    let (s, c) = call(&app, "POST", &compact, Some(&key), None);
    assert_eq!(
        (s, c["removed"].as_u64()),
        (200, Some(0)),
        "nothing is due: {c}"
    );
    assert_eq!(
        call(
            &app,
            "POST",
            &compact,
            Some(&key),
            Some(json!({"keep": -1}))
        )
        .0,
        422
    );
    assert_eq!(
        call(&app, "POST", &compact, Some(&key), Some(json!({"kept": 1}))).0,
        422
    );
    let other = second_org(&app, &key);
    assert_eq!(call(&app, "POST", &compact, Some(&other), None).0, 404);
    let (s, c) = call(&app, "POST", &compact, Some(&key), Some(json!({"keep": 0})));
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        c["min_lsn"].as_i64().unwrap(),
        c["tail_lsn"].as_i64().unwrap() + 1
    );
    assert!(c["removed"].as_u64().unwrap() >= 2);

    let stale = get(&app, &key, &next(&org, "tasks", &a, false));
    assert_eq!(stale.status, 409);
    assert_eq!(
        stale.body,
        json!([{"headers": {"control": "must-refetch"}}])
    );
    let fresh = stale.header("electric-handle").unwrap();
    assert_ne!(Some(fresh), a.header("electric-handle"));
    // Starting over with the new handle resyncs every row.
    let again = get(
        &app,
        &key,
        &shape(&org, &format!("table=tasks&offset=-1&handle={fresh}")),
    );
    assert_eq!(again.status, 200);
    assert_eq!(again.ops().len(), 3);
    assert_eq!(again.header("electric-handle"), Some(fresh));
}

#[test]
fn hosts_are_mirrored_from_the_directory() {
    let app = app();
    let key = owner(&app);
    let org = org_id(&app, &key);
    let h1 = pair(&app, &key, &machine(1));
    let h2 = pair(&app, &key, &machine(2));
    let a = get(&app, &key, &shape(&org, "table=hosts"));
    let mut ids: Vec<String> = a.ops().into_iter().map(|(_, id)| id).collect();
    ids.sort();
    let mut want = vec![h1.clone(), h2.clone()];
    want.sort();
    assert_eq!(ids, want);
    let row = &a.messages()[0]["value"];
    assert_eq!(row["os"], "linux");
    assert!(
        row["agents"].as_str().unwrap().contains("claude"),
        "jsonb as its JSON text"
    );
    assert_eq!(row["revoked_at"], Value::Null);

    // A revocation reaches a live reader as an update.
    assert_eq!(
        call(&app, "DELETE", &format!("/v1/hosts/{h1}"), Some(&key), None).0,
        204
    );
    let b = get(&app, &key, &next(&org, "hosts", &a, true));
    assert_eq!(b.ops(), [("update".into(), h1.clone())]);
    assert!(b.messages()[0]["value"]["revoked_at"].is_string());
    // A host gone from the directory (the cron purges old revoked ones) is deleted by the
    // next initial read, and readers see the delete.
    directory(&app, &format!("DELETE FROM hosts WHERE id = '{h1}'"));
    let c = get(&app, &key, &shape(&org, "table=hosts"));
    assert_eq!(c.ops(), [("insert".into(), h2.clone())]);
    let d = get(&app, &key, &next(&org, "hosts", &b, false));
    assert_eq!(d.ops(), [("delete".into(), h1)]);
}
