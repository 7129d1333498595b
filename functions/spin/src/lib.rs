//! The stateless Tether functions as a Spin component (wasi:http 0.2, runs on Spin and on
//! `wasmtime serve`). It answers the public routes (health, version, OpenAPI) with the same
//! handler code as the Worker; state lives with the Worker's Durable Objects, so any other
//! route is forwarded to the edge named by the `TETHER_EDGE_URL` environment variable, or
//! answered 404 when none is configured.

use spin_sdk::http::{Method, send};
use spin_sdk::http_component;
use tether_functions::error::ApiError;
use tether_functions::http as h;

#[http_component]
async fn handle(req: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
    if let Some(res) = tether_functions::public::handle(&req, "spin") {
        return res;
    }
    match std::env::var("TETHER_EDGE_URL") {
        Ok(edge) if !edge.is_empty() => forward(&edge, req).await.unwrap_or_else(|e| h::error(&e)),
        _ => h::error(&ApiError::new(
            http::StatusCode::NOT_FOUND,
            "not_found",
            "this Spin deployment serves only /health, /version and /v1/openapi.json \
             (set TETHER_EDGE_URL to forward the API to the edge)",
        )),
    }
}

/// Sends the request on to the edge and relays its answer.
async fn forward(
    edge: &str,
    req: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, ApiError> {
    let bad_gateway = |e: &dyn std::fmt::Display| {
        ApiError::new(
            http::StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("the edge did not answer: {e}"),
        )
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", edge.trim_end_matches('/'));
    let method = Method::from(req.method().clone());
    let mut out = spin_sdk::http::Request::builder();
    out.method(method).uri(url);
    for (name, value) in req.headers() {
        // Hop-by-hop and host headers belong to this connection, not the next one.
        let hop = matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        );
        if let (false, Ok(v)) = (hop, value.to_str()) {
            out.header(name.as_str(), v);
        }
    }
    let out = out.body(req.into_body()).build();
    send::<_, http::Response<Vec<u8>>>(out)
        .await
        .map_err(|e| bad_gateway(&e))
}
