//! The Durable Object classes: thin workers-rs adapters over the plain logic in this crate.
//! Each class lives in its own file; [`do_sql::DoSql`] is the object's SQLite behind [`crate::sql::Sql`].

mod do_sql;
mod host;
mod org_store;
mod stream;

pub use host::{HOST_HEADER, HostObject};
pub use org_store::OrgStore;
pub use stream::{ACTOR_HEADER, ORG_HEADER, PATH_HEADER, StreamObject};

use crate::error::ErrorBody;
use crate::org::OrgCall;
use crate::sync::{ShapeChunk, ShapeMeta, ShapeRead};
use wasm_bindgen::JsValue;
use worker::{ObjectNamespace, RequestInit, Stub};

/// The internal URL the Worker uses to call an object; only the path matters.
pub const ORG_CALL_URL: &str = "https://org.internal/call";
/// The internal URL of an org object's shape reads.
pub const ORG_SHAPE_URL: &str = "https://org.internal/shape";
/// The header an org object answers a shape read's [`ShapeMeta`] in (JSON); the body is the
/// messages, passed through to the client.
pub const SHAPE_META_HEADER: &str = "x-tether-shape";

/// Why a call to another object failed.
#[derive(Debug)]
pub enum CallError {
    /// The object answered with an error.
    Answered(u16, ErrorBody),
    /// The call did not complete (the object could not be reached or its answer read).
    Failed(String),
}

/// Sends one call to an org's object; answers its JSON bytes.
pub async fn call_org(orgs: &ObjectNamespace, call: &OrgCall) -> Result<Vec<u8>, CallError> {
    let failed = |e: &dyn std::fmt::Display| CallError::Failed(e.to_string());
    let stub = orgs
        .id_from_name(&call.org_id)
        .and_then(|id| id.get_stub())
        .map_err(|e| failed(&e))?;
    let body = serde_json::to_string(call).map_err(|e| failed(&e))?;
    let mut init = RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let req = worker::Request::new_with_init(ORG_CALL_URL, &init).map_err(|e| failed(&e))?;
    fetch_object(&stub, req).await
}

/// Reads a shape from an org's object (a live read may wait there for up to 20 s).
pub async fn read_shape(
    orgs: &ObjectNamespace,
    org_id: &str,
    read: &ShapeRead,
) -> Result<ShapeChunk, CallError> {
    let failed = |e: &dyn std::fmt::Display| CallError::Failed(e.to_string());
    let stub = orgs
        .id_from_name(org_id)
        .and_then(|id| id.get_stub())
        .map_err(|e| failed(&e))?;
    let body = serde_json::to_string(read).map_err(|e| failed(&e))?;
    let mut init = RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let req = worker::Request::new_with_init(ORG_SHAPE_URL, &init).map_err(|e| failed(&e))?;
    let mut res = stub.fetch_with_request(req).await.map_err(|e| failed(&e))?;
    let status = res.status_code();
    let meta = res
        .headers()
        .get(SHAPE_META_HEADER)
        .map_err(|e| failed(&e))?;
    let bytes = res.bytes().await.map_err(|e| failed(&e))?;
    match meta {
        Some(meta) if (200..300).contains(&status) => Ok(ShapeChunk {
            meta: serde_json::from_str::<ShapeMeta>(&meta).map_err(|e| failed(&e))?,
            body: bytes,
        }),
        _ => {
            let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|e| failed(&e))?;
            Err(CallError::Answered(status, body))
        }
    }
}

/// Sends `req` to an object and answers the body of a 2xx answer, or the object's JSON error.
/// Every call between the Worker and the objects, and between objects, goes through here.
pub async fn fetch_object(stub: &Stub, req: worker::Request) -> Result<Vec<u8>, CallError> {
    let failed = |e: &dyn std::fmt::Display| CallError::Failed(e.to_string());
    let mut res = stub.fetch_with_request(req).await.map_err(|e| failed(&e))?;
    let status = res.status_code();
    let bytes = res.bytes().await.map_err(|e| failed(&e))?;
    if (200..300).contains(&status) {
        return Ok(bytes);
    }
    let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|e| failed(&e))?;
    Err(CallError::Answered(status, body))
}
