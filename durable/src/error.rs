//! The store's error type and the one public JSON error shape every surface answers with.

use crate::sql::SqlError;
use serde::{Deserialize, Serialize};

/// `{"error": {"code", "message", "details"}}`: the body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `not_found` or `validation_failed`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// Extra structured context (for example the offending field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                details: None,
            },
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.error.details = Some(details);
        self
    }
}

/// What the org store logic can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    #[error("storage failure")]
    Sql(#[from] SqlError),
    #[error("encoding the answer")]
    Encode(#[from] serde_json::Error),
}

impl StoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status and public body for this error.
    pub fn to_response(&self) -> (u16, ErrorBody) {
        match self {
            Self::NotFound { what } => (
                404,
                ErrorBody::new("not_found", format!("{what} not found")),
            ),
            Self::Conflict { code, message } => (409, ErrorBody::new(*code, message.clone())),
            Self::Invalid { field, message } => (
                422,
                ErrorBody::new("validation_failed", format!("{field}: {message}"))
                    .with_details(serde_json::json!({ "field": field })),
            ),
            Self::BadRequest { field, message } => (
                400,
                ErrorBody::new("bad_request", format!("{field}: {message}"))
                    .with_details(serde_json::json!({ "field": field })),
            ),
            // The engine's message stays in the logs: it can name tables and constraints.
            Self::Sql(_) | Self::Encode(_) => {
                (500, ErrorBody::new("internal", "internal storage error"))
            }
        }
    }
}
