//! Guardrail policies and the decisions machines report.

use super::{HOST_A, HOST_B, MEMBER};
use crate::error::StoreError;
use crate::org::store::{Count, Store};
use crate::org::{OrgCall, OrgOp};
use crate::policy::*;
use crate::sql::{NativeSql, Sql};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const NOW: i64 = 1_000_000;

fn call_at<T: DeserializeOwned>(sql: &NativeSql, op: OrgOp, now: i64) -> Result<T, StoreError> {
    let call = OrgCall {
        org_id: "org_x".into(),
        actor: MEMBER.into(),
        op,
    };
    // Through JSON, like the Worker -> Durable Object hop.
    let call: OrgCall = serde_json::from_value(serde_json::to_value(call).unwrap()).unwrap();
    Store::open(sql)?
        .call(call, now)
        .map(|v| serde_json::from_slice(&v).unwrap())
}

fn call<T: DeserializeOwned>(sql: &NativeSql, op: OrgOp) -> Result<T, StoreError> {
    call_at(sql, op, NOW)
}

/// A component preamble and `body`: all the store looks at.
fn component(body: &[u8]) -> Vec<u8> {
    [&COMPONENT_HEADER[..], body].concat()
}

fn new_policy(name: &str, wasm: &[u8], position: Option<i64>) -> NewPolicy {
    NewPolicy {
        name: name.into(),
        wasm_base64: STANDARD.encode(wasm),
        // The Worker hashes; the store only keeps the hash, so any well-formed one will do.
        sha256: format!("{:064x}", wasm.len()),
        config: serde_json::Map::new(),
        failure: Failure::Deny,
        position,
    }
}

fn put(sql: &NativeSql, p: NewPolicy) -> Result<PutAnswer, StoreError> {
    call(sql, OrgOp::PutPolicy(p))
}

fn names(sql: &NativeSql) -> Vec<String> {
    let list: PolicyList = call(sql, OrgOp::ListPolicies).unwrap();
    list.policies.into_iter().map(|p| p.name).collect()
}

fn code(e: &StoreError) -> (u16, String) {
    let (status, body) = e.to_response();
    (status, body.error.code)
}

#[test]
fn policies_are_created_replaced_patched_ordered_and_deleted() {
    let sql = NativeSql::open_in_memory().unwrap();
    let first = put(&sql, new_policy("secret-guard", &component(b"v1"), None)).unwrap();
    assert!(first.created);
    assert_eq!(first.policy.position, 0, "the first goes first");
    assert_eq!(first.policy.size, 10);
    assert_eq!(first.policy.failure, Failure::Deny);
    assert_eq!(first.policy.created_by, MEMBER);
    let second = put(&sql, new_policy("command-guard", &component(b"x"), None)).unwrap();
    assert_eq!(second.policy.position, 1, "after the last");
    put(&sql, new_policy("audit", &component(b"y"), Some(0))).unwrap();
    // By position, then name.
    assert_eq!(names(&sql), ["audit", "secret-guard", "command-guard"]);

    // A replacement is whole (config back to the default) but keeps its place and creation.
    let mut replace = new_policy("secret-guard", &component(b"version 2"), None);
    replace.failure = Failure::Allow;
    let later = call_at::<PutAnswer>(&sql, OrgOp::PutPolicy(replace), NOW + 5).unwrap();
    assert!(!later.created);
    assert_eq!(
        (
            later.policy.position,
            later.policy.size,
            later.policy.failure
        ),
        (0, 17, Failure::Allow)
    );
    assert_eq!(later.policy.created_at, first.policy.created_at);
    assert_ne!(later.policy.updated_at, first.policy.updated_at);
    assert_ne!(later.policy.sha256, first.policy.sha256);

    // A patch changes only what it names.
    let patch: UpdatePolicy = serde_json::from_value(
        json!({"config": {"mode": "deny", "paths": ["~/.ssh"]}, "position": 7}),
    )
    .unwrap();
    let patched: PolicyMeta = call(
        &sql,
        OrgOp::UpdatePolicy {
            name: "secret-guard".into(),
            patch,
        },
    )
    .unwrap();
    assert_eq!(
        Value::Object(patched.config.clone()),
        json!({"mode": "deny", "paths": ["~/.ssh"]})
    );
    assert_eq!((patched.position, patched.failure), (7, Failure::Allow));
    assert_eq!(patched.sha256, later.policy.sha256);
    let read: PolicyMeta = call(
        &sql,
        OrgOp::GetPolicy {
            name: "secret-guard".into(),
        },
    )
    .unwrap();
    assert_eq!(read, patched);
    assert_eq!(names(&sql), ["audit", "command-guard", "secret-guard"]);

    let gone = |name: &str| {
        let e = call::<PolicyMeta>(&sql, OrgOp::GetPolicy { name: name.into() }).unwrap_err();
        matches!(e, StoreError::NotFound { what: "policy" })
    };
    call::<()>(
        &sql,
        OrgOp::DeletePolicy {
            name: "audit".into(),
        },
    )
    .unwrap();
    assert!(gone("audit"));
    assert!(gone("Not A Name"), "an impossible name is simply not there");
    for op in [
        OrgOp::DeletePolicy {
            name: "audit".into(),
        },
        OrgOp::UpdatePolicy {
            name: "audit".into(),
            patch: UpdatePolicy::default(),
        },
        OrgOp::PolicyWasm {
            name: "audit".into(),
            sha256: None,
        },
    ] {
        assert_eq!(
            code(&call::<Value>(&sql, op).unwrap_err()),
            (404, "not_found".into())
        );
    }
    assert_eq!(names(&sql), ["command-guard", "secret-guard"]);
}

#[test]
fn the_binary_comes_back_exactly_unless_it_changed() {
    let sql = NativeSql::open_in_memory().unwrap();
    // Every byte value, so nothing is lost to a text encoding on the way.
    let wasm = component(&(0..=255u8).cycle().take(70_000).collect::<Vec<_>>());
    let meta = put(&sql, new_policy("p", &wasm, None)).unwrap().policy;
    let download = |sha256: Option<&str>| {
        call::<PolicyWasm>(
            &sql,
            OrgOp::PolicyWasm {
                name: "p".into(),
                sha256: sha256.map(Into::into),
            },
        )
    };
    let got = download(None).unwrap();
    assert_eq!(STANDARD.decode(&got.wasm_base64).unwrap(), wasm);
    assert_eq!(got.sha256, meta.sha256);
    assert!(download(Some(&meta.sha256.to_uppercase())).is_ok());
    put(&sql, new_policy("p", &component(b"new"), None)).unwrap();
    let e = download(Some(&meta.sha256)).unwrap_err();
    assert_eq!(code(&e), (409, "policy_changed".into()), "{e}");
    assert_eq!(
        STANDARD
            .decode(download(None).unwrap().wasm_base64)
            .unwrap(),
        component(b"new")
    );
}

#[test]
fn policy_inputs_are_checked_and_capped() {
    let sql = NativeSql::open_in_memory().unwrap();
    let wasm = component(b"ok");
    let mut big_config = serde_json::Map::new();
    big_config.insert("k".into(), json!("x".repeat(MAX_CONFIG_BYTES)));
    let bad = [
        ("name", new_policy("Secret_Guard", &wasm, None)),
        ("name", new_policy(&"x".repeat(64), &wasm, None)),
        ("wasm_base64", new_policy("p", &CORE_MODULE_HEADER, None)),
        ("wasm_base64", new_policy("p", b"#!/bin/sh", None)),
        (
            "wasm_base64",
            NewPolicy {
                wasm_base64: "not base64!".into(),
                ..new_policy("p", &wasm, None)
            },
        ),
        (
            "wasm_base64",
            new_policy("p", &component(&vec![0; MAX_POLICY_BYTES]), None),
        ),
        (
            "sha256",
            NewPolicy {
                sha256: "ABC".into(),
                ..new_policy("p", &wasm, None)
            },
        ),
        (
            "config",
            NewPolicy {
                config: big_config,
                ..new_policy("p", &wasm, None)
            },
        ),
        ("position", new_policy("p", &wasm, Some(MAX_POSITION + 1))),
        ("position", new_policy("p", &wasm, Some(-1))),
    ];
    for (field, p) in bad {
        match put(&sql, p) {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(names(&sql).is_empty(), "nothing half-stored");

    let largest = component(&vec![7; MAX_POLICY_BYTES - COMPONENT_HEADER.len()]);
    put(&sql, new_policy("largest", &largest, Some(MAX_POSITION))).unwrap();
    // After the last, but never past the largest position.
    assert_eq!(
        put(&sql, new_policy("next", &wasm, None))
            .unwrap()
            .policy
            .position,
        MAX_POSITION
    );
    for i in 2..MAX_POLICIES {
        put(&sql, new_policy(&format!("p{i}"), &wasm, None)).unwrap();
    }
    let e = put(&sql, new_policy("one-more", &wasm, None)).unwrap_err();
    assert_eq!(code(&e), (409, "limit_exceeded".into()), "{e}");
    // Replacing one is no new policy.
    assert!(
        !put(&sql, new_policy("p2", &component(b"2"), None))
            .unwrap()
            .created
    );
    call::<()>(&sql, OrgOp::DeletePolicy { name: "p2".into() }).unwrap();
    assert!(
        put(&sql, new_policy("one-more", &wasm, None))
            .unwrap()
            .created
    );
}

fn decision(seq: u64, at: i64) -> DecisionReport {
    DecisionReport {
        seq,
        session_id: Some("ses_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d".into()),
        agent: "claude".into(),
        event: HookEvent::PreToolUse,
        policy: "command-guard".into(),
        decision: Verdict::Deny,
        reason: Some("rm -rf is not allowed".into()),
        duration_us: 420,
        at,
    }
}

fn record(sql: &NativeSql, host: &str, decisions: Vec<DecisionReport>) -> Result<u64, StoreError> {
    call::<Accepted>(
        sql,
        OrgOp::RecordDecisions {
            host_id: host.into(),
            decisions,
        },
    )
    .map(|a| a.accepted)
}

fn list(sql: &NativeSql, query: Value) -> DecisionPage {
    call(
        sql,
        OrgOp::ListDecisions(serde_json::from_value(query).unwrap()),
    )
    .unwrap()
}

fn rows(sql: &NativeSql) -> i64 {
    sql.query_one::<Count>("SELECT count(*) AS n FROM policy_decisions", &[])
        .unwrap()
        .unwrap()
        .n
}

#[test]
fn a_decision_is_recorded_once_per_host_and_seq() {
    let sql = NativeSql::open_in_memory().unwrap();
    assert_eq!(
        record(
            &sql,
            HOST_A,
            vec![decision(1, 10), decision(2, 20), decision(3, 30)]
        )
        .unwrap(),
        3
    );
    // A retried report with one new decision: only the new one counts.
    assert_eq!(
        record(
            &sql,
            HOST_A,
            vec![decision(2, 20), decision(3, 30), decision(4, 40)]
        )
        .unwrap(),
        1
    );
    assert_eq!(record(&sql, HOST_A, vec![decision(4, 999)]).unwrap(), 0);
    // Another host's seq 1 is another decision.
    assert_eq!(record(&sql, HOST_B, vec![decision(1, 50)]).unwrap(), 1);
    assert_eq!(rows(&sql), 5);
    let page = list(&sql, json!({}));
    let seen: Vec<(&str, u64)> = page
        .decisions
        .iter()
        .map(|d| (d.host_id.as_str(), d.seq))
        .collect();
    assert_eq!(
        seen,
        [
            (HOST_B, 1),
            (HOST_A, 4),
            (HOST_A, 3),
            (HOST_A, 2),
            (HOST_A, 1)
        ]
    );
    let d = &page.decisions[1];
    assert_eq!(
        d.at,
        crate::time::rfc3339(40),
        "the first report's time stays"
    );
    assert_eq!(d.received_at, crate::time::rfc3339(NOW));
    assert_eq!(
        (d.event, d.decision, d.duration_us, d.agent.as_str()),
        (HookEvent::PreToolUse, Verdict::Deny, 420, "claude")
    );
}

#[test]
fn reports_are_checked_whole_and_long_reasons_cut() {
    let sql = NativeSql::open_in_memory().unwrap();
    let with = |f: &dyn Fn(&mut DecisionReport)| {
        let mut d = decision(9, 10);
        f(&mut d);
        vec![decision(8, 10), d]
    };
    let bad: Vec<(&str, Vec<DecisionReport>)> = vec![
        ("decisions", vec![]),
        (
            "decisions",
            (0..=MAX_REPORT as u64).map(|s| decision(s, 1)).collect(),
        ),
        ("decisions[1].seq", with(&|d| d.seq = u64::MAX)),
        (
            "decisions[1].duration_us",
            with(&|d| d.duration_us = u64::MAX),
        ),
        ("decisions[1].at", with(&|d| d.at = -1)),
        ("decisions[1].agent", with(&|d| d.agent = " ".into())),
        (
            "decisions[1].policy",
            with(&|d| d.policy = "p".repeat(REPORTED_POLICY_MAX + 1)),
        ),
        (
            "decisions[1].session_id",
            with(&|d| d.session_id = Some("s\u{0}".into())),
        ),
    ];
    for (field, decisions) in bad {
        match record(&sql, HOST_A, decisions) {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(
        rows(&sql),
        0,
        "a refused report records none of its decisions"
    );
    assert!(matches!(
        record(&sql, "hst_nope", vec![decision(1, 1)]),
        Err(StoreError::BadRequest { .. })
    ));
    assert_eq!(
        record(
            &sql,
            HOST_A,
            (0..MAX_REPORT as u64).map(|s| decision(s, 1)).collect()
        )
        .unwrap(),
        MAX_REPORT as u64
    );

    // What a machine cannot fix is cut or normalised, never refused (it would retry forever).
    let mut d = decision(1_000, NOW + 3_600_000);
    d.reason = Some(format!("{}\u{7}tail", "r".repeat(REASON_MAX)));
    d.session_id = Some(String::new());
    record(&sql, HOST_B, vec![d]).unwrap();
    let got = &list(&sql, json!({"host_id": HOST_B})).decisions[0];
    assert_eq!(got.reason.as_deref(), Some("r".repeat(REASON_MAX).as_str()));
    assert_eq!(got.session_id, None, "an empty session id is none");
    assert_eq!(
        got.at,
        crate::time::rfc3339(NOW),
        "a clock ahead is taken as now"
    );
}

#[test]
fn decisions_list_newest_first_filtered_and_paged() {
    let sql = NativeSql::open_in_memory().unwrap();
    let mut all = Vec::new();
    for seq in 0..7u64 {
        let mut d = decision(seq, 100 + (seq as i64 % 3));
        d.decision = if seq % 2 == 0 {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        d.policy = if seq < 4 { "a" } else { "b" }.into();
        d.session_id = (seq != 6).then(|| format!("s{}", seq % 2));
        all.push(d);
    }
    record(&sql, HOST_A, all).unwrap();
    record(&sql, HOST_B, vec![decision(0, 5)]).unwrap();

    // Pages of 3 walk every decision once, newest first (time, then arrival).
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = json!({"limit": 3, "host_id": HOST_A});
        if let Some(c) = &cursor {
            q["cursor"] = c.clone().into();
        }
        let page = list(&sql, q);
        assert!(page.decisions.len() <= 3);
        walked.extend(page.decisions.iter().map(|d| d.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // at = 100 + seq % 3: seqs 2 and 5 at 102, 1 4 at 101, 0 3 6 at 100; ties newest-arrived first.
    assert_eq!(walked, [5, 2, 4, 1, 6, 3, 0]);

    let seqs = |q: Value| -> Vec<u64> { list(&sql, q).decisions.iter().map(|d| d.seq).collect() };
    assert_eq!(seqs(json!({"host_id": HOST_B})), [0]);
    assert_eq!(
        seqs(json!({"host_id": HOST_A, "decision": "deny"})),
        [5, 1, 3]
    );
    assert_eq!(seqs(json!({"policy": "b", "session_id": "s0"})), [4]);
    assert_eq!(
        seqs(json!({"session_id": "s1", "decision": "deny"})),
        [5, 1, 3]
    );
    assert_eq!(list(&sql, json!({})).decisions.len(), 8);
    for bad in [
        json!({"host_id": "hst_1"}),
        json!({"cursor": "!!"}),
        json!({"cursor": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("12")}),
        json!({"limit": 0}),
        json!({"limit": 201}),
    ] {
        let q = serde_json::from_value(bad.clone()).unwrap();
        assert!(
            matches!(
                call::<DecisionPage>(&sql, OrgOp::ListDecisions(q)),
                Err(StoreError::BadRequest { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn the_oldest_decisions_go_past_the_cap() {
    let sql = NativeSql::open_in_memory().unwrap();
    let store = Store::open(&sql).unwrap();
    let keep = 5;
    let batch = |seqs: std::ops::Range<u64>| seqs.map(|s| decision(s, 1_000 - s as i64)).collect();
    // Seq 0 is the newest, seq 9 the oldest.
    let accepted = store
        .record_decisions(HOST_A, batch(0..10), NOW, keep)
        .unwrap();
    assert_eq!(
        accepted.accepted, 10,
        "all were new, even those dropped at once"
    );
    let kept = |sql: &NativeSql| -> Vec<u64> {
        list(sql, json!({}))
            .decisions
            .iter()
            .map(|d| d.seq)
            .collect()
    };
    assert_eq!(kept(&sql), [0, 1, 2, 3, 4]);
    store
        .record_decisions(HOST_A, vec![decision(100, 2_000)], NOW, keep)
        .unwrap();
    assert_eq!(kept(&sql), [100, 0, 1, 2, 3]);

    // At the real cap, filled the way a long-lived org would be.
    let sql = NativeSql::open_in_memory().unwrap();
    Store::open(&sql).unwrap();
    sql.execute_script(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {MAX_DECISIONS})
         INSERT INTO policy_decisions (host_id, seq, agent, event, policy, decision, duration_us,
             at, received_at)
         SELECT '{HOST_B}', i, 'claude', 'stop', 'p', 'allow', 1, i, i FROM n;
         UPDATE counters SET value = {MAX_DECISIONS} WHERE name = 'decision_count';"
    ))
    .unwrap();
    assert_eq!(rows(&sql), MAX_DECISIONS);
    assert_eq!(
        record(&sql, HOST_A, vec![decision(1, NOW), decision(2, NOW)]).unwrap(),
        2
    );
    assert_eq!(rows(&sql), MAX_DECISIONS);
    let at_least = |sql: &NativeSql, at: i64| {
        sql.query_one::<Count>(
            "SELECT count(*) AS n FROM policy_decisions WHERE at < ?",
            &[at.into()],
        )
        .unwrap()
        .unwrap()
        .n
    };
    assert_eq!(at_least(&sql, 3), 0, "the two oldest went");
    assert_eq!(at_least(&sql, 4), 1);
}
