//! RFC 9457 problem details: the one table of error codes, and the error type
//! every API operation returns.
//!
//! Each [`Code`] has a stable slug (the `type` is `urn:docket:problem:<slug>`),
//! an HTTP status and a title. Bodies carry the request id and a detail worded
//! for the caller, never internals.
use crate::store::StoreError;
use poem::http::{HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::Type as _;
use poem_openapi::{ApiResponse, Object};
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

tokio::task_local! {
    /// The id of the request being served, set by the HTTP edge.
    pub static REQUEST_ID: String;
}

/// The current request's id, or "-" outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".into())
}

/// Every error the API can answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Gone,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    RateLimited,
    HeadersTooLarge,
    Internal,
    UpstreamUnavailable,
    StorageUnavailable,
    InvalidCursor,
    UnknownParameter,
    UnknownRole,
    InvalidScope,
    IdempotencyKeyReused,
    IdempotencyKeyInUse,
}

/// The error table: slug, status, title.
pub const TABLE: &[(Code, &str, u16, &str)] = &[
    (Code::BadRequest, "bad-request", 400, "The request is malformed"),
    (Code::Unauthenticated, "unauthenticated", 401, "Authentication is required"),
    (Code::Forbidden, "forbidden", 403, "Your role does not allow this"),
    (Code::NotFound, "not-found", 404, "Not found"),
    (Code::MethodNotAllowed, "method-not-allowed", 405, "Method not allowed"),
    (Code::Conflict, "conflict", 409, "Conflicts with existing data"),
    (Code::Gone, "gone", 410, "Gone"),
    (Code::PayloadTooLarge, "payload-too-large", 413, "The request body is too large"),
    (Code::UnsupportedMediaType, "unsupported-media-type", 415, "Unsupported content type"),
    (Code::Unprocessable, "invalid-field", 422, "A field has an invalid value"),
    (Code::RateLimited, "rate-limited", 429, "Too many requests"),
    (Code::HeadersTooLarge, "headers-too-large", 431, "The request line or headers are too large"),
    (Code::Internal, "internal", 500, "Internal error"),
    (Code::UpstreamUnavailable, "upstream-unavailable", 502, "A service docket depends on is unavailable"),
    (Code::StorageUnavailable, "storage-unavailable", 503, "Storage is unavailable"),
    // Finer codes, for errors a client handles differently from others of their status.
    (Code::InvalidCursor, "invalid-cursor", 400, "The cursor is not one of this list"),
    (Code::UnknownParameter, "unknown-parameter", 400, "The request has a parameter this operation does not take"),
    (Code::UnknownRole, "unknown-role", 422, "No such role"),
    (Code::InvalidScope, "invalid-scope", 422, "A scope is not valid"),
    (Code::IdempotencyKeyReused, "idempotency-key-reused", 422, "The Idempotency-Key was used with another request"),
    (Code::IdempotencyKeyInUse, "idempotency-key-in-use", 409, "A request with this Idempotency-Key is in progress"),
];

impl Code {
    fn row(self) -> (&'static str, u16, &'static str) {
        TABLE.iter().find(|r| r.0 == self).map(|r| (r.1, r.2, r.3)).unwrap_or(("internal", 500, "Internal error"))
    }

    pub fn slug(self) -> &'static str {
        self.row().0
    }

    pub fn status(self) -> u16 {
        self.row().1
    }

    pub fn title(self) -> &'static str {
        self.row().2
    }

    /// The code for an HTTP status produced outside the API (router, parsers).
    pub fn for_status(status: u16) -> Code {
        TABLE.iter().find(|r| r.2 == status).map(|r| r.0).unwrap_or(if status >= 500 {
            Code::Internal
        } else {
            Code::BadRequest
        })
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// Stable identifier of the problem kind: `urn:docket:problem:<code>`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human summary of the kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong in this request, and how to fix it.
    pub detail: String,
    /// The stable error code (the last part of `type`).
    pub code: String,
    /// The request id; quote it when asking for support.
    pub request_id: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The error every API operation returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub detail: String,
    pub field: Option<String>,
    /// Extra headers, e.g. `Retry-After` or `Allow`.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        ApiError { code, detail: detail.into(), field: None, headers: vec![] }
    }

    pub fn field(code: Code, field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError { code, detail: detail.into(), field: Some(field.into()), headers: vec![] }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:docket:problem:{}", self.code.slug()),
            title: self.code.title().into(),
            status: self.code.status(),
            detail: self.detail.clone(),
            code: self.code.slug().into(),
            request_id: current_request_id(),
            field: self.field.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = Response::builder()
            .status(StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .content_type(CONTENT_TYPE)
            .body(body);
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let statuses = [400u16, 401, 403, 404, 409, 413, 415, 422, 429, 500, 502, 503];
        let mut responses: Vec<MetaResponse> = statuses
            .iter()
            .map(|&status| MetaResponse {
                description: Code::for_status(status).title(),
                status: Some(status),
                status_range: None,
                content: vec![MetaMediaType { content_type: CONTENT_TYPE, schema: Problem::schema_ref() }],
                headers: vec![],
            })
            .collect();
        responses.push(MetaResponse {
            description: "Any other error, as a problem document",
            status: None,
            status_range: None,
            content: vec![MetaMediaType { content_type: CONTENT_TYPE, schema: Problem::schema_ref() }],
            headers: vec![],
        });
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl From<ApiError> for poem::Error {
    fn from(e: ApiError) -> Self {
        poem::Error::from_response(e.into_response())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid { field, problem } => {
                ApiError::field(Code::Unprocessable, field, format!("`{field}` {problem}"))
            }
            StoreError::Conflict { what } => ApiError::new(Code::Conflict, format!("{what} already exists")),
            StoreError::Refused { problem } => ApiError::new(Code::Conflict, problem),
            StoreError::Denied { problem } => ApiError::new(Code::Forbidden, problem),
            e @ StoreError::UnknownRole { field, .. } => ApiError::field(Code::UnknownRole, field, e.to_string()),
            StoreError::NotFound { what } => ApiError::new(Code::NotFound, format!("{what} was not found")),
            StoreError::Io(reason) | StoreError::Open { reason, .. } => {
                tracing::error!(%reason, "storage failure");
                ApiError::new(
                    Code::StorageUnavailable,
                    "the store could not complete the operation (the disk may be full); nothing was changed, retry later",
                )
                .with_header("retry-after", "30".into())
            }
            other => {
                tracing::error!(error = %other, "internal store error");
                ApiError::new(Code::Internal, "an internal error occurred; quote the request id to your administrator")
            }
        }
    }
}

/// Shorthand for operation results.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (code, slug, status, _) in TABLE {
            assert_eq!(code.slug(), *slug);
            assert_eq!(Code::for_status(*status).status(), *status, "{slug}");
        }
        assert_eq!(Code::for_status(400), Code::BadRequest, "the general code of a status comes first");
        assert_eq!(Code::for_status(422), Code::Unprocessable);
        let slugs: std::collections::BTreeSet<_> = TABLE.iter().map(|r| r.1).collect();
        assert_eq!(slugs.len(), TABLE.len(), "slugs are unique");
    }

    #[test]
    fn storage_errors_hide_internals() {
        let e = ApiError::from(StoreError::Io("/var/lib/docket/docket.redb: No space left on device".into()));
        assert_eq!(e.code, Code::StorageUnavailable);
        assert!(!e.detail.contains("/var/lib"));
    }
}
