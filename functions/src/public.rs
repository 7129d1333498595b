//! The routes that need no credential: health, version and the OpenAPI document. The Worker
//! and the Spin component serve these with this same code.

use crate::http::{self as h, Request, Response};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Version {
    pub name: String,
    pub version: String,
    pub api: String,
    /// Which runtime answered: `workers` or `spin`.
    pub runtime: String,
}

#[utoipa::path(get, path = "/health", tag = "meta", responses((status = 200, body = Health)))]
pub fn health() -> Response {
    h::json(
        StatusCode::OK,
        &Health {
            status: "ok".into(),
        },
    )
}

#[utoipa::path(get, path = "/version", tag = "meta", responses((status = 200, body = Version)))]
pub fn version(runtime: &str) -> Response {
    h::json(
        StatusCode::OK,
        &Version {
            name: "tether".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api: "v1".into(),
            runtime: runtime.into(),
        },
    )
}

/// The OpenAPI 3.1 document, generated from the Rust types once per isolate.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "this document", content_type = "application/json")))]
pub fn openapi() -> Response {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    h::json_bytes(
        StatusCode::OK,
        DOC.get_or_init(|| crate::api::openapi_document().into_bytes())
            .clone(),
    )
}

/// Answers the public routes; `None` for everything else.
pub fn handle(req: &Request, runtime: &str) -> Option<Response> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    match req.uri().path() {
        "/health" | "/v1/health" => Some(health()),
        "/version" | "/v1/version" => Some(version(runtime)),
        "/v1/openapi.json" | "/openapi.json" => Some(openapi()),
        _ => None,
    }
}
