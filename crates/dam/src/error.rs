//! `AdminError`, the dam service's one error type for requests, and its mapping to a status, a stable `code` and
//! the JSON body `{"error": {"code", "message", "field"?}}`. Handlers return it; nothing else builds error
//! responses. Failures to start are `StartupError`s (`startup_error.rs`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use protocol::limits::LimitsError;

/// Everything the admin API can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// One message for a missing and a wrong token, so a caller learns nothing about which it was.
    #[error("a valid admin token is required: send `Authorization: Bearer <token>`")]
    Unauthorized,
    /// A request that a web page open on the operator's machine could have sent: another site's `Origin`,
    /// `Sec-Fetch-Site: cross-site`, or (without a token) a `Host` that is not loopback.
    #[error("cross-site request refused: {0}")]
    CrossOriginRefused(String),
    /// A body not declared as JSON: forms and `text/plain` are what a page can send without asking.
    #[error("the request body must be JSON: send `Content-Type: application/json` ({0})")]
    UnsupportedMediaType(String),
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request body is larger than the limit of {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    /// A field of a body, a query or a path is missing, of the wrong type or out of range.
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("{0}")]
    InvalidLimits(#[from] LimitsError),
    #[error("identity {identity:?} is not valid: {reason}")]
    InvalidIdentity { identity: String, reason: String },
    #[error("no dead letter with id {0:?}")]
    DeadLetterNotFound(String),
    #[error("dead letter {id} cannot be replayed: {reason} (it can still be dropped)")]
    NotReplayable { id: String, reason: String },
    /// A replay would replace the state of a live copy of the job (queued or running).
    #[error("dead letter {0} cannot be replayed now: its job is queued or running")]
    DeadLetterJobActive(String),
    #[error("no API key matches {0}")]
    KeyNotFound(String),
    #[error("{0} is not blocked")]
    BlockNotFound(String),
    #[error("the queue backend is unavailable, try again shortly: {0}")]
    BackendUnavailable(#[from] redis::RedisError),
    #[error("no such route")]
    RouteNotFound,
    #[error("this method is not allowed on this route")]
    MethodNotAllowed,
}

impl AdminError {
    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AdminError::InvalidField { field: field.into(), reason: reason.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::CrossOriginRefused(_) => StatusCode::FORBIDDEN,
            AdminError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AdminError::InvalidJson(_)
            | AdminError::InvalidField { .. }
            | AdminError::InvalidLimits(_)
            | AdminError::InvalidIdentity { .. } => StatusCode::BAD_REQUEST,
            AdminError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::DeadLetterNotFound(_)
            | AdminError::KeyNotFound(_)
            | AdminError::BlockNotFound(_)
            | AdminError::RouteNotFound => StatusCode::NOT_FOUND,
            AdminError::NotReplayable { .. } | AdminError::DeadLetterJobActive(_) => StatusCode::CONFLICT,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Unauthorized => "unauthorized",
            AdminError::CrossOriginRefused(_) => "cross_origin_refused",
            AdminError::UnsupportedMediaType(_) => "unsupported_media_type",
            AdminError::InvalidJson(_) => "invalid_json",
            AdminError::BodyTooLarge { .. } => "body_too_large",
            AdminError::InvalidField { .. } => "invalid_field",
            AdminError::InvalidLimits(_) => "invalid_limits",
            AdminError::InvalidIdentity { .. } => "invalid_identity",
            AdminError::DeadLetterNotFound(_) => "dead_letter_not_found",
            AdminError::NotReplayable { .. } => "not_replayable",
            AdminError::DeadLetterJobActive(_) => "job_active",
            AdminError::KeyNotFound(_) => "key_not_found",
            AdminError::BlockNotFound(_) => "block_not_found",
            AdminError::BackendUnavailable(_) => "backend_unavailable",
            AdminError::RouteNotFound => "route_not_found",
            AdminError::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The field a 400 is about (a dotted path such as `tiers.premium.burst`), when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            AdminError::InvalidField { field, .. } => Some(field),
            AdminError::InvalidLimits(error) => Some(&error.field),
            AdminError::InvalidIdentity { .. } => Some("identity"),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        // A backend error's details (addresses, Redis messages) stay in the logs, not in the answer.
        let message = match self {
            AdminError::BackendUnavailable(_) => {
                "the queue backend is unavailable, try again shortly".to_owned()
            }
            other => other.to_string(),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
                field: self.field().map(str::to_owned),
            },
        }
    }
}

/// `{"error": {...}}`, the body of every error answer; the CLI reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match &self {
            AdminError::BackendUnavailable(error) => tracing::warn!(%error, "redis unavailable"),
            error if error.status().is_server_error() => tracing::error!(%error, "admin request failed"),
            _ => {}
        }
        metrics::counter!("dam_admin_errors_total", "code" => self.code()).increment(1);
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        match self {
            AdminError::Unauthorized => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AdminError::BackendUnavailable(_) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
