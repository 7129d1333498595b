//! Automations through the router, and the cron's tick against the real org store.

use super::{
    App, add_member, app, call, connect, futures_lite_block_on, machine, owner, pair, second_org,
};
use crate::api::automations::tick;
use serde_json::{Value, json};
use tether_durable::sql::Sql;

fn ms(s: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// An org with project "app" linked on a paired host; answers (owner key, host id).
fn linked(app: &App) -> (String, String) {
    let key = owner(app);
    let m = machine(1);
    let host = pair(app, &key, &m);
    let token = connect(app, &m, &host);
    let (s, l) = call(
        app,
        "POST",
        &format!("/v1/hosts/{host}/links"),
        Some(&token),
        Some(json!({"project": "app", "path": "/src/app", "create": true})),
    );
    assert_eq!(s, 200, "{l}");
    (key, host)
}

fn due_row(app: &App) -> Option<(Option<i64>, i64)> {
    #[derive(serde::Deserialize)]
    struct Row {
        next_due: Option<i64>,
        version: i64,
    }
    let rows: Vec<Row> = app
        .db
        .0
        .query("SELECT next_due, version FROM automation_schedules", &[])
        .unwrap();
    rows.into_iter().next().map(|r| (r.next_due, r.version))
}

#[test]
fn the_tick_starts_each_due_run_once_and_records_it() {
    let app = app();
    let (key, host) = linked(&app);
    let (s, a) = call(
        &app,
        "POST",
        "/v1/automations",
        Some(&key),
        Some(json!({
            "name": "Nightly triage", "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
            "timezone": "Europe/Berlin", "project": "app", "host": host,
            "agent": "claude", "prompt": "Triage new issues."
        })),
    );
    assert_eq!(s, 201, "{a}");
    let next = ms(&a["next_run_at"]);
    assert_eq!(
        a["project_id"].as_str().map(|p| p.starts_with("prj_")),
        Some(true)
    );
    assert_eq!(due_row(&app).map(|r| r.0), Some(Some(next)), "indexed");

    // Nothing due a minute before.
    let t = futures_lite_block_on(tick(&app, next - 60_000)).unwrap();
    assert_eq!((t.orgs, t.dispatched), (0, 0));
    // At its time: one session, started on the host with the prompt, on its own branch.
    let t = futures_lite_block_on(tick(&app, next + 5_000)).unwrap();
    assert_eq!(
        (t.orgs, t.dispatched, t.failed),
        (1, 1, 0),
        "{:?}",
        t.errors
    );
    // The same tick again: nothing twice.
    let t = futures_lite_block_on(tick(&app, next + 5_000)).unwrap();
    assert_eq!((t.orgs, t.dispatched), (0, 0));

    let (s, runs) = call(
        &app,
        "GET",
        "/v1/automations/nightly%20triage/runs",
        Some(&key),
        None,
    );
    assert_eq!(s, 200, "{runs}");
    let runs = runs["data"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "dispatched");
    assert_eq!(runs[0]["trigger"], "schedule");
    let sid = runs[0]["session_id"].as_str().unwrap();
    let (_, ses) = call(
        &app,
        "GET",
        &format!("/v1/sessions/{sid}"),
        Some(&key),
        None,
    );
    assert_eq!(ses["prompt"], "Triage new issues.");
    assert_eq!(ses["host_id"], host.as_str());
    assert_eq!(ses["created_by"], a["id"]);
    assert!(
        ses["branch"]
            .as_str()
            .unwrap()
            .starts_with("tether/auto-nightly-triage-")
    );
    let (_, a2) = call(
        &app,
        "GET",
        &format!("/v1/automations/{}", a["id"].as_str().unwrap()),
        Some(&key),
        None,
    );
    assert_eq!(ms(&a2["next_run_at"]) - next, 24 * 3600 * 1000, "{a2}");
    assert_eq!(
        due_row(&app).map(|r| r.0),
        Some(Some(ms(&a2["next_run_at"])))
    );

    // A run now, with a rolled-back prompt; a run that cannot start says why.
    let path = "/v1/automations/Nightly%20triage";
    let (s, v) = call(
        &app,
        "PUT",
        &format!("{path}/prompt"),
        Some(&key),
        Some(json!({"prompt": "v2"})),
    );
    assert_eq!((s, v["version"].as_i64()), (200, Some(2)), "{v}");
    let (s, v) = call(
        &app,
        "POST",
        &format!("{path}/prompt/rollback"),
        Some(&key),
        Some(json!({"version": 1})),
    );
    assert_eq!(
        (s, v["prompt"].as_str()),
        (200, Some("Triage new issues.")),
        "{v}"
    );
    let (s, run) = call(&app, "POST", &format!("{path}/run"), Some(&key), None);
    assert_eq!(
        (s, run["trigger"].as_str(), run["status"].as_str()),
        (201, Some("manual"), Some("dispatched")),
        "{run}"
    );
    call(
        &app,
        "PATCH",
        path,
        Some(&key),
        Some(json!({"host": "any"})),
    );
    let (_, run) = call(&app, "POST", &format!("{path}/run"), Some(&key), None);
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"].as_str().unwrap().starts_with("no_host_online"),
        "{run}"
    );

    // Pausing empties the index; resuming fills it.
    let (_, p) = call(&app, "POST", &format!("{path}/pause"), Some(&key), None);
    assert_eq!(
        (p["paused"].as_bool(), &p["next_run_at"]),
        (Some(true), &Value::Null)
    );
    assert_eq!(due_row(&app).map(|r| r.0), Some(None));
    let before = due_row(&app).unwrap().1;
    let (_, r) = call(&app, "POST", &format!("{path}/resume"), Some(&key), None);
    assert!(r["next_run_at"].is_string());
    assert!(due_row(&app).unwrap().1 > before, "the version grows");
}

#[test]
fn automations_are_checked_and_private_to_their_org() {
    let app = app();
    let (key, host) = linked(&app);
    let create = |k: &str, body: Value| call(&app, "POST", "/v1/automations", Some(k), Some(body));
    let good = json!({"name": "n", "rrule": "FREQ=HOURLY", "project": "app", "agent": "claude", "prompt": "p"});
    for (patch, field) in [
        (json!({"rrule": "FREQ=SECONDLY"}), "rrule"),
        (json!({"rrule": "FREQ=DAILY;COUNT=2"}), "rrule"),
        (json!({"timezone": "Moon/Base"}), "timezone"),
        (json!({"starts_at": "soon"}), "starts_at"),
        (json!({"project": "nope"}), "project"),
        (
            json!({"host": "hst_00000000000000000000000000000000"}),
            "host",
        ),
        (json!({"agent": "Bad Agent"}), "agent"),
        (json!({"prompt": ""}), "prompt"),
    ] {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, e) = create(&key, body);
        assert_eq!(
            (s, e["error"]["details"]["field"].as_str()),
            (422, Some(field)),
            "{e}"
        );
    }
    let mut unknown = good.clone();
    unknown["color"] = json!("red");
    assert_eq!(create(&key, unknown).0, 422);
    let (s, a) = create(&key, good.clone());
    assert_eq!(s, 201, "{a}");
    assert_eq!(create(&key, good.clone()).1["error"]["code"], "name_taken");
    let id = a["id"].as_str().unwrap();

    // Members may; another org sees nothing.
    let member = add_member(&app, &key, "bo@x.io", "member");
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/v1/automations/{id}"),
            Some(&member),
            None
        )
        .0,
        200
    );
    let other = second_org(&app, &key);
    for (method, path) in [
        ("GET", format!("/v1/automations/{id}")),
        ("PATCH", format!("/v1/automations/{id}")),
        ("POST", format!("/v1/automations/{id}/run")),
        ("GET", format!("/v1/automations/{id}/runs")),
        ("GET", format!("/v1/automations/{id}/prompt")),
        ("DELETE", format!("/v1/automations/{id}")),
    ] {
        let body = (method == "PATCH").then(|| json!({"name": "x"}));
        assert_eq!(
            call(&app, method, &path, Some(&other), body).0,
            404,
            "{method} {path}"
        );
    }
    let (_, list) = call(&app, "GET", "/v1/automations", Some(&other), None);
    assert_eq!(list["data"], json!([]));
    // Another org cannot target this org's host either.
    let mut theirs = good.clone();
    theirs["host"] = json!(host);
    theirs["project"] = json!("x");
    assert_eq!(create(&other, theirs).0, 422);
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/automations/{id}"),
            Some(&key),
            None
        )
        .0,
        204
    );
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/v1/automations/{id}"),
            Some(&key),
            None
        )
        .0,
        404
    );
    assert_eq!(
        call(&app, "PUT", "/v1/automations/x/pause", Some(&key), None).0,
        405
    );
}
