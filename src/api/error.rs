//! The API's error: every failure answers `{"error":{"code":"...","message":"..."}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::config::Scope;
use crate::store::StoreError;

/// Errors at the API boundary. Internal details are logged once, when the
/// response is made, and never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, a token that matches none, or no tokens configured.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// A valid token without the scope the route needs.
    #[error("token lacks scope {0:?}")]
    Forbidden(Scope),
    /// No such resource.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The request is unusable; `message` is safe to show.
    #[error("bad request ({code}): {message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the configured limit.
    #[error("body over {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Well-formed but refused (e.g. a rules folder with errors); safe to show.
    #[error("unprocessable ({code}): {message}")]
    Unprocessable {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The change is not possible in the resource's state; the text is safe to show.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request took longer than the request timeout.
    #[error("request timed out")]
    Timeout,
    /// A dependency (store, ingest channel) cannot serve now; the text is internal.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug; the text is internal.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with a code and a message safe to show.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.to_string()),
            ApiError::Forbidden(s) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token lacks the `{}` scope", s.as_str()),
            ),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such {what}"),
            ),
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            ),
            ApiError::Unprocessable { code, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, message.clone())
            }
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.to_string()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method".into(),
            ),
            ApiError::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long; retry later (events are deduplicated by id)".into(),
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a dependency is unavailable; retry later".into(),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidQuery { param, message } => {
                ApiError::bad_request("invalid_query", format!("`{param}` {message}"))
            }
            StoreError::BadCursor => {
                ApiError::bad_request("invalid_cursor", "cursor is not one this server issued")
            }
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::Conflict(m) => ApiError::Conflict(m),
        }
    }
}

/// The error body, as the OpenAPI description shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `unauthorized`, `forbidden`, `not_found`,
    /// `invalid_query`, `invalid_body`, `conflict`, ...
    pub code: String,
    /// Human-readable explanation, safe to show.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Messages may quote what the client sent (a query value, a serde error
        // naming a field's content): the card-data boundary holds for them too.
        match &self {
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %crate::redact::redact_all(detail), "api: unavailable")
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %crate::redact::redact_all(detail), "api: internal error")
            }
            _ => {}
        }
        let (status, code, message) = self.parts();
        let message = crate::redact::redact_all(&message);
        let body = Json(json!({"error": {"code": code, "message": message}}));
        let mut resp = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"faultline\""),
            );
        }
        resp
    }
}
