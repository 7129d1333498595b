//! Guardrail policies and the decisions machines report, through the router.

use super::{App, add_member, app, call, connect, machine, owner, pair, raw, second_org};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tether_durable::policy::{
    COMPONENT_HEADER, CORE_MODULE_HEADER, MAX_POLICIES, MAX_POLICY_BYTES, MAX_REPORT,
};

/// A component preamble and `body`: all the edge looks at.
fn component(body: &[u8]) -> Vec<u8> {
    [&COMPONENT_HEADER[..], body].concat()
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn upload(app: &App, cred: &str, name: &str, body: Value) -> (u16, Value) {
    call(
        app,
        "PUT",
        &format!("/v1/policies/{name}"),
        Some(cred),
        Some(body),
    )
}

fn wasm_body(wasm: &[u8]) -> Value {
    json!({ "wasm_base64": STANDARD.encode(wasm) })
}

/// The download's status, `x-tether-sha256`, content type and body.
fn download(app: &App, cred: &str, path: &str) -> (u16, Option<String>, Option<String>, Vec<u8>) {
    let res = raw(
        app,
        "GET",
        path,
        &[("authorization", &format!("Bearer {cred}"))],
        None,
    );
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        res.status().as_u16(),
        header("x-tether-sha256"),
        header("content-type"),
        res.body().clone(),
    )
}

fn names(list: &Value) -> Vec<&str> {
    list["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

#[test]
fn admins_upload_replace_patch_and_delete_policies() {
    let app = app();
    let key = owner(&app);
    let v1 = component(b"first version");
    let (s, p) = upload(
        &app,
        &key,
        "secret-guard",
        json!({"wasm_base64": STANDARD.encode(&v1), "sha256": sha256(&v1),
               "config": {"mode": "deny"}}),
    );
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["sha256"], sha256(&v1));
    assert_eq!(p["size"], v1.len());
    assert_eq!(
        (&p["config"], &p["failure"], &p["position"]),
        (&json!({"mode": "deny"}), &json!("deny"), &json!(0))
    );
    let mut fields: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "config",
            "created_at",
            "created_by",
            "failure",
            "name",
            "position",
            "sha256",
            "size",
            "updated_at"
        ],
        "metadata only, never the binary"
    );
    let (s, other) = upload(
        &app,
        &key,
        "command-guard",
        json!({"wasm_base64": STANDARD.encode(component(b"cg")), "failure": "allow", "position": 0}),
    );
    assert_eq!((s, &other["failure"]), (201, &json!("allow")), "{other}");

    // The same name again replaces it: 200, the new binary, the creation kept.
    let v2 = component(b"second version, longer");
    let (s, r) = upload(
        &app,
        &key,
        "secret-guard",
        json!({"wasm_base64": STANDARD.encode(&v2), "sha256": sha256(&v2).to_uppercase()}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (&r["sha256"], &r["size"]),
        (&json!(sha256(&v2)), &json!(v2.len()))
    );
    assert_eq!(r["created_at"], p["created_at"]);
    assert_eq!(r["config"], json!({}), "a replacement is whole");

    let (s, list) = call(&app, "GET", "/v1/policies", Some(&key), None);
    assert_eq!(s, 200);
    assert_eq!(names(&list), ["command-guard", "secret-guard"], "{list}");

    // A patch changes settings, never the binary.
    let (s, patched) = call(
        &app,
        "PATCH",
        "/v1/policies/secret-guard",
        Some(&key),
        Some(json!({"config": {"paths": ["~/.ssh"]}, "failure": "allow", "position": 9})),
    );
    assert_eq!(s, 200, "{patched}");
    assert_eq!(
        (
            &patched["config"],
            &patched["failure"],
            &patched["position"],
            &patched["sha256"]
        ),
        (
            &json!({"paths": ["~/.ssh"]}),
            &json!("allow"),
            &json!(9),
            &json!(sha256(&v2))
        )
    );
    let (_, got) = call(&app, "GET", "/v1/policies/secret-guard", Some(&key), None);
    assert_eq!(got, patched);
    for (body, status) in [
        (json!({"wasm_base64": "AAAA"}), 422),
        (json!({"position": 1001}), 422),
        (json!({"failure": "maybe"}), 422),
        (json!({"config": [1, 2]}), 422),
    ] {
        let (s, e) = call(
            &app,
            "PATCH",
            "/v1/policies/secret-guard",
            Some(&key),
            Some(body.clone()),
        );
        assert_eq!(s, status, "{body}: {e}");
    }
    assert_eq!(
        call(
            &app,
            "PATCH",
            "/v1/policies/nope",
            Some(&key),
            Some(json!({"position": 1}))
        )
        .0,
        404
    );

    // The binary, exactly, with its hash; a stale hash is 409 so the machine reads the list.
    let path = "/v1/policies/secret-guard/wasm";
    let (s, hash, ct, body) = download(&app, &key, path);
    assert_eq!(
        (s, hash.as_deref(), ct.as_deref()),
        (200, Some(sha256(&v2).as_str()), Some("application/wasm"))
    );
    assert_eq!(body, v2);
    let (s, _, _, body) = download(&app, &key, &format!("{path}?sha256={}", sha256(&v2)));
    assert_eq!((s, body), (200, v2.clone()));
    let (s, e) = call(
        &app,
        "GET",
        &format!("{path}?sha256={}", sha256(&v1)),
        Some(&key),
        None,
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("policy_changed")),
        "{e}"
    );
    assert_eq!(
        call(&app, "GET", &format!("{path}?bogus=1"), Some(&key), None).0,
        400
    );

    assert_eq!(
        call(
            &app,
            "DELETE",
            "/v1/policies/secret-guard",
            Some(&key),
            None
        )
        .0,
        204
    );
    for (method, path) in [
        ("GET", "/v1/policies/secret-guard"),
        ("GET", "/v1/policies/secret-guard/wasm"),
        ("DELETE", "/v1/policies/secret-guard"),
        ("GET", "/v1/policies/Not_A_Name"),
    ] {
        let (s, e) = call(&app, method, path, Some(&key), None);
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{method} {path}"
        );
    }
    let (_, list) = call(&app, "GET", "/v1/policies", Some(&key), None);
    assert_eq!(names(&list), ["command-guard"]);
    assert_eq!(call(&app, "POST", "/v1/policies", Some(&key), None).0, 405);
    assert_eq!(
        call(
            &app,
            "POST",
            "/v1/policies/command-guard/wasm",
            Some(&key),
            None
        )
        .0,
        405
    );
}

#[test]
fn uploads_must_be_whole_components_within_the_caps() {
    let app = app();
    let key = owner(&app);
    let wasm = component(b"ok");
    let check = |name: &str, body: Value, status: u16, code: &str| {
        let (s, e) = upload(&app, &key, name, body);
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (status, Some(code)),
            "{name}: {e}"
        );
        e["error"]["message"].as_str().unwrap().to_owned()
    };
    check(
        "p",
        json!({"wasm_base64": STANDARD.encode(&wasm), "sha256": sha256(b"something else")}),
        400,
        "sha256_mismatch",
    );
    let message = check(
        "p",
        wasm_body(&[&CORE_MODULE_HEADER[..], b"\x01\x04\x01\x60\x00\x00"].concat()),
        400,
        "not_a_component",
    );
    assert!(message.contains("wasm-tools component new"), "{message}");
    check(
        "p",
        wasm_body(b"#!/bin/sh\necho hi"),
        400,
        "not_a_component",
    );
    check(
        "p",
        wasm_body(&component(&vec![0; MAX_POLICY_BYTES])),
        413,
        "payload_too_large",
    );
    check(
        "p",
        json!({"wasm_base64": "not base64!"}),
        422,
        "validation_failed",
    );
    check("Bad_Name", wasm_body(&wasm), 422, "validation_failed");
    check(&"x".repeat(64), wasm_body(&wasm), 422, "validation_failed");
    for body in [
        json!({"wasm_base64": STANDARD.encode(&wasm), "bogus": 1}),
        json!({"wasm_base64": STANDARD.encode(&wasm), "config": "mode=deny"}),
        json!({"wasm_base64": STANDARD.encode(&wasm), "failure": "maybe"}),
        json!({"sha256": sha256(&wasm)}),
    ] {
        check("p", body, 422, "invalid_body");
    }
    for body in [
        json!({"wasm_base64": STANDARD.encode(&wasm), "position": 1001}),
        json!({"wasm_base64": STANDARD.encode(&wasm), "position": -1}),
        json!({"wasm_base64": STANDARD.encode(&wasm), "config": {"k": "x".repeat(16 * 1024)}}),
    ] {
        check("p", body, 422, "validation_failed");
    }
    let (_, list) = call(&app, "GET", "/v1/policies", Some(&key), None);
    assert!(names(&list).is_empty(), "{list}");

    // The largest binary fits in a request (its base64 is past the usual 1 MiB body).
    let largest = component(&vec![7; MAX_POLICY_BYTES - COMPONENT_HEADER.len()]);
    let (s, p) = upload(
        &app,
        &key,
        "largest",
        json!({"wasm_base64": STANDARD.encode(&largest), "sha256": sha256(&largest),
               "config": {"k": "x".repeat(15 * 1024)}}),
    );
    assert_eq!((s, &p["size"]), (201, &json!(MAX_POLICY_BYTES)), "{p}");
    let (s, _, _, body) = download(&app, &key, "/v1/policies/largest/wasm");
    assert_eq!((s, body.len()), (200, MAX_POLICY_BYTES));
    assert_eq!(body, largest);

    for i in 1..MAX_POLICIES {
        assert_eq!(
            upload(&app, &key, &format!("p{i}"), wasm_body(&wasm)).0,
            201
        );
    }
    check("one-more", wasm_body(&wasm), 409, "limit_exceeded");
    assert_eq!(upload(&app, &key, "p1", wasm_body(&component(b"2"))).0, 200);
}

#[test]
fn admins_write_while_members_and_the_orgs_machines_read() {
    let app = app();
    let key = owner(&app);
    let member = add_member(&app, &key, "m@example.com", "member");
    let admin = add_member(&app, &key, "a@example.com", "admin");
    let wasm = component(b"guard");

    assert_eq!(
        upload(&app, &member, "guard", wasm_body(&wasm)).0,
        403,
        "members do not upload"
    );
    assert_eq!(upload(&app, &admin, "guard", wasm_body(&wasm)).0, 201);
    for (method, body) in [("PATCH", Some(json!({"position": 3}))), ("DELETE", None)] {
        assert_eq!(
            call(&app, method, "/v1/policies/guard", Some(&member), body).0,
            403,
            "{method}"
        );
    }
    let (s, list) = call(&app, "GET", "/v1/policies", Some(&member), None);
    assert_eq!((s, names(&list)), (200, vec!["guard"]));
    let (_, t) = call(&app, "POST", "/v1/auth/token", Some(&member), None);
    let token = t["token"].as_str().unwrap();
    assert_eq!(download(&app, token, "/v1/policies/guard/wasm").3, wasm);

    // A paired machine reads with its host token, and only reads.
    let m = machine(1);
    let host = pair(&app, &key, &m);
    let host_token = connect(&app, &m, &host);
    let (s, list) = call(&app, "GET", "/v1/policies", Some(&host_token), None);
    assert_eq!((s, names(&list)), (200, vec!["guard"]), "{list}");
    let (s, got) = call(&app, "GET", "/v1/policies/guard", Some(&host_token), None);
    assert_eq!((s, &got["sha256"]), (200, &json!(sha256(&wasm))));
    let (s, hash, _, body) = download(
        &app,
        &host_token,
        &format!("/v1/policies/guard/wasm?sha256={}", sha256(&wasm)),
    );
    assert_eq!((s, hash, body), (200, Some(sha256(&wasm)), wasm.clone()));
    for (method, body) in [
        ("PUT", Some(wasm_body(&wasm))),
        ("PATCH", Some(json!({"position": 3}))),
        ("DELETE", None),
    ] {
        assert_eq!(
            call(&app, method, "/v1/policies/guard", Some(&host_token), body).0,
            401,
            "{method}"
        );
    }
    assert_eq!(call(&app, "GET", "/v1/policies", None, None).0, 401);
    assert_eq!(
        call(&app, "GET", "/v1/policies", Some("not.a.token"), None).0,
        401
    );

    // Revoked, its token reads nothing more (it has not expired yet).
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/hosts/{host}"),
            Some(&key),
            None
        )
        .0,
        204
    );
    let (s, e) = call(&app, "GET", "/v1/policies", Some(&host_token), None);
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("host_revoked")),
        "{e}"
    );
}

#[test]
fn another_orgs_policies_are_not_found() {
    let app = app();
    let a = owner(&app);
    let b = second_org(&app, &a);
    let theirs = component(b"bravo only");
    assert_eq!(upload(&app, &b, "bravo-guard", wasm_body(&theirs)).0, 201);
    assert_eq!(
        upload(&app, &a, "alpha-guard", wasm_body(&component(b"a"))).0,
        201
    );
    let m = machine(1);
    let a_host = pair(&app, &a, &m);
    let a_host_token = connect(&app, &m, &a_host);
    for cred in [&a, &a_host_token] {
        for path in ["/v1/policies/bravo-guard", "/v1/policies/bravo-guard/wasm"] {
            assert_eq!(
                call(&app, "GET", path, Some(cred.as_str()), None).0,
                404,
                "{path}"
            );
        }
        let (_, list) = call(&app, "GET", "/v1/policies", Some(cred.as_str()), None);
        assert_eq!(names(&list), ["alpha-guard"]);
    }
    for (method, body) in [("PATCH", Some(json!({"position": 3}))), ("DELETE", None)] {
        assert_eq!(
            call(&app, method, "/v1/policies/bravo-guard", Some(&a), body).0,
            404,
            "{method}"
        );
    }
    // A's upload under the same name is A's own policy; B's is untouched.
    assert_eq!(
        upload(&app, &a, "bravo-guard", wasm_body(&component(b"a's"))).0,
        201
    );
    assert_eq!(
        download(&app, &b, "/v1/policies/bravo-guard/wasm").3,
        theirs
    );
}

fn decision(seq: u64, at: i64) -> Value {
    json!({
        "seq": seq, "session_id": "ses_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d", "agent": "claude",
        "event": "pre-tool-use", "policy": "command-guard", "decision": "deny",
        "reason": "rm -rf / is not allowed", "duration_us": 310, "at": at
    })
}

fn report(app: &App, token: &str, host: &str, decisions: Vec<Value>) -> (u16, Value) {
    call(
        app,
        "POST",
        &format!("/v1/hosts/{host}/policy-decisions"),
        Some(token),
        Some(json!({ "decisions": decisions })),
    )
}

fn seqs(page: &Value) -> Vec<u64> {
    page["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn machines_report_decisions_once_and_members_read_them() {
    let app = app();
    let key = owner(&app);
    let (m1, m2) = (machine(1), machine(2));
    let (h1, h2) = (pair(&app, &key, &m1), pair(&app, &key, &m2));
    let (t1, t2) = (connect(&app, &m1, &h1), connect(&app, &m2, &h2));

    let (s, a) = report(
        &app,
        &t1,
        &h1,
        (1..=3).map(|s| decision(s, 1_000 + s as i64)).collect(),
    );
    assert_eq!((s, &a), (200, &json!({"accepted": 3})), "{a}");
    // A retry after a lost answer, with one new decision: only the new one counts.
    let (s, a) = report(
        &app,
        &t1,
        &h1,
        (2..=4).map(|s| decision(s, 1_000 + s as i64)).collect(),
    );
    assert_eq!((s, &a), (200, &json!({"accepted": 1})), "{a}");
    let mut other = decision(1, 900);
    other["decision"] = "allow".into();
    other["session_id"] = Value::Null;
    other["policy"] = "secret-guard".into();
    other["event"] = "user-prompt-submit".into();
    assert_eq!(report(&app, &t2, &h2, vec![other]).1["accepted"], 1);

    // Only the host itself reports, with its host token.
    assert_eq!(report(&app, &t2, &h1, vec![decision(9, 1)]).0, 403);
    assert_eq!(report(&app, &key, &h1, vec![decision(9, 1)]).0, 401);
    for (decisions, status) in [
        (vec![], 422),
        (
            (0..=MAX_REPORT as u64).map(|s| decision(s, 1)).collect(),
            422,
        ),
        (vec![json!({"seq": 9, "bogus": true})], 422),
        (
            vec![{
                let mut d = decision(9, 1);
                d["event"] = "PreToolUse".into();
                d
            }],
            422,
        ),
        (
            vec![{
                let mut d = decision(9, 1);
                d["decision"] = "maybe".into();
                d
            }],
            422,
        ),
        (
            vec![{
                let mut d = decision(9, 1);
                d["seq"] = (-1).into();
                d
            }],
            422,
        ),
    ] {
        let (s, e) = report(&app, &t1, &h1, decisions);
        assert_eq!(s, status, "{e}");
    }
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("/v1/hosts/{h1}/policy-decisions"),
            Some(&t1),
            None
        )
        .0,
        405
    );

    // Members read them newest first, filtered and paged.
    let list = |query: &str| {
        let (s, page) = call(
            &app,
            "GET",
            &format!("/v1/policy-decisions{query}"),
            Some(&key),
            None,
        );
        assert_eq!(s, 200, "{query}: {page}");
        page
    };
    let all = list("");
    assert_eq!(seqs(&all), [4, 3, 2, 1, 1]);
    assert_eq!(all["next_cursor"], Value::Null);
    let newest = &all["decisions"][0];
    assert_eq!(
        (
            &newest["host_id"],
            &newest["event"],
            &newest["decision"],
            &newest["duration_us"]
        ),
        (
            &json!(h1),
            &json!("pre-tool-use"),
            &json!("deny"),
            &json!(310)
        )
    );
    assert_eq!(newest["at"], "1970-01-01T00:00:01.004Z");
    assert!(newest["received_at"].is_string());
    assert_eq!(seqs(&list(&format!("?host_id={h2}"))), [1]);
    assert_eq!(seqs(&list("?decision=allow")), [1]);
    assert_eq!(
        seqs(&list("?policy=command-guard&decision=deny")),
        [4, 3, 2, 1]
    );
    assert_eq!(
        seqs(&list("?session_id=ses_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d")),
        [4, 3, 2, 1]
    );
    let mut walked = Vec::new();
    let mut page = list("?limit=2");
    loop {
        walked.extend(seqs(&page));
        match page["next_cursor"].as_str() {
            Some(c) => page = list(&format!("?limit=2&cursor={c}")),
            None => break,
        }
    }
    assert_eq!(walked, [4, 3, 2, 1, 1]);
    for query in [
        "?limit=201",
        "?decision=maybe",
        "?cursor=zz",
        "?host_id=hst_1",
        "?x=1",
    ] {
        let (s, _) = call(
            &app,
            "GET",
            &format!("/v1/policy-decisions{query}"),
            Some(&key),
            None,
        );
        assert_eq!(s, 400, "{query}");
    }
    assert_eq!(
        call(&app, "GET", "/v1/policy-decisions", Some(&t1), None).0,
        401,
        "machines report, members read"
    );

    // Another org sees none of them.
    let b = second_org(&app, &key);
    let (s, page) = call(&app, "GET", "/v1/policy-decisions", Some(&b), None);
    assert_eq!((s, seqs(&page)), (200, vec![]));
}

#[test]
fn the_openapi_document_covers_policies() {
    let app = app();
    let (_, doc) = call(&app, "GET", "/v1/openapi.json", None, None);
    for p in [
        "/v1/policies",
        "/v1/policies/{name}",
        "/v1/policies/{name}/wasm",
        "/v1/policy-decisions",
        "/v1/hosts/{id}/policy-decisions",
    ] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
    let put = &doc["paths"]["/v1/policies/{name}"]["put"];
    assert!(put["responses"]["201"].is_object() && put["responses"]["413"].is_object());
    assert!(doc["components"]["schemas"]["PolicyMeta"]["properties"]["sha256"].is_object());
    assert!(doc["components"]["schemas"]["DecisionReport"]["properties"]["seq"].is_object());
}
