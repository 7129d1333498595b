//! Automations end to end on the Worker in workerd with a real daemon: the cron trigger
//! (fired at chosen times through Miniflare's scheduled handler) starts a due automation's
//! session on the machine exactly once per occurrence, 09:00 Europe/Berlin stays 09:00 across
//! the spring DST change, runs are logged with their outcome, and the MCP tools run, version
//! and roll back the same automation.

use serde_json::{Value, json};
use std::time::Duration;
use tether_tests::{Api, HostHome, TetherDaemon, agent_transcript, poll_until, session_machine};

/// Fires the every-minute cron as if it were `at` (RFC 3339).
async fn tick(url: &str, at: &str) {
    let ms = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp_millis();
    let res = reqwest::get(format!(
        "{url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*&time={ms}"
    ))
    .await
    .unwrap();
    let status = res.status().as_u16();
    assert_eq!(status, 200, "{}", res.text().await.unwrap_or_default());
}

async fn runs(api: &Api) -> Vec<Value> {
    let (s, v) = api.get("/v1/automations/Morning%20check/runs").await;
    assert_eq!(s, 200, "{v}");
    v["data"].as_array().unwrap().clone()
}

/// Waits for the session to run the fake agent with `prompt`, then stops it.
async fn ran_with(api: &Api, home: &HostHome, id: &str, prompt: &str) {
    poll_until(
        "the automation's agent to start",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let screen = String::from_utf8_lossy(&agent_transcript(home, id)).into_owned();
            if screen.contains(prompt) {
                Ok(())
            } else {
                let (_, s) = api.get(&format!("/v1/sessions/{id}")).await;
                Err(format!("{s}\n{screen}"))
            }
        },
    )
    .await;
    let (s, v) = api
        .post(&format!("/v1/sessions/{id}/stop"), json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
}

#[tokio::test]
async fn the_cron_runs_due_automations_once_on_a_real_machine_across_dst() {
    let (url, key) = crate::fresh_org("Scheduled", "SCH").await;
    let api = Api::new(&url, &key);
    let home = HostHome::new("auto");
    let host = session_machine(&api, &url, &home, "auto", "")
        .await
        .unwrap();
    let mut daemon = TetherDaemon::start(&home).unwrap();

    // 09:00 in Berlin every day, counted from 2027-03-26 (CET, UTC+1; summer time from the
    // 28th).
    let (s, a) = api
        .post(
            "/v1/automations",
            json!({"name": "Morning check", "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
                   "timezone": "Europe/Berlin", "starts_at": "2027-03-26T09:00",
                   "project": "app", "host": host, "agent": "fake",
                   "prompt": "Check the overnight build."}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["next_run_at"], "2027-03-26T08:00:00.000Z");

    // A minute early: nothing.
    tick(&url, "2027-03-26T07:59:00Z").await;
    assert!(runs(&api).await.is_empty());
    // Due: one session on the machine, with the prompt.
    tick(&url, "2027-03-26T08:00:00Z").await;
    let first = runs(&api).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        (
            &first[0]["status"],
            &first[0]["trigger"],
            &first[0]["scheduled_for"]
        ),
        (
            &json!("dispatched"),
            &json!("schedule"),
            &json!("2027-03-26T08:00:00.000Z")
        ),
        "{first:?}"
    );
    let sid = first[0]["session_id"].as_str().unwrap().to_owned();
    ran_with(&api, &home, &sid, "Check the overnight build.").await;
    // The same tick delivered again (a retry) runs nothing twice.
    tick(&url, "2027-03-26T08:00:00Z").await;
    tick(&url, "2027-03-26T08:00:40Z").await;
    assert_eq!(runs(&api).await.len(), 1);
    let (_, a) = api
        .get(&format!("/v1/automations/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(a["next_run_at"], "2027-03-27T08:00:00.000Z");

    // The next day's run; after it, 09:00 is summer time: 07:00 UTC.
    tick(&url, "2027-03-27T08:00:00Z").await;
    let (_, a) = api.get("/v1/automations/Morning%20check").await;
    assert_eq!(a["next_run_at"], "2027-03-28T07:00:00.000Z", "{a}");
    let second = runs(&api).await;
    assert_eq!(second.len(), 2);
    let sid2 = second[0]["session_id"].as_str().unwrap().to_owned();
    assert_ne!(sid, sid2);
    ran_with(&api, &home, &sid2, "Check the overnight build.").await;
    let (_, ses) = api.get(&format!("/v1/sessions/{sid2}")).await;
    assert_eq!(ses["created_by"], a["id"]);
    assert!(
        ses["branch"]
            .as_str()
            .unwrap()
            .starts_with("tether/auto-morning-check-"),
        "{ses}"
    );

    // Through MCP: a new prompt version, a rollback, a run now and the log.
    let (err, v) = crate::mcp_tool(
        &api,
        "automations_set_prompt",
        json!({"automation": "Morning check", "prompt": "Check the build and the flaky tests."}),
    )
    .await;
    assert!(!err && v["version"] == 2, "{v}");
    let (err, run) = crate::mcp_tool(
        &api,
        "automations_run",
        json!({"automation": "Morning check"}),
    )
    .await;
    assert!(!err && run["status"] == "dispatched", "{run}");
    let sid3 = run["session_id"].as_str().unwrap().to_owned();
    ran_with(&api, &home, &sid3, "Check the build and the flaky tests.").await;
    let (_, v) = crate::mcp_tool(
        &api,
        "automations_set_prompt",
        json!({"automation": "Morning check", "rollback_to": 1}),
    )
    .await;
    assert_eq!(v["prompt"], "Check the overnight build.", "{v}");
    let (_, logs) = crate::mcp_tool(
        &api,
        "automations_logs",
        json!({"automation": "Morning check"}),
    )
    .await;
    let triggers: Vec<&str> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, ["manual", "schedule", "schedule"], "{logs}");

    // Paused: the next occurrence passes without a run.
    let (s, _) = api
        .post("/v1/automations/Morning%20check/pause", json!({}))
        .await;
    assert_eq!(s, 200);
    tick(&url, "2027-03-28T07:00:00Z").await;
    assert_eq!(runs(&api).await.len(), 3);
    daemon.stop().await;
}
