//! Session streams in the Worker: who may touch a stream, what other orgs see, limits, bad
//! input, a 100 MiB stream read back in bounded chunks, and state across a workerd restart.
//! (The protocol itself is covered by the official conformance suite, `streams_js`.)

use crate::fresh_org;
use serde_json::json;
use tether_tests::{Api, Worker};

const NEXT: &str = "stream-next-offset";

async fn put(api: &Api, path: &str, ct: &str, body: &'static [u8]) -> u16 {
    let req = api
        .request("PUT", &format!("/v1/stream/{path}"))
        .header("content-type", ct)
        .body(body);
    api.send(req).await.0
}

async fn append(api: &Api, path: &str, ct: &str, body: Vec<u8>) -> reqwest::Response {
    api.request("POST", &format!("/v1/stream/{path}"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn read_all(api: &Api, path: &str) -> (u16, Vec<u8>) {
    let res = api
        .request("GET", &format!("/v1/stream/{path}?offset=-1"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn streams_need_a_credential_and_the_right_role() {
    let (url, owner) = fresh_org("Stream roles", "SRL").await;
    let api = Api::new(&url, &owner);
    assert_eq!(put(&api, "roles", "text/plain", b"x").await, 201);

    let anon = Api::anonymous(&url);
    for method in ["GET", "HEAD", "PUT", "POST", "DELETE"] {
        let res = anon
            .request(method, "/v1/stream/roles")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method}");
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    }
    let bad = Api::new(&url, "tk_1111111111111111111111111111111111111111111");
    assert_eq!(
        bad.send(bad.request("GET", "/v1/stream/roles")).await.0,
        401
    );
    // A browser's preflight carries no credential and must still succeed.
    let pre = anon
        .request("OPTIONS", "/v1/stream/roles")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("if-none-match"));

    let (_, m) = api
        .post(
            "/v1/members",
            json!({"email": "m@streams.dev", "name": "M", "role": "member"}),
        )
        .await;
    let member = api.with(m["api_key"]["secret"].as_str().unwrap());
    assert_eq!(
        append(&member, "roles", "text/plain", b"y".to_vec())
            .await
            .status(),
        204
    );
    assert_eq!(read_all(&member, "roles").await, (200, b"xy".to_vec()));
    let (s, e) = member
        .send(member.request("DELETE", "/v1/stream/roles"))
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        api.send(api.request("DELETE", "/v1/stream/roles")).await.0,
        204
    );
    assert_eq!(read_all(&member, "roles").await.0, 404);
}

#[tokio::test]
async fn another_orgs_stream_is_not_found() {
    let (url, a_key) = fresh_org("Streams A", "SIA").await;
    let (_, b_key) = fresh_org("Streams B", "SIB").await;
    let (a, b) = (Api::new(&url, &a_key), Api::new(&url, &b_key));
    assert_eq!(
        put(&a, "shared/name", "text/plain", b"secret of A").await,
        201
    );

    for method in ["GET", "HEAD", "POST", "DELETE"] {
        let req = b
            .request(method, "/v1/stream/shared/name")
            .header("content-type", "text/plain")
            .body("B was here");
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404, "{method}");
    }
    for live in ["long-poll", "sse"] {
        let path = format!("/v1/stream/shared/name?offset=-1&live={live}");
        assert_eq!(b.send(b.request("GET", &path)).await.0, 404, "{live}");
    }
    // Forking A's stream from B finds no source.
    let fork = b
        .request("PUT", "/v1/stream/stolen")
        .header("stream-forked-from", "/v1/stream/shared/name");
    assert_eq!(b.send(fork).await.0, 404);
    // The same path in B is B's own stream; A's is untouched.
    assert_eq!(put(&b, "shared/name", "text/plain", b"B's own").await, 201);
    assert_eq!(read_all(&b, "shared/name").await.1, b"B's own");
    assert_eq!(read_all(&a, "shared/name").await.1, b"secret of A");
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_the_json_error() {
    let (url, key) = fresh_org("Stream input", "SBI").await;
    let api = Api::new(&url, &key);
    assert_eq!(put(&api, "in", "application/json", b"[]").await, 201);
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static [u8],
        u16,
    );
    let cases: Vec<Case> = vec![
        ("GET", "/v1/stream/", vec![], b"", 400),
        ("GET", "/v1/stream/a//b", vec![], b"", 400),
        ("GET", "/v1/stream/in?offset=1,2", vec![], b"", 400),
        (
            "GET",
            "/v1/stream/in?offset=-1&live=forever",
            vec![],
            b"",
            400,
        ),
        ("GET", "/v1/stream/in?live=sse", vec![], b"", 400),
        ("PUT", "/v1/stream/t", vec![("stream-ttl", "1.5")], b"", 400),
        (
            "PUT",
            "/v1/stream/t",
            vec![("stream-expires-at", "tomorrow")],
            b"",
            400,
        ),
        (
            "PUT",
            "/v1/stream/t",
            vec![("stream-forked-from", "elsewhere")],
            b"",
            400,
        ),
        (
            "PUT",
            "/v1/stream/in",
            vec![("content-type", "text/plain")],
            b"",
            409,
        ),
        (
            "POST",
            "/v1/stream/in",
            vec![("content-type", "application/json")],
            b"{oops",
            400,
        ),
        (
            "POST",
            "/v1/stream/in",
            vec![("content-type", "application/json")],
            b"[]",
            400,
        ),
        (
            "POST",
            "/v1/stream/in",
            vec![("content-type", "text/plain")],
            b"1",
            409,
        ),
        (
            "POST",
            "/v1/stream/in",
            vec![("producer-id", "p")],
            b"1",
            400,
        ),
        (
            "POST",
            "/v1/stream/missing",
            vec![("content-type", "text/plain")],
            b"1",
            404,
        ),
        ("PATCH", "/v1/stream/in", vec![], b"", 405),
    ];
    for (method, path, headers, body, want) in cases {
        let mut req = api.request(method, path).body(body);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        assert_eq!(api.send(req).await.0, want, "{method} {path} {headers:?}");
    }
    // Nothing above changed the stream.
    assert_eq!(read_all(&api, "in").await.1, b"[]");
}

#[tokio::test]
async fn limits_answer_413() {
    let (url, key) = fresh_org("Stream limits", "SLM").await;
    let api = Api::new(&url, &key);
    assert_eq!(put(&api, "big", "application/octet-stream", b"").await, 201);
    let res = append(
        &api,
        "big",
        "application/octet-stream",
        vec![7u8; 1024 * 1024 + 1],
    )
    .await;
    assert_eq!(res.status(), 413);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(
        append(
            &api,
            "big",
            "application/octet-stream",
            vec![7u8; 1024 * 1024]
        )
        .await
        .status(),
        204
    );
}

/// 100 MiB in 1 MiB appends, read back from the start in bounded chunks (never the whole
/// stream in one answer) and compared byte for byte.
#[tokio::test]
async fn a_100_mib_stream_reads_back_in_bounded_chunks() {
    let (url, key) = fresh_org("Stream size", "SSZ").await;
    let api = Api::new(&url, &key);
    assert_eq!(put(&api, "big", "application/octet-stream", b"").await, 201);
    const MIB: usize = 1024 * 1024;
    let chunk = |i: usize| -> Vec<u8> { (0..MIB).map(|j| (i * 31 + j * 7) as u8).collect() };
    for i in 0..100 {
        assert_eq!(
            append(&api, "big", "application/octet-stream", chunk(i))
                .await
                .status(),
            204
        );
    }
    let mut offset = "-1".to_owned();
    let mut got = Vec::with_capacity(100 * MIB);
    let mut answers = 0;
    loop {
        let res = api
            .request("GET", &format!("/v1/stream/big?offset={offset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let up_to_date = res.headers().contains_key("stream-up-to-date");
        offset = res.headers()[NEXT].to_str().unwrap().to_owned();
        let body = res.bytes().await.unwrap();
        assert!(
            body.len() <= 4 * MIB + MIB,
            "one answer carried {} bytes",
            body.len()
        );
        got.extend_from_slice(&body);
        answers += 1;
        if up_to_date {
            break;
        }
    }
    assert!(answers >= 20, "read in {answers} answers");
    assert_eq!(got.len(), 100 * MIB);
    for i in 0..100 {
        assert!(
            got[i * MIB..(i + 1) * MIB] == chunk(i)[..],
            "MiB {i} differs"
        );
    }
}

#[tokio::test]
async fn streams_survive_a_workerd_restart() {
    let dir = std::env::temp_dir().join(format!("tether-streams-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (jwt, boot) = ("s".repeat(40), "boot-token-for-streams".to_owned());
    let producer = |seq: &str| {
        [
            ("producer-id", "daemon".to_owned()),
            ("producer-epoch", "0".to_owned()),
            ("producer-seq", seq.to_owned()),
        ]
    };
    let key = {
        let w = Worker::start_with(Some(&dir), &jwt, &boot).unwrap();
        let key = w.bootstrap().await.unwrap();
        let api = Api::new(&w.url, &key);
        assert_eq!(put(&api, "term", "text/plain", b"before ").await, 201);
        let mut req = api
            .request("POST", "/v1/stream/term")
            .header("content-type", "text/plain")
            .body("restart");
        for (k, v) in producer("0") {
            req = req.header(k, v);
        }
        assert_eq!(req.send().await.unwrap().status(), 200);
        key
    };
    let w = Worker::start_with(Some(&dir), &jwt, &boot).unwrap();
    let api = Api::new(&w.url, &key);
    assert_eq!(
        read_all(&api, "term").await,
        (200, b"before restart".to_vec())
    );
    // The producer's state survived: a retry is still a duplicate, the next seq appends.
    for (seq, body, want) in [("0", "restart", 204), ("1", "!", 200)] {
        let mut req = api
            .request("POST", "/v1/stream/term")
            .header("content-type", "text/plain")
            .body(body);
        for (k, v) in producer(seq) {
            req = req.header(k, v);
        }
        assert_eq!(req.send().await.unwrap().status(), want, "seq {seq}");
    }
    assert_eq!(read_all(&api, "term").await.1, b"before restart!");
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}
