//! Automations: schedules, the cron's claim (never twice for one occurrence), pausing,
//! prompt versions and runs.

use super::MEMBER;
use crate::automation::*;
use crate::error::StoreError;
use crate::org::model::{CreateProject, Page, PageQuery, Project};
use crate::org::store::Store;
use crate::org::{OrgCall, OrgOp};
use crate::sql::NativeSql;
use serde::de::DeserializeOwned;

fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

fn at<T: DeserializeOwned>(sql: &NativeSql, op: OrgOp, now: i64) -> Result<T, StoreError> {
    let call = OrgCall {
        org_id: "org_x".into(),
        actor: MEMBER.into(),
        op,
    };
    let call: OrgCall = serde_json::from_value(serde_json::to_value(call).unwrap()).unwrap();
    Store::open(sql)?
        .call(call, now)
        .map(|v| serde_json::from_slice(&v).unwrap())
}

/// An org with project "app" and, created on 2026-10-20 at noon UTC, "nightly": 09:00
/// Europe/Berlin every day from 2026-10-21.
fn setup() -> (NativeSql, Automation) {
    let sql = NativeSql::open_in_memory().unwrap();
    let now = ms("2026-10-20T12:00:00Z");
    let p: Project = at(
        &sql,
        OrgOp::CreateProject(CreateProject {
            name: "app".into(),
            repo_url: None,
            default_branch: None,
        }),
        now,
    )
    .unwrap();
    let a: Automation = at(&sql, OrgOp::CreateAutomation(new(&p.id, "nightly")), now).unwrap();
    (sql, a)
}

fn new(project_id: &str, name: &str) -> NewAutomation {
    NewAutomation {
        name: name.into(),
        rrule: "FREQ=DAILY;BYHOUR=9;BYMINUTE=0".into(),
        timezone: "Europe/Berlin".into(),
        starts_at: Some("2026-10-21T09:00".into()),
        target: Target {
            project_id: project_id.into(),
            host: "any".into(),
            agent: "claude".into(),
            base_branch: None,
        },
        prompt: "Triage new issues.".into(),
        paused: false,
    }
}

fn claim(sql: &NativeSql, tick: &str) -> Vec<Claim> {
    at(sql, OrgOp::ClaimDueAutomations { at: ms(tick) }, ms(tick)).unwrap()
}

/// The org's schedule, as a write answers it.
fn schedule(sql: &NativeSql) -> ScheduleState {
    let op = OrgOp::WithSchedule(Box::new(OrgOp::ListAutomations(PageQuery::default())));
    at::<Scheduled<serde_json::Value>>(sql, op, 0)
        .unwrap()
        .schedule
}

fn get(sql: &NativeSql, key: &str) -> Automation {
    at(sql, OrgOp::GetAutomation { key: key.into() }, 0).unwrap()
}

#[test]
fn the_cron_claims_each_occurrence_once_across_the_dst_change() {
    let (sql, a) = setup();
    assert_eq!(
        a.next_run_at.as_deref(),
        Some("2026-10-21T07:00:00.000Z"),
        "09:00 CEST"
    );
    assert_eq!(a.starts_at, "2026-10-21T09:00:00");
    assert_eq!(a.prompt_version, 1);
    assert!(
        claim(&sql, "2026-10-21T06:59:00Z").is_empty(),
        "not yet due"
    );

    let c = claim(&sql, "2026-10-21T07:00:30Z");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].run.status, RunStatus::Dispatching);
    assert_eq!(c[0].run.trigger, Trigger::Schedule);
    assert_eq!(
        c[0].run.scheduled_for.as_deref(),
        Some("2026-10-21T07:00:00.000Z")
    );
    assert_eq!(
        (c[0].prompt.as_str(), c[0].target.agent.as_str()),
        ("Triage new issues.", "claude")
    );
    // The same tick retried finds nothing: the claim moved next_run_at in its transaction.
    assert!(claim(&sql, "2026-10-21T07:00:30Z").is_empty());
    assert_eq!(
        get(&sql, "nightly").next_run_at.as_deref(),
        Some("2026-10-22T07:00:00.000Z")
    );

    // Ticks missed for three days: one run for the latest, then on to the next occurrence,
    // which after 2026-10-25 is 09:00 CET, an hour later in UTC.
    let c = claim(&sql, "2026-10-25T08:00:10Z");
    assert_eq!(c.len(), 1, "missed occurrences are not run one by one");
    assert_eq!(
        c[0].run.scheduled_for.as_deref(),
        Some("2026-10-22T07:00:00.000Z")
    );
    let a = get(&sql, &a.id);
    assert_eq!(a.next_run_at.as_deref(), Some("2026-10-26T08:00:00.000Z"));
    assert_eq!(a.last_run_at.as_deref(), Some("2026-10-25T08:00:10.000Z"));
    let state: ScheduleState = schedule(&sql);
    assert_eq!(state.next_due_ms, Some(ms("2026-10-26T08:00:00Z")));

    // The Worker reports the dispatch once.
    let run_id = c[0].run.id.clone();
    let done: Run = at(
        &sql,
        OrgOp::FinishRun {
            run_id: run_id.clone(),
            outcome: RunOutcome::Dispatched {
                session_id: "ses_1".into(),
            },
        },
        ms("2026-10-25T08:00:11Z"),
    )
    .unwrap();
    assert_eq!(
        (done.status, done.session_id.as_deref()),
        (RunStatus::Dispatched, Some("ses_1"))
    );
    let again = at::<Run>(
        &sql,
        OrgOp::FinishRun {
            run_id,
            outcome: RunOutcome::Failed { error: "x".into() },
        },
        0,
    );
    assert!(matches!(
        again,
        Err(StoreError::Conflict {
            code: "run_finished",
            ..
        })
    ));

    // The first run was never reported: a later tick fails it as lost.
    claim(&sql, "2026-10-26T08:30:00Z");
    let runs: Page<Run> = at(
        &sql,
        OrgOp::ListRuns {
            key: "nightly".into(),
            page: PageQuery::default(),
        },
        0,
    )
    .unwrap();
    let statuses: Vec<RunStatus> = runs.data.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            RunStatus::Dispatching,
            RunStatus::Dispatched,
            RunStatus::Failed
        ],
        "newest first"
    );
    assert!(
        runs.data[2]
            .error
            .as_deref()
            .unwrap()
            .starts_with("dispatch_lost")
    );
}

#[test]
fn paused_automations_do_not_run_and_resume_at_the_next_occurrence() {
    let (sql, a) = setup();
    let paused: Automation = at(
        &sql,
        OrgOp::SetAutomationPaused {
            key: a.id.clone(),
            paused: true,
        },
        ms("2026-10-20T13:00:00Z"),
    )
    .unwrap();
    assert!(paused.paused && paused.next_run_at.is_none());
    let state: ScheduleState = schedule(&sql);
    assert_eq!(state.next_due_ms, None);
    assert!(claim(&sql, "2026-10-23T12:00:00Z").is_empty());
    let resumed: Automation = at(
        &sql,
        OrgOp::SetAutomationPaused {
            key: a.id.clone(),
            paused: false,
        },
        ms("2026-10-23T12:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        resumed.next_run_at.as_deref(),
        Some("2026-10-24T07:00:00.000Z")
    );
    assert!(state.version < schedule(&sql).version);

    // A manual run works while paused too, and leaves the schedule alone.
    let c: Claim = at(
        &sql,
        OrgOp::StartManualRun {
            key: "NIGHTLY".into(),
        },
        5,
    )
    .unwrap();
    assert_eq!(
        (c.run.trigger, c.run.scheduled_for.as_deref()),
        (Trigger::Manual, None)
    );
    assert_eq!(
        get(&sql, &a.id).next_run_at.as_deref(),
        Some("2026-10-24T07:00:00.000Z")
    );

    // Changing the rule reschedules from its (new) start.
    let changed: Automation = at(
        &sql,
        OrgOp::UpdateAutomation {
            key: a.id.clone(),
            patch: AutomationPatch {
                rrule: Some("FREQ=WEEKLY;BYDAY=MO;BYHOUR=6".into()),
                timezone: Some("UTC".into()),
                ..AutomationPatch::default()
            },
        },
        ms("2026-10-23T12:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        changed.next_run_at.as_deref(),
        Some("2026-10-26T06:00:00.000Z")
    );
    assert_eq!(changed.rrule, "FREQ=WEEKLY;BYHOUR=6;BYDAY=MO");
}

#[test]
fn prompts_are_versioned_and_roll_back() {
    let (sql, a) = setup();
    let set = |prompt: &str| -> PromptVersion {
        at(
            &sql,
            OrgOp::SetPrompt {
                key: a.id.clone(),
                prompt: prompt.into(),
            },
            7,
        )
        .unwrap()
    };
    assert_eq!(set("Triage and label new issues.").version, 2);
    let v3 = set("Triage, label and assign.");
    assert_eq!((v3.version, v3.active), (3, true));
    assert_eq!(
        set("Triage, label and assign.").version,
        3,
        "same text: no new version"
    );
    let back: PromptVersion = at(
        &sql,
        OrgOp::RollbackPrompt {
            key: a.id.clone(),
            version: 1,
        },
        8,
    )
    .unwrap();
    assert_eq!(
        (back.version, back.prompt.as_str()),
        (1, "Triage new issues.")
    );
    let a2 = get(&sql, &a.id);
    assert_eq!(
        (a2.prompt_version, a2.prompt.as_str()),
        (1, "Triage new issues.")
    );
    let versions: Vec<PromptVersion> =
        at(&sql, OrgOp::ListPromptVersions { key: a.id.clone() }, 0).unwrap();
    let summary: Vec<(i64, bool)> = versions.iter().map(|v| (v.version, v.active)).collect();
    assert_eq!(summary, [(3, false), (2, false), (1, true)]);
    let v2: PromptVersion = at(
        &sql,
        OrgOp::GetPromptVersion {
            key: a.id.clone(),
            version: Some(2),
        },
        0,
    )
    .unwrap();
    assert_eq!(v2.prompt, "Triage and label new issues.");
    // Claims use the active version.
    let c = claim(&sql, "2026-10-21T07:00:00Z");
    assert_eq!(
        (c[0].prompt.as_str(), c[0].run.prompt_version),
        ("Triage new issues.", 1)
    );
    for bad in [
        OrgOp::RollbackPrompt {
            key: a.id.clone(),
            version: 9,
        },
        OrgOp::SetPrompt {
            key: a.id.clone(),
            prompt: " ".into(),
        },
        OrgOp::SetPrompt {
            key: a.id.clone(),
            prompt: "x".repeat(20_001),
        },
    ] {
        assert!(matches!(
            at::<PromptVersion>(&sql, bad, 0),
            Err(StoreError::Invalid { .. })
        ));
    }
    // Only the newest versions are kept, and never the active one is dropped.
    for i in 0..MAX_PROMPT_VERSIONS + 5 {
        set(&format!("prompt {i}"));
    }
    let versions: Vec<PromptVersion> =
        at(&sql, OrgOp::ListPromptVersions { key: a.id.clone() }, 0).unwrap();
    assert_eq!(versions.len() as i64, MAX_PROMPT_VERSIONS);
}

#[test]
fn automations_are_checked_named_uniquely_capped_and_deleted_whole() {
    let (sql, a) = setup();
    let base = new(&a.target.project_id, "other");
    let bad = |f: &dyn Fn(&mut NewAutomation)| {
        let mut n = base.clone();
        f(&mut n);
        at::<Automation>(&sql, OrgOp::CreateAutomation(n), ms("2026-10-20T12:00:00Z")).unwrap_err()
    };
    assert!(matches!(
        bad(&|n| n.name = "NIGHTLY".into()),
        StoreError::Conflict {
            code: "name_taken",
            ..
        }
    ));
    for (f, field) in [
        (
            &(|n: &mut NewAutomation| n.rrule = "FREQ=SECONDLY".into())
                as &dyn Fn(&mut NewAutomation),
            "rrule",
        ),
        (
            &|n: &mut NewAutomation| n.timezone = "Nowhere/City".into(),
            "timezone",
        ),
        (
            &|n: &mut NewAutomation| n.starts_at = Some("tomorrow".into()),
            "starts_at",
        ),
        (
            &|n: &mut NewAutomation| n.target.host = "laptop".into(),
            "host",
        ),
        (
            &|n: &mut NewAutomation| {
                n.target.project_id = "prj_00000000000000000000000000000000".into()
            },
            "project",
        ),
        (&|n: &mut NewAutomation| n.prompt = String::new(), "prompt"),
        (
            &|n: &mut NewAutomation| n.target.base_branch = Some("a..b".into()),
            "base_branch",
        ),
        (
            &|n: &mut NewAutomation| n.rrule = "FREQ=DAILY;UNTIL=20261001T000000Z".into(),
            "rrule",
        ),
    ] {
        match bad(f) {
            StoreError::Invalid { field: got, .. } => assert_eq!(got, field),
            e => panic!("{field}: {e:?}"),
        }
    }
    // Deleting takes the prompts and runs with it.
    claim(&sql, "2026-10-21T07:00:00Z");
    at::<()>(
        &sql,
        OrgOp::DeleteAutomation {
            key: "nightly".into(),
        },
        0,
    )
    .unwrap();
    assert!(matches!(
        at::<Automation>(&sql, OrgOp::GetAutomation { key: a.id.clone() }, 0),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        at::<Page<Run>>(
            &sql,
            OrgOp::ListRuns {
                key: a.id,
                page: PageQuery::default()
            },
            0
        ),
        Err(StoreError::NotFound { .. })
    ));
    // The cap.
    for i in 0..MAX_AUTOMATIONS {
        at::<Automation>(
            &sql,
            OrgOp::CreateAutomation(new(&base.target.project_id, &format!("a{i}"))),
            0,
        )
        .unwrap();
    }
    assert!(matches!(
        at::<Automation>(
            &sql,
            OrgOp::CreateAutomation(new(&base.target.project_id, "one more")),
            0
        ),
        Err(StoreError::Conflict {
            code: "limit_exceeded",
            ..
        })
    ));
}
