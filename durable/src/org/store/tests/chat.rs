//! Chat sessions in the store: the kind and its stream, titles set by the session's host, and
//! the record of members' approval answers.

use super::{HOST_A, HOST_B, MEMBER, call, new_session};
use crate::chat::{self, Answerer, ApprovalRecord, Decision};
use crate::error::StoreError;
use crate::org::OrgOp;
use crate::org::model::{Page, Project};
use crate::session::{Session, SessionKind, SessionQuery, TitleReport};
use crate::sql::{NativeSql, Sql};
use crate::sync::table::Table;
use serde_json::{Map, Value, json};

fn project(sql: &NativeSql) -> Project {
    call(
        sql,
        OrgOp::CreateProject(serde_json::from_value(json!({"name": "p"})).unwrap()),
    )
    .unwrap()
}

fn chat_session(sql: &NativeSql, project_id: &str, prompt: Option<&str>) -> Session {
    let OrgOp::CreateSession(mut s) = new_session(HOST_A, project_id, 600) else {
        unreachable!()
    };
    s.kind = SessionKind::Chat;
    s.prompt = prompt.map(Into::into);
    call(sql, OrgOp::CreateSession(s)).unwrap()
}

fn title(sql: &NativeSql, id: &str, host: &str, title: &str) -> Result<Session, StoreError> {
    call(
        sql,
        OrgOp::SetSessionTitle {
            id: id.into(),
            host_id: host.into(),
            report: TitleReport {
                title: title.into(),
            },
        },
    )
}

fn answer(
    sql: &NativeSql,
    session_id: &str,
    request_id: &str,
    decision: Decision,
    reason: Option<&str>,
) -> Result<ApprovalRecord, StoreError> {
    call(
        sql,
        OrgOp::RecordApproval {
            session_id: session_id.into(),
            request_id: request_id.into(),
            decision,
            reason: reason.map(Into::into),
            role: "admin".into(),
        },
    )
}

#[test]
fn chat_sessions_have_their_stream_kind_and_a_fallback_title() {
    let sql = NativeSql::open_in_memory().unwrap();
    let p = project(&sql);
    let c = chat_session(&sql, &p.id, Some("## Fix the   flaky login test\nand more"));
    assert_eq!(c.kind, SessionKind::Chat);
    assert_eq!(c.stream_path, chat::stream_path(HOST_A, &c.id));
    assert!(c.stream_path.ends_with("/chat"));
    assert_eq!(c.title.as_deref(), Some("Fix the flaky login test"));
    let t: Session = call(&sql, new_session(HOST_A, &p.id, 600)).unwrap();
    assert_eq!(
        (t.kind, t.title.as_deref()),
        (SessionKind::Terminal, Some("fix it"))
    );
    assert!(t.stream_path.ends_with("/terminal"));
    let none = chat_session(&sql, &p.id, None);
    assert_eq!(none.title, None);

    let list = |kind| {
        call::<Page<Session>>(
            &sql,
            OrgOp::ListSessions(SessionQuery {
                kind,
                ..SessionQuery::default()
            }),
        )
        .unwrap()
        .data
        .len()
    };
    assert_eq!(
        (
            list(None),
            list(Some(SessionKind::Chat)),
            list(Some(SessionKind::Terminal))
        ),
        (3, 2, 1)
    );
}

#[test]
fn only_the_sessions_host_retitles_it_with_one_short_line() {
    let sql = NativeSql::open_in_memory().unwrap();
    let p = project(&sql);
    let c = chat_session(&sql, &p.id, Some("fix it"));
    let named = title(&sql, &c.id, HOST_A, "  Flaky login test  ").unwrap();
    assert_eq!(named.title.as_deref(), Some("Flaky login test"));
    assert!(matches!(
        title(&sql, &c.id, HOST_B, "mine"),
        Err(StoreError::NotFound { .. })
    ));
    let long = "x".repeat(chat::MAX_TITLE + 1);
    for bad in ["", "   ", "two\nlines", long.as_str()] {
        assert!(
            matches!(
                title(&sql, &c.id, HOST_A, bad),
                Err(StoreError::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(title(&sql, &c.id, HOST_A, &"y".repeat(chat::MAX_TITLE)).is_ok());
    assert!(matches!(
        title(&sql, "ses_1", HOST_A, "x"),
        Err(StoreError::BadRequest { .. })
    ));

    // The change log carries the new columns, in updates too.
    #[derive(serde::Deserialize)]
    struct Logged {
        row: String,
    }
    let rows: Vec<Logged> = sql
        .query(
            "SELECT row FROM changes WHERE tbl = 'sessions' AND op = 'update' ORDER BY lsn",
            &[],
        )
        .unwrap();
    let last: Map<String, Value> = serde_json::from_str(&rows.last().unwrap().row).unwrap();
    assert_eq!(last["kind"], "chat");
    assert_eq!(last["title"], "y".repeat(chat::MAX_TITLE));
    assert_eq!(last.len(), Table::Sessions.columns().len());
}

#[test]
fn approval_answers_are_recorded_once_and_listed_newest_first() {
    let sql = NativeSql::open_in_memory().unwrap();
    let p = project(&sql);
    let c = chat_session(&sql, &p.id, Some("go"));
    let (r1, r2) = (chat_new_id(), chat_new_id());
    let a = answer(&sql, &c.id, &r1, Decision::Allow, None).unwrap();
    assert_eq!(
        a.answered_by,
        Answerer::Member {
            id: MEMBER.into(),
            role: "admin".into()
        }
    );
    assert_eq!(
        (a.decision, a.session_id.as_str()),
        (Decision::Allow, c.id.as_str())
    );
    // A retry keeps the first answer.
    let again = answer(&sql, &c.id, &r1, Decision::Deny, Some("no")).unwrap();
    assert_eq!(again, a);
    answer(&sql, &c.id, &r2, Decision::Deny, Some("too risky")).unwrap();

    let listed: Vec<ApprovalRecord> = call(
        &sql,
        OrgOp::ListApprovals {
            session_id: c.id.clone(),
        },
    )
    .unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, [r2.as_str(), r1.as_str()]);
    assert_eq!(listed[0].reason.as_deref(), Some("too risky"));

    // Another session's list is its own; the request id belongs to the first session.
    let other = chat_session(&sql, &p.id, Some("other"));
    let none: Vec<ApprovalRecord> = call(
        &sql,
        OrgOp::ListApprovals {
            session_id: other.id.clone(),
        },
    )
    .unwrap();
    assert!(none.is_empty());
    assert!(matches!(
        answer(&sql, &other.id, &r1, Decision::Allow, None),
        Err(StoreError::Conflict { .. })
    ));

    // Checked: the request id, the session, the reason.
    assert!(matches!(
        answer(&sql, &c.id, "apr_nope", Decision::Allow, None),
        Err(StoreError::BadRequest { .. })
    ));
    let missing = crate::ids::new(crate::ids::SESSION);
    assert!(matches!(
        answer(&sql, &missing, &chat_new_id(), Decision::Allow, None),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        call::<Vec<ApprovalRecord>>(
            &sql,
            OrgOp::ListApprovals {
                session_id: missing
            }
        ),
        Err(StoreError::NotFound { .. })
    ));
    let long = "x".repeat(chat::MAX_REASON + 1);
    for bad in ["a\nb", long.as_str()] {
        assert!(matches!(
            answer(&sql, &c.id, &chat_new_id(), Decision::Deny, Some(bad)),
            Err(StoreError::Invalid { .. })
        ));
    }
}

fn chat_new_id() -> String {
    crate::ids::new(chat::APPROVAL_ID_PREFIX)
}
