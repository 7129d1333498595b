use super::*;
use crate::org::model::*;
use crate::sql::NativeSql;
use serde_json::json;

const MEMBER: &str = "mem_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d";

fn call<T: DeserializeOwned>(sql: &NativeSql, op: OrgOp) -> Result<T, StoreError> {
    let store = Store::open(sql)?;
    let call = OrgCall {
        org_id: "org_x".into(),
        actor: MEMBER.into(),
        op,
    };
    // Round-trip through JSON like the Worker -> Durable Object hop does.
    let call: OrgCall = serde_json::from_value(serde_json::to_value(call).unwrap()).unwrap();
    store
        .call(call, 1_000)
        .map(|v| serde_json::from_slice(&v).unwrap())
}

fn task(sql: &NativeSql, body: serde_json::Value) -> Task {
    call(
        sql,
        OrgOp::CreateTask {
            task: serde_json::from_value(body).unwrap(),
            prefix: "TET".into(),
        },
    )
    .unwrap()
}

#[test]
fn tasks_get_sequential_slugs_and_default_status() {
    let sql = NativeSql::open_in_memory().unwrap();
    let a = task(&sql, json!({"title": "first"}));
    let b = task(
        &sql,
        json!({"title": "second", "labels": ["bug", "Bug", "ui"], "priority": "high"}),
    );
    assert_eq!((a.number, a.slug.as_str()), (1, "TET-1"));
    assert_eq!((b.number, b.slug.as_str()), (2, "TET-2"));
    assert_eq!(a.status.category, StatusCategory::Unstarted);
    assert_eq!(b.labels, vec!["bug", "ui"]);
    assert_eq!(a.created_by.as_deref(), Some(MEMBER));
    // A deleted task's number is never reused.
    call::<serde_json::Value>(
        &sql,
        OrgOp::DeleteTask {
            key: "TET-2".into(),
        },
    )
    .unwrap();
    assert_eq!(task(&sql, json!({"title": "third"})).slug, "TET-3");
}

#[test]
fn get_by_id_or_case_insensitive_slug() {
    let sql = NativeSql::open_in_memory().unwrap();
    let t = task(&sql, json!({"title": "x"}));
    let by_id: Task = call(&sql, OrgOp::GetTask { key: t.id.clone() }).unwrap();
    let by_slug: Task = call(
        &sql,
        OrgOp::GetTask {
            key: "tet-1".into(),
        },
    )
    .unwrap();
    assert_eq!(by_id, t);
    assert_eq!(by_slug, t);
    let missing = call::<Task>(
        &sql,
        OrgOp::GetTask {
            key: "TET-99".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }));
    let bad = call::<Task>(
        &sql,
        OrgOp::GetTask {
            key: "../etc".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(bad, StoreError::BadRequest { .. }));
}

#[test]
fn updates_patch_only_given_fields_and_null_clears() {
    let sql = NativeSql::open_in_memory().unwrap();
    let p: Project = call(
        &sql,
        OrgOp::CreateProject(serde_json::from_value(json!({"name": "web"})).unwrap()),
    )
    .unwrap();
    let t = task(
        &sql,
        json!({"title": "x", "description": "d", "project_id": p.id, "assignee_id": MEMBER}),
    );
    let patch: UpdateTask =
        serde_json::from_value(json!({"title": "y", "assignee_id": null})).unwrap();
    let u: Task = call(
        &sql,
        OrgOp::UpdateTask {
            key: t.slug.clone(),
            patch,
        },
    )
    .unwrap();
    assert_eq!(u.title, "y");
    assert_eq!(u.description, "d");
    assert_eq!(u.project_id, Some(p.id.clone()));
    assert_eq!(u.assignee_id, None);
    // Deleting the project detaches its tasks.
    call::<serde_json::Value>(&sql, OrgOp::DeleteProject { id: p.id }).unwrap();
    let u: Task = call(&sql, OrgOp::GetTask { key: t.id }).unwrap();
    assert_eq!(u.project_id, None);
}

#[test]
fn references_to_missing_rows_are_validation_errors() {
    let sql = NativeSql::open_in_memory().unwrap();
    for body in [
        json!({"title": "x", "status_id": "sts_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"}),
        json!({"title": "x", "project_id": "prj_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"}),
        json!({"title": "x", "assignee_id": "usr_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"}),
        json!({"title": " "}),
        json!({"title": "x".repeat(201)}),
        json!({"title": "x", "description": "d".repeat(100_001)}),
    ] {
        let e = call::<Task>(
            &sql,
            OrgOp::CreateTask {
                task: serde_json::from_value(body.clone()).unwrap(),
                prefix: "TET".into(),
            },
        )
        .unwrap_err();
        assert!(matches!(e, StoreError::Invalid { .. }), "{body}: {e:?}");
    }
    // Nothing half-written: the counter did not move.
    assert_eq!(task(&sql, json!({"title": "ok"})).number, 1);
}

#[test]
fn list_filters_and_paginates_newest_first() {
    let sql = NativeSql::open_in_memory().unwrap();
    let statuses: Vec<TaskStatus> = call(&sql, OrgOp::ListStatuses).unwrap();
    let started = statuses
        .iter()
        .find(|s| s.category == StatusCategory::Started)
        .unwrap();
    for i in 0..7 {
        let mut body = json!({"title": format!("t{i}"), "labels": if i % 2 == 0 { vec!["even"] } else { vec![] }});
        if i < 3 {
            body["status_id"] = json!(started.id);
            body["assignee_id"] = json!(MEMBER);
        }
        task(&sql, body);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page: Page<Task> = call(
            &sql,
            OrgOp::ListTasks(TaskQuery {
                cursor,
                limit: Some(3),
                ..Default::default()
            }),
        )
        .unwrap();
        seen.extend(page.data.iter().map(|t| t.number));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, vec![7, 6, 5, 4, 3, 2, 1]);
    let q = |q: TaskQuery| -> Vec<i64> {
        call::<Page<Task>>(&sql, OrgOp::ListTasks(q))
            .unwrap()
            .data
            .iter()
            .map(|t| t.number)
            .collect()
    };
    assert_eq!(
        q(TaskQuery {
            status_category: Some(StatusCategory::Started),
            ..Default::default()
        }),
        vec![3, 2, 1]
    );
    assert_eq!(
        q(TaskQuery {
            status_id: Some(started.id.clone()),
            ..Default::default()
        }),
        vec![3, 2, 1]
    );
    assert_eq!(
        q(TaskQuery {
            assignee_id: Some("none".into()),
            ..Default::default()
        }),
        vec![7, 6, 5, 4]
    );
    assert_eq!(
        q(TaskQuery {
            label: Some("EVEN".into()),
            ..Default::default()
        }),
        vec![7, 5, 3, 1]
    );
    let e = call::<Page<Task>>(
        &sql,
        OrgOp::ListTasks(TaskQuery {
            limit: Some(201),
            ..Default::default()
        }),
    );
    assert!(matches!(e, Err(StoreError::BadRequest { .. })));
    let e = call::<Page<Task>>(
        &sql,
        OrgOp::ListTasks(TaskQuery {
            cursor: Some("!!".into()),
            ..Default::default()
        }),
    );
    assert!(matches!(e, Err(StoreError::BadRequest { .. })));
}

#[test]
fn statuses_are_customisable_but_never_orphan_tasks() {
    let sql = NativeSql::open_in_memory().unwrap();
    let statuses: Vec<TaskStatus> = call(&sql, OrgOp::ListStatuses).unwrap();
    let cats: Vec<_> = statuses.iter().map(|s| s.category.as_str()).collect();
    assert_eq!(
        cats,
        ["backlog", "unstarted", "started", "completed", "canceled"]
    );
    let review: TaskStatus = call(
        &sql,
        OrgOp::CreateStatus(
            serde_json::from_value(
                json!({"name": "In Review", "category": "started", "color": "#00FF00"}),
            )
            .unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(review.color, "#00ff00");
    let dup = call::<TaskStatus>(
        &sql,
        OrgOp::CreateStatus(
            serde_json::from_value(json!({"name": "in review", "category": "started"})).unwrap(),
        ),
    );
    assert!(matches!(
        dup,
        Err(StoreError::Conflict {
            code: "name_taken",
            ..
        })
    ));
    let t = task(&sql, json!({"title": "x", "status_id": review.id}));
    let in_use = call::<serde_json::Value>(
        &sql,
        OrgOp::DeleteStatus {
            id: review.id.clone(),
            replace_with: None,
        },
    );
    assert!(matches!(
        in_use,
        Err(StoreError::Conflict {
            code: "status_in_use",
            ..
        })
    ));
    let todo = &statuses[1];
    call::<serde_json::Value>(
        &sql,
        OrgOp::DeleteStatus {
            id: review.id,
            replace_with: Some(todo.id.clone()),
        },
    )
    .unwrap();
    let moved: Task = call(&sql, OrgOp::GetTask { key: t.id }).unwrap();
    assert_eq!(moved.status.id, todo.id);
}

#[test]
fn project_names_are_unique_and_fields_checked() {
    let sql = NativeSql::open_in_memory().unwrap();
    let mk = |b: serde_json::Value| {
        call::<Project>(
            &sql,
            OrgOp::CreateProject(serde_json::from_value(b).unwrap()),
        )
    };
    let p = mk(json!({"name": "Web", "repo_url": "git@github.com:a/web.git"})).unwrap();
    assert_eq!(p.default_branch, "main");
    assert!(matches!(
        mk(json!({"name": "web"})),
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        mk(json!({"name": "x", "default_branch": "a..b"})),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        mk(json!({"name": "x", "repo_url": "javascript:x"})),
        Err(StoreError::Invalid { .. })
    ));
    let patch: UpdateProject = serde_json::from_value(json!({"repo_url": null})).unwrap();
    let u: Project = call(&sql, OrgOp::UpdateProject { id: p.id, patch }).unwrap();
    assert_eq!(u.repo_url, None);
    assert_eq!(u.name, "Web");
}

#[test]
fn unknown_fields_are_rejected_by_the_types() {
    assert!(serde_json::from_value::<CreateTask>(json!({"title": "x", "titel": "y"})).is_err());
    assert!(serde_json::from_value::<UpdateTask>(json!({"number": 3})).is_err());
}

#[test]
fn a_destroyed_org_stays_gone() {
    let sql = NativeSql::open_in_memory().unwrap();
    task(&sql, json!({"title": "x"}));
    call::<serde_json::Value>(&sql, OrgOp::Destroy).unwrap();
    for op in [
        OrgOp::ListStatuses,
        OrgOp::GetTask {
            key: "TET-1".into(),
        },
    ] {
        assert!(matches!(
            call::<serde_json::Value>(&sql, op),
            Err(StoreError::NotFound { what: "org" })
        ));
    }
}

#[test]
fn counts_are_capped() {
    let sql = NativeSql::open_in_memory().unwrap();
    let mut made = 5; // the default statuses
    let err = loop {
        let input =
            serde_json::from_value(json!({"name": format!("s{made}"), "category": "started"}));
        match call::<TaskStatus>(&sql, OrgOp::CreateStatus(input.unwrap())) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(made, MAX_STATUSES);
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                code: "limit_exceeded",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_stream_registry_caps_streams_per_org_and_knows_lives() {
    let sql = NativeSql::open_in_memory().unwrap();
    let register = |path: &str, inc: &str| {
        call::<()>(
            &sql,
            OrgOp::RegisterStream {
                path: path.into(),
                incarnation: inc.into(),
            },
        )
    };
    let unregister = |path: &str, inc: &str| {
        call::<()>(
            &sql,
            OrgOp::UnregisterStream {
                path: path.into(),
                incarnation: inc.into(),
            },
        )
        .unwrap()
    };
    let count = || {
        sql.query_one::<Count>("SELECT count(*) AS n FROM streams", &[])
            .unwrap()
            .unwrap()
            .n
    };
    sql.transaction(|| {
        for i in 0..MAX_STREAMS_PER_ORG {
            register(&format!("s{i}"), "a")?;
        }
        Ok::<_, StoreError>(())
    })
    .unwrap();
    let err = register("one-more", "a").unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                code: "limit_exceeded",
                ..
            }
        ),
        "{err:?}"
    );
    // A new life of a registered path replaces the old one without counting twice...
    register("s0", "b").unwrap();
    assert_eq!(count(), MAX_STREAMS_PER_ORG);
    // ...so the old life's late unregister is a no-op, and the new one's frees a place.
    unregister("s0", "a");
    assert_eq!(count(), MAX_STREAMS_PER_ORG);
    unregister("s0", "b");
    register("one-more", "a").unwrap();
}

const HOST_A: &str = "hst_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d";
const HOST_B: &str = "hst_0190c6e8f1d87a3b9c2d4e5f6a7b8c9e";

fn new_session(host: &str, project_id: &str, timeout: u32) -> OrgOp {
    OrgOp::CreateSession(crate::session::NewSession {
        project_id: project_id.into(),
        host_id: host.into(),
        agent: "claude".into(),
        kind: crate::session::SessionKind::Terminal,
        prompt: Some("fix it".into()),
        task_id: None,
        branch: None,
        base_branch: None,
        size: crate::session::Size {
            cols: 120,
            rows: 40,
        },
        start_timeout_secs: timeout,
    })
}

fn update(status: crate::session::SessionStatus, at_ms: i64) -> crate::session::SessionUpdate {
    crate::session::SessionUpdate {
        status,
        reason: None,
        exit_code: None,
        branch: None,
        worktree: None,
        at_ms,
    }
}

#[test]
fn links_create_projects_on_request_and_follow_them() {
    use crate::session::ProjectLink;
    let sql = NativeSql::open_in_memory().unwrap();
    let link = |project: &str, host: &str, path: &str, create: bool| {
        call::<ProjectLink>(
            &sql,
            OrgOp::LinkProject {
                project: project.into(),
                host_id: host.into(),
                path: path.into(),
                create,
            },
        )
    };
    assert!(matches!(
        link("app", HOST_A, "/src/app", false),
        Err(StoreError::NotFound { .. })
    ));
    let a = link("app", HOST_A, "/src/app", true).unwrap();
    assert_eq!(
        (a.project_name.as_str(), a.path.as_str()),
        ("app", "/src/app")
    );
    // By name (any case) or id; relinking moves the path.
    let b = link("APP", HOST_B, "/home/b/app", false).unwrap();
    assert_eq!(b.project_id, a.project_id);
    link(&a.project_id, HOST_A, "/src/app2", false).unwrap();
    let links: Vec<ProjectLink> = call(
        &sql,
        OrgOp::ListLinks {
            project: Some("app".into()),
            host_id: None,
        },
    )
    .unwrap();
    assert_eq!(links.len(), 2);
    assert!(
        links
            .iter()
            .any(|l| l.host_id == HOST_A && l.path == "/src/app2")
    );
    for (path, why) in [
        ("relative/dir", "absolute"),
        ("", "empty"),
        ("/a\u{7}", "control"),
    ] {
        assert!(
            matches!(
                link("app", HOST_A, path, false),
                Err(StoreError::Invalid { .. })
            ),
            "{why}"
        );
    }
    assert!(matches!(
        link("app", "hst_nope", "/x", false),
        Err(StoreError::BadRequest { .. })
    ));
    call::<()>(
        &sql,
        OrgOp::UnlinkProject {
            project: "app".into(),
            host_id: HOST_B.into(),
        },
    )
    .unwrap();
    // Deleting the project drops its links.
    call::<()>(&sql, OrgOp::DeleteProject { id: a.project_id }).unwrap();
    let left: Vec<ProjectLink> = call(
        &sql,
        OrgOp::ListLinks {
            project: None,
            host_id: Some(HOST_A.into()),
        },
    )
    .unwrap();
    assert!(left.is_empty());
}

#[test]
fn sessions_move_forward_only_and_only_by_their_host() {
    use crate::session::{Session, SessionStatus::*};
    let sql = NativeSql::open_in_memory().unwrap();
    let p: Project = call(
        &sql,
        OrgOp::CreateProject(serde_json::from_value(json!({"name": "p"})).unwrap()),
    )
    .unwrap();
    let s: Session = call(&sql, new_session(HOST_A, &p.id, 600)).unwrap();
    assert_eq!(s.status, Queued);
    assert_eq!(s.stream_path, crate::session::stream_path(HOST_A, &s.id));
    let upd = |host: Option<&str>, u| {
        call::<Session>(
            &sql,
            OrgOp::UpdateSession {
                id: s.id.clone(),
                host_id: host.map(Into::into),
                update: u,
            },
        )
    };
    // Another host cannot see it; the Worker alone may only end a queued one.
    assert!(matches!(
        upd(Some(HOST_B), update(Running, 900)),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        upd(None, update(Running, 900)),
        Err(StoreError::Conflict { .. })
    ));
    let mut u = update(Running, 900);
    u.branch = Some("tether/fix-it".into());
    u.worktree = Some("/wt/fix-it".into());
    let r = upd(Some(HOST_A), u).unwrap();
    assert_eq!(
        (r.status, r.branch.as_deref()),
        (Running, Some("tether/fix-it"))
    );
    assert!(r.started_at.is_some() && r.ended_at.is_none());
    // A retried report is fine; going back is not.
    upd(Some(HOST_A), update(Running, 900)).unwrap();
    assert!(matches!(
        upd(Some(HOST_A), update(Starting, 900)),
        Err(StoreError::Conflict { .. })
    ));
    let mut done = update(Exited, 950);
    done.exit_code = Some(3);
    let e = upd(Some(HOST_A), done).unwrap();
    assert_eq!(
        (e.status, e.exit_code, e.branch.as_deref()),
        (Exited, Some(3), Some("tether/fix-it"))
    );
    assert!(matches!(
        upd(Some(HOST_A), update(Failed, 990)),
        Err(StoreError::Conflict { .. })
    ));
}

#[test]
fn a_queued_session_fails_when_its_host_never_comes() {
    use crate::session::{Session, SessionStatus::*};
    let sql = NativeSql::open_in_memory().unwrap();
    let p: Project = call(
        &sql,
        OrgOp::CreateProject(serde_json::from_value(json!({"name": "p"})).unwrap()),
    )
    .unwrap();
    let store = Store::open(&sql).unwrap();
    let at = |op: OrgOp, now: i64| -> Session {
        let call = OrgCall {
            org_id: "org_x".into(),
            actor: MEMBER.into(),
            op,
        };
        serde_json::from_slice(&store.call(call, now).unwrap()).unwrap()
    };
    let s = at(new_session(HOST_A, &p.id, 10), 1_000);
    let get = || OrgOp::GetSession { id: s.id.clone() };
    // Inside its start timeout plus the grace period it waits.
    assert_eq!(
        at(get(), 1_000 + 10_000 + crate::session::START_GRACE_MS).status,
        Queued
    );
    let failed = at(get(), 1_001 + 10_000 + crate::session::START_GRACE_MS);
    assert_eq!(failed.status, Failed);
    assert!(failed.reason.unwrap().contains("host offline too long"));
    // Listing filters by status and pages newest first.
    for _ in 0..3 {
        at(new_session(HOST_B, &p.id, 600), 200_000);
    }
    let page: Page<Session> = serde_json::from_slice(
        &store
            .call(
                OrgCall {
                    org_id: "org_x".into(),
                    actor: MEMBER.into(),
                    op: OrgOp::ListSessions(crate::session::SessionQuery {
                        status: Some(Queued),
                        limit: Some(2),
                        ..Default::default()
                    }),
                },
                200_000,
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(page.data.len(), 2);
    assert!(page.next_cursor.is_some() && page.data[0].id > page.data[1].id);
    assert!(page.data.iter().all(|s| s.host_id == HOST_B));
}

mod automations;
mod changes;
mod chat;
mod mcp_audit;
mod policies;
