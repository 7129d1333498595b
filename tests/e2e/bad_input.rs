//! Every kind of bad input gets a clear 4xx with the JSON error shape, and the Worker keeps
//! serving afterwards (a panic on Wasm would kill the isolate).

use crate::fresh_org;
use serde_json::json;
use tether_tests::Api;

#[tokio::test]
async fn malformed_requests_get_4xx_never_5xx() {
    let (url, key) = fresh_org("Bad", "BAD").await;
    let api = Api::new(&url, &key);
    let raw = |method: &str, path: &str, body: Vec<u8>, ct: &str| {
        api.request(method, path)
            .header("content-type", ct)
            .body(body)
    };
    let big = vec![b'a'; 2 * 1024 * 1024];
    let chunked_big = reqwest::Body::wrap_stream(futures_stream(big.clone()));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("truncated JSON", raw("POST", "/v1/tasks", b"{\"title\": ".to_vec(), "application/json"), 400),
        ("not JSON", raw("POST", "/v1/tasks", b"title=x".to_vec(), "application/json"), 400),
        ("bad UTF-8", raw("POST", "/v1/tasks", b"{\"title\": \"\xff\xfe\"}".to_vec(), "application/json"), 400),
        ("empty body", raw("POST", "/v1/tasks", Vec::new(), "application/json"), 400),
        ("wrong type", raw("POST", "/v1/tasks", br#"{"title": 42}"#.to_vec(), "application/json"), 422),
        ("unknown field", raw("POST", "/v1/tasks", br#"{"title": "x", "owner": "me"}"#.to_vec(), "application/json"), 422),
        ("missing field", raw("POST", "/v1/tasks", br#"{"description": "x"}"#.to_vec(), "application/json"), 422),
        ("array body", raw("POST", "/v1/tasks", br#"[1,2,3]"#.to_vec(), "application/json"), 422),
        ("deep nesting", raw("POST", "/v1/tasks", [b"{\"title\":".as_slice(), &[b'['; 5000], &[b']'; 5000], b"}"].concat(), "application/json"), 422),
        ("title too long", raw("POST", "/v1/tasks", json!({"title": "x".repeat(201)}).to_string().into_bytes(), "application/json"), 422),
        ("description too long", raw("POST", "/v1/tasks", json!({"title": "x", "description": "d".repeat(100_001)}).to_string().into_bytes(), "application/json"), 422),
        ("too many labels", raw("POST", "/v1/tasks", json!({"title": "x", "labels": vec!["l"; 21].iter().enumerate().map(|(i, _)| format!("l{i}")).collect::<Vec<_>>()}).to_string().into_bytes(), "application/json"), 422),
        ("control characters", raw("POST", "/v1/tasks", json!({"title": "a\u{0}b"}).to_string().into_bytes(), "application/json"), 422),
        ("bad enum", raw("POST", "/v1/tasks", br#"{"title": "x", "priority": "asap"}"#.to_vec(), "application/json"), 422),
        ("unknown status", raw("POST", "/v1/tasks", json!({"title": "x", "status_id": "sts_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"}).to_string().into_bytes(), "application/json"), 422),
        ("non-member assignee", raw("POST", "/v1/tasks", json!({"title": "x", "assignee_id": "mem_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"}).to_string().into_bytes(), "application/json"), 422),
        ("wrong content type", raw("POST", "/v1/tasks", br#"{"title": "x"}"#.to_vec(), "text/plain"), 415),
        ("2 MiB body", raw("POST", "/v1/tasks", big, "application/json"), 413),
        ("2 MiB chunked body", api.request("POST", "/v1/tasks").header("content-type", "application/json").body(chunked_big), 413),
        ("bad id", api.request("GET", "/v1/projects/prj_not-hex"), 400),
        ("path traversal id", api.request("GET", "/v1/tasks/..%2F..%2Fetc"), 400),
        ("bad slug", api.request("GET", "/v1/tasks/TOOLONGPREFIX-1"), 400),
        ("unknown id", api.request("GET", "/v1/tasks/tsk_0190c6e8f1d87a3b9c2d4e5f6a7b8c9d"), 404),
        ("bad cursor", api.request("GET", "/v1/tasks?cursor=%%%"), 400),
        ("forged cursor", api.request("GET", "/v1/tasks?cursor=bm90LWEtbnVtYmVy"), 400),
        ("limit too big", api.request("GET", "/v1/tasks?limit=1000"), 400),
        ("limit not a number", api.request("GET", "/v1/tasks?limit=ten"), 400),
        ("unknown query parameter", api.request("GET", "/v1/tasks?colour=red"), 400),
        ("unknown route", api.request("GET", "/v1/nope"), 404),
        ("wrong method", api.request("PUT", "/v1/tasks"), 405),
        ("bad branch", raw("POST", "/v1/projects", br#"{"name": "p", "default_branch": "a..b"}"#.to_vec(), "application/json"), 422),
        ("bad email", raw("POST", "/v1/members", br#"{"email": "nope", "name": "n", "role": "member"}"#.to_vec(), "application/json"), 422),
        ("bad role", raw("POST", "/v1/members", br#"{"email": "a@b.co", "name": "n", "role": "god"}"#.to_vec(), "application/json"), 422),
    ];
    for (name, req, expected) in cases {
        let (status, body) = api.send(req).await;
        assert_eq!(status, expected, "{name}: {body}");
    }
    // Still alive and still correct.
    let (status, t) = api
        .post("/v1/tasks", json!({"title": "after the storm"}))
        .await;
    assert_eq!(
        (status, t["slug"].as_str()),
        (201, Some("BAD-1")),
        "no bad request consumed a number"
    );
}

fn futures_stream(
    data: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    futures_util::stream::iter(chunks)
}
