use super::*;
use crate::sql::NativeSql;
use crate::stream::request::{Headers, parse_append};
use crate::stream::{MAX_STREAM_BYTES, format};

fn db() -> NativeSql {
    let sql = NativeSql::open_in_memory().unwrap();
    Store(&sql).migrate().unwrap();
    sql
}

fn new(content_type: &str) -> NewStream {
    NewStream {
        org_id: "org_1".into(),
        path: "s".into(),
        incarnation: "inc_1".into(),
        content_type: content_type.into(),
        ttl_secs: None,
        expires_at: None,
        closed: false,
        fork: None,
    }
}

fn post(pairs: &[(&str, &str)]) -> AppendReq {
    parse_append(&Headers::new(
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    ))
    .unwrap()
}

fn header<'a>(a: &'a Appended, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

fn all(store: &Store<'_, NativeSql>) -> Vec<u8> {
    let meta = store.meta().unwrap().unwrap();
    format::body(
        meta.json(),
        &store.rows(&meta, 0, meta.tail, usize::MAX).unwrap(),
    )
}

#[test]
fn appends_get_increasing_offsets_and_read_back_exactly() {
    let sql = db();
    let store = Store(&sql);
    let meta = store.create(&new("text/plain"), b"ab", 0).unwrap();
    assert_eq!(meta.tail, 2);
    let text = post(&[("content-type", "text/plain; charset=utf-8")]);
    let a = store.append(&meta, &text, b"cde", 1).unwrap();
    assert_eq!(
        (a.status, header(&a, h::NEXT_OFFSET)),
        (204, Some("0000000000000000_0000000000000005"))
    );
    assert_eq!(all(&store), b"abcde");
    let meta = store.meta().unwrap().unwrap();
    // A read from inside an append starts at that byte; a small budget still yields one append.
    let rows = store.rows(&meta, 3, meta.tail, 1).unwrap();
    assert_eq!(
        rows,
        vec![Row {
            end: 5,
            data: b"de".to_vec()
        }]
    );
    assert_eq!(
        store.rows(&meta, 0, 2, usize::MAX).unwrap().len(),
        1,
        "cap excludes later appends"
    );
}

#[test]
fn append_rules() {
    let sql = db();
    let store = Store(&sql);
    store.create(&new("text/plain"), b"", 0).unwrap();
    let status = |req: &AppendReq, body: &[u8]| {
        let meta = store.meta().unwrap().unwrap();
        store
            .append(&meta, req, body, 0)
            .map(|a| a.status)
            .unwrap_or_else(|e| e.status)
    };
    assert_eq!(
        status(&post(&[("content-type", "text/plain")]), b""),
        400,
        "empty body"
    );
    assert_eq!(status(&post(&[]), b"x"), 400, "no content type");
    assert_eq!(
        status(&post(&[("content-type", "application/json")]), b"1"),
        409,
        "mismatch"
    );
    let seq = |s: &str| post(&[("content-type", "text/plain"), ("stream-seq", s)]);
    assert_eq!(status(&seq("2"), b"x"), 204);
    assert_eq!(status(&seq("10"), b"x"), 409, "\"10\" sorts before \"2\"");
    assert_eq!(status(&seq("2"), b"x"), 409, "repeated");
    assert_eq!(status(&seq("3"), b"x"), 204);
    let close = post(&[("stream-closed", "true")]);
    assert_eq!(status(&close, b""), 204);
    assert_eq!(status(&close, b""), 204, "closing again is idempotent");
    let meta = store.meta().unwrap().unwrap();
    let after = store.append(&meta, &post(&[("content-type", "text/plain")]), b"late", 0);
    let e = after.unwrap_err();
    assert_eq!(e.status, 409);
    assert!(e.headers.contains(&(h::CLOSED, "true".into())));
    assert_eq!(all(&store), b"xx");
}

#[test]
fn idempotent_producers_never_duplicate() {
    let sql = db();
    let store = Store(&sql);
    store.create(&new("text/plain"), b"", 0).unwrap();
    let send = |epoch: i64, seq: i64, body: &[u8]| {
        let meta = store.meta().unwrap().unwrap();
        let req = post(&[
            ("content-type", "text/plain"),
            ("producer-id", "p"),
            ("producer-epoch", &epoch.to_string()),
            ("producer-seq", &seq.to_string()),
        ]);
        match store.append(&meta, &req, body, 0) {
            Ok(a) => (a.status, header(&a, h::PRODUCER_SEQ).map(str::to_owned)),
            Err(e) => (e.status, e.headers.first().map(|(_, v)| v.clone())),
        }
    };
    assert_eq!(
        send(0, 1, b"gap"),
        (409, Some("0".into())),
        "first seq must be 0"
    );
    assert_eq!(send(0, 0, b"a"), (200, Some("0".into())));
    assert_eq!(send(0, 1, b"b"), (200, Some("1".into())));
    assert_eq!(
        send(0, 0, b"a"),
        (204, Some("1".into())),
        "duplicate: the highest seq"
    );
    assert_eq!(send(0, 3, b"d").0, 409, "gap");
    assert_eq!(send(1, 1, b"x").0, 400, "a new epoch starts at 0");
    assert_eq!(send(1, 0, b"c"), (200, Some("0".into())));
    assert_eq!(send(0, 2, b"zombie"), (403, Some("1".into())), "fenced");
    assert_eq!(all(&store), b"abc");
}

#[test]
fn a_closing_producer_retry_is_a_duplicate() {
    let sql = db();
    let store = Store(&sql);
    store.create(&new("text/plain"), b"", 0).unwrap();
    let close = |seq: &str, body: &[u8]| {
        let meta = store.meta().unwrap().unwrap();
        let req = post(&[
            ("content-type", "text/plain"),
            ("stream-closed", "true"),
            ("producer-id", "p"),
            ("producer-epoch", "0"),
            ("producer-seq", seq),
        ]);
        store
            .append(&meta, &req, body, 0)
            .map(|a| a.status)
            .unwrap_or_else(|e| e.status)
    };
    assert_eq!(close("0", b"final"), 200);
    assert_eq!(
        close("0", b"other"),
        204,
        "the retry deduplicates to the original"
    );
    assert_eq!(close("1", b"more"), 409, "a new seq on a closed stream");
    assert_eq!(all(&store), b"final");
}

#[test]
fn json_appends_are_messages() {
    assert_eq!(
        encode_json(b" [1, {\"a\": [2]}] ", false).unwrap(),
        b"1,{\"a\": [2]},"
    );
    assert_eq!(encode_json(b"\"x\"", false).unwrap(), b"\"x\",");
    assert_eq!(encode_json(b"[[1,2]]", false).unwrap(), b"[1,2],");
    assert_eq!(encode_json(b"[]", true).unwrap(), b"");
    assert_eq!(encode_json(b"[]", false).unwrap_err().status, 400);
    assert_eq!(encode_json(b"{", false).unwrap_err().status, 400);
    assert_eq!(
        split_json("1,{\"a\": [2, 3]},\"x,y\",").unwrap(),
        ["1", "{\"a\": [2, 3]}", "\"x,y\""]
    );

    let sql = db();
    let store = Store(&sql);
    let initial = encode_json(b"[1,2]", true).unwrap();
    let meta = store.create(&new("application/json"), &initial, 0).unwrap();
    store
        .append(
            &meta,
            &post(&[("content-type", "application/json")]),
            b"{\"b\":3}",
            0,
        )
        .unwrap();
    assert_eq!(all(&store), b"[1,2,{\"b\":3}]");
}

#[test]
fn fork_prefixes_cut_bytes_or_messages() {
    let row = Row {
        end: 9,
        data: b"1,[2],3,".to_vec(),
    };
    assert_eq!(fork_prefix(Some(&row), 2, true).unwrap(), b"1,[2],");
    assert_eq!(fork_prefix(Some(&row), 3, true).unwrap(), b"1,[2],3,");
    assert_eq!(fork_prefix(Some(&row), 4, true).unwrap_err().status, 400);
    assert_eq!(fork_prefix(Some(&row), 8, false).unwrap(), row.data);
    assert_eq!(fork_prefix(Some(&row), 9, false).unwrap_err().status, 400);
    assert_eq!(fork_prefix(None, 1, false).unwrap_err().status, 400);
    assert!(fork_prefix(None, 0, false).unwrap().is_empty());
}

#[test]
fn a_fork_continues_the_sources_offsets() {
    let sql = db();
    let store = Store(&sql);
    let mut spec = new("text/plain");
    spec.fork = Some(NewFork {
        source: "src".into(),
        offset: 10,
        sub_offset: 2,
        prefix: b"ab".to_vec(),
    });
    let meta = store.create(&spec, b"cd", 0).unwrap();
    assert_eq!(meta.tail, 14);
    let rows = store.rows(&meta, 10, meta.tail, usize::MAX).unwrap();
    assert_eq!(rows.iter().map(|r| r.end).collect::<Vec<_>>(), [12, 14]);
    let source = store.meta().unwrap().unwrap();
    assert_eq!(check_fork_source(&source, Some("TEXT/plain"), None), Ok(14));
    assert_eq!(
        check_fork_source(&source, None, Some(Offset(15)))
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        check_fork_source(&source, Some("application/json"), None)
            .unwrap_err()
            .status,
        409
    );
}

#[test]
fn purging_leaves_only_the_notices() {
    let sql = db();
    let store = Store(&sql);
    let mut spec = new("text/plain");
    spec.fork = Some(NewFork {
        source: "src".into(),
        offset: 0,
        sub_offset: 0,
        prefix: Vec::new(),
    });
    let meta = store.create(&spec, b"x", 0).unwrap();
    store.add_fork("child#1").unwrap();
    store.add_fork("child#1").unwrap();
    assert_eq!(
        store.meta().unwrap().unwrap().forks,
        1,
        "fork references are idempotent"
    );
    store.purge(&meta).unwrap();
    assert!(store.meta().unwrap().is_none());
    let notices: Vec<Notice> = store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        notices,
        [
            Notice::Release {
                source: "org_1:src".into(),
                child: "org_1:s#inc_1".into()
            },
            Notice::Unregister {
                org_id: "org_1".into(),
                path: "s".into(),
                incarnation: "inc_1".into()
            },
        ]
    );
    // A new life of the path starts clean.
    let again = store.create(&new("text/plain"), b"", 1).unwrap();
    assert_eq!((again.tail, again.forks), (0, 0));
}

#[test]
fn sliding_ttl_and_fixed_expiry() {
    let sql = db();
    let store = Store(&sql);
    let mut spec = new("text/plain");
    spec.ttl_secs = Some(10);
    let meta = store.create(&spec, b"", 1_000).unwrap();
    assert!(!meta.expired(10_999) && meta.expired(11_000));
    store.touch(&meta, 5_000).unwrap();
    assert!(
        !store.meta().unwrap().unwrap().expired(11_000),
        "use slides the expiry"
    );
    let mut fixed = new("text/plain");
    fixed.expires_at = Some(("x".into(), 2_000));
    let sql2 = db();
    let m = Store(&sql2).create(&fixed, b"", 0).unwrap();
    assert_eq!(m.expiry_ms(), Some(2_000));
}

#[test]
fn a_stream_has_a_size_cap() {
    let sql = db();
    let store = Store(&sql);
    store
        .create(&new("application/octet-stream"), b"", 0)
        .unwrap();
    sql.execute(
        "UPDATE stream SET bytes = ?",
        &[(MAX_STREAM_BYTES - 1).into()],
    )
    .unwrap();
    let meta = store.meta().unwrap().unwrap();
    let e = store
        .append(
            &meta,
            &post(&[("content-type", "application/octet-stream")]),
            b"xy",
            0,
        )
        .unwrap_err();
    assert_eq!(e.status, 413);
}
