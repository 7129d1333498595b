//! Request and response plumbing shared by every route: bodies, queries, JSON answers.

use crate::error::ApiError;
use http::{HeaderValue, StatusCode, header};
use serde::{Serialize, de::DeserializeOwned};

/// The largest request body most routes accept.
pub const MAX_BODY: usize = 1024 * 1024;
/// The largest request body any route accepts: a guardrail policy's upload (a binary of up to
/// 768 KiB is 1 MiB as base64) with its config.
pub const MAX_UPLOAD: usize = MAX_BODY + 64 * 1024;

pub type Request = http::Request<Vec<u8>>;
pub type Response = http::Response<Vec<u8>>;

/// Builds a response; the builder cannot fail for the statuses and headers used here.
fn response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut res = http::Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body),
        Err(e) => error(&ApiError::internal(&e)),
    }
}

/// A response whose body is already serialised JSON.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    response(status, "application/json", body)
}

/// A response of raw bytes, such as a policy binary.
pub fn bytes(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    response(status, content_type, body)
}

pub fn no_content() -> Response {
    let mut res = http::Response::new(Vec::new());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

pub fn error(e: &ApiError) -> Response {
    let mut res = json(e.status, &e.body);
    if let Some(secs) = e.retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if e.status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tether\""),
        );
    }
    res
}

/// Decodes a JSON request body of at most [`MAX_BODY`] bytes. Syntax errors (including bad
/// UTF-8 and truncation) are 400; well-formed JSON of the wrong shape (wrong types, unknown or
/// missing fields) is 422.
pub fn body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    body_up_to(req, MAX_BODY)
}

/// [`body`] for the route that takes more than [`MAX_BODY`] (at most [`MAX_UPLOAD`]).
pub fn body_up_to<T: DeserializeOwned>(req: &Request, max: usize) -> Result<T, ApiError> {
    let bytes = req.body();
    if bytes.len() > max {
        return Err(too_large(max));
    }
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request bodies must be application/json",
            ));
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "a JSON request body is required",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let at = serde_json::json!({ "line": e.line(), "column": e.column() });
        match e.classify() {
            serde_json::error::Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                e.to_string(),
            )
            .with_details(at),
            _ => ApiError::bad_request("invalid_json", format!("malformed JSON: {e}"))
                .with_details(at),
        }
    })
}

/// Decodes the query string; unknown, duplicate or mistyped parameters are 400.
pub fn query<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let q = req.uri().query().unwrap_or("");
    serde_urlencoded::from_str(q).map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))
}

pub fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request bodies are limited to {max} bytes"),
    )
}

/// The credential a request carries: `Authorization: Bearer ...` or `X-API-Key: ...`.
pub fn credential(req: &Request) -> Option<&str> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim());
    }
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct In {
        title: String,
        n: Option<u32>,
    }

    fn req(body: &[u8]) -> Request {
        http::Request::builder()
            .header("content-type", "application/json")
            .body(body.to_vec())
            .unwrap()
    }

    fn status(bytes: &[u8]) -> u16 {
        body::<In>(&req(bytes)).unwrap_err().status.as_u16()
    }

    #[test]
    fn bodies_are_classified() {
        assert!(body::<In>(&req(br#"{"title":"x"}"#)).is_ok());
        assert_eq!(status(b""), 400);
        assert_eq!(status(b"{\"title\":"), 400);
        assert_eq!(status(b"{\"title\":\"\xff\xfe\"}"), 400, "bad UTF-8");
        assert_eq!(status(br#"{"title": 3}"#), 422, "wrong type");
        assert_eq!(status(br#"{"title":"x","extra":1}"#), 422, "unknown field");
        assert_eq!(status(br#"{"n":1}"#), 422, "missing field");
        assert_eq!(status(br#"{"title":"x","n":-1}"#), 422, "out of range");
        assert_eq!(
            status(&[b'['; 10_000]),
            422,
            "deep nesting of the wrong shape"
        );
        assert_eq!(status(&vec![b' '; MAX_BODY + 1]), 413);
        let up_to = |bytes: &[u8]| {
            body_up_to::<In>(&req(bytes), MAX_UPLOAD)
                .unwrap_err()
                .status
                .as_u16()
        };
        assert_eq!(up_to(&vec![b' '; MAX_BODY + 1]), 400, "past MAX_BODY, read");
        assert_eq!(up_to(&vec![b' '; MAX_UPLOAD + 1]), 413);
        let r = http::Request::builder()
            .header("content-type", "text/plain")
            .body(b"{}".to_vec())
            .unwrap();
        assert_eq!(body::<In>(&r).unwrap_err().status.as_u16(), 415);
    }

    #[test]
    fn credentials_from_either_header() {
        let r = http::Request::builder()
            .header("authorization", "Bearer  tk_abc ")
            .body(vec![])
            .unwrap();
        assert_eq!(credential(&r), Some("tk_abc"));
        let r = http::Request::builder()
            .header("x-api-key", "tk_x")
            .body(vec![])
            .unwrap();
        assert_eq!(credential(&r), Some("tk_x"));
        let r = http::Request::builder()
            .header("authorization", "Basic Zm9v")
            .body(vec![])
            .unwrap();
        assert_eq!(credential(&r), None);
    }
}
