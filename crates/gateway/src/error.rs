//! `GatewayError`, the gateway's one error type for requests, and the single place that turns each case into an
//! HTTP status, a stable machine-readable `code` and a JSON body. The body has OpenAI's error shape
//! (`{"error": {"code", "message", "type", "param"}}`), which also serves the browser API. Failures to start are
//! `StartupError`s (`startup_error.rs`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::job_lifecycle::{RateStanding, RejectionReason};
use serde::Serialize;

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{message}")]
    InvalidRequest { code: &'static str, message: String, param: Option<String> },
    #[error("the request body is larger than the limit of {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("message {index} has {length} characters; the limit is {limit}")]
    MessageTooLong { index: usize, length: usize, limit: usize },
    #[error("model {requested:?} is not served here; allowed: {}", allowed.join(", "))]
    UnknownModel { requested: String, allowed: Vec<String> },
    #[error("no chat with id {0:?}")]
    ChatNotFound(String),
    #[error("the queue backend is unavailable, try again shortly")]
    BackendUnavailable(#[source] redis::RedisError),
    #[error("{}", rejection.message())]
    Rejected { rejection: Rejection },
    #[error(
        "this gateway holds its maximum of {limit} open streams; retry shortly or through another instance"
    )]
    TooManyConnections { limit: u32 },
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the request's header block is larger than the limit of {limit_bytes} bytes")]
    HeadersTooLarge { limit_bytes: usize },
    #[error("the request is not valid HTTP/1.1: {0}")]
    MalformedHttp(String),
    #[error(
        "this Idempotency-Key was already used with a different request body; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    #[error("the chat ended with an error: {message}")]
    ChatFailed { code: String, message: String },
    #[error("no such route")]
    RouteNotFound,
    #[error("this method is not allowed on this route")]
    MethodNotAllowed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(code: &'static str, message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::InvalidRequest { code, message: message.into(), param: param.map(str::to_owned) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::MalformedJson(_)
            | GatewayError::InvalidRequest { .. }
            | GatewayError::UnknownModel { .. }
            | GatewayError::MalformedHttp(_) => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge { .. } | GatewayError::MessageTooLong { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            GatewayError::ChatNotFound(_) | GatewayError::RouteNotFound => StatusCode::NOT_FOUND,
            GatewayError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Rejected { rejection } => rejection.status(),
            GatewayError::TooManyConnections { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::ChatFailed { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable reason.
    pub fn code(&self) -> &str {
        match self {
            GatewayError::MalformedJson(_) => "invalid_json",
            GatewayError::InvalidRequest { code, .. } => code,
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::MessageTooLong { .. } => "message_too_long",
            GatewayError::UnknownModel { .. } => "model_not_found",
            GatewayError::ChatNotFound(_) => "chat_not_found",
            GatewayError::BackendUnavailable(_) => "backend_unavailable",
            GatewayError::Rejected { rejection } => rejection.reason.code(),
            GatewayError::TooManyConnections { .. } => "too_many_connections",
            GatewayError::BodyTimeout => "request_timeout",
            GatewayError::HeadersTooLarge { .. } => "headers_too_large",
            GatewayError::MalformedHttp(_) => "malformed_request",
            GatewayError::IdempotencyKeyReused => "idempotency_key_reused",
            GatewayError::ChatFailed { code, .. } => code,
            GatewayError::RouteNotFound => "route_not_found",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => param.as_deref(),
            GatewayError::MessageTooLong { .. } => Some("messages"),
            GatewayError::UnknownModel { .. } => Some("model"),
            _ => None,
        }
    }

    /// Seconds after which a retry may succeed, when the failure is temporary.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            GatewayError::BackendUnavailable(_) | GatewayError::TooManyConnections { .. } => Some(1),
            GatewayError::Rejected { rejection } => Some(rejection.retry_after_ms.div_ceil(1000).max(1)),
            _ => None,
        }
    }

    /// The JSON body, also used inside streams when a stream ends in an error.
    pub fn body(&self) -> ErrorBody {
        let kind = match self.status() {
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            status if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                kind: kind.to_owned(),
                param: self.param().map(str::to_owned),
                retry_after_s: self.retry_after_s(),
            },
        }
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        metrics::counter!("dam_gateway_errors_total", "code" => self.code().to_owned()).increment(1);
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_s() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Ok(code) = HeaderValue::from_str(self.code()) {
            response.headers_mut().insert("x-dam-reason", code);
        }
        if let GatewayError::Rejected { rejection } = &self {
            rejection.insert_rate_limit_headers(response.headers_mut());
        }
        response
    }
}

impl From<redis::RedisError> for GatewayError {
    fn from(error: redis::RedisError) -> Self {
        GatewayError::BackendUnavailable(error)
    }
}

/// A chat the gate refused, with what the client needs to retry well.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: RejectionReason,
    pub retry_after_ms: u64,
    /// The caller's rate policy and standing, for the IETF `RateLimit-Policy` and `RateLimit` headers.
    pub rate: Option<(RatePolicy, RateStanding)>,
}

/// A caller's rate policy: `burst` chats per `window_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    pub burst: u32,
    pub window_s: u64,
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self.reason {
            RejectionReason::Blocked => StatusCode::FORBIDDEN,
            RejectionReason::Maintenance | RejectionReason::UpstreamUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RejectionReason::RateLimited
            | RejectionReason::TooManyActiveChats
            | RejectionReason::BudgetExhausted
            | RejectionReason::QueueFull => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn message(&self) -> &'static str {
        match self.reason {
            RejectionReason::Blocked => "this caller is blocked for a while",
            RejectionReason::Maintenance => "the service is paused for maintenance; queued chats carry on",
            RejectionReason::UpstreamUnavailable => {
                "the language model is unavailable right now; try again later"
            }
            RejectionReason::RateLimited => "too many chats in a short time; slow down",
            RejectionReason::TooManyActiveChats => {
                "too many of your chats are queued or running; wait for one to end"
            }
            RejectionReason::BudgetExhausted => "your daily token budget is spent",
            RejectionReason::QueueFull => "the queue is full; try again shortly",
        }
    }

    /// `RateLimit-Policy: "burst";q=20;w=4` and `RateLimit: "burst";r=3;t=1`
    /// (draft-ietf-httpapi-ratelimit-headers).
    pub fn insert_rate_limit_headers(&self, headers: &mut HeaderMap) {
        if let Some((policy, standing)) = self.rate {
            insert_rate_limit_headers(headers, policy, standing);
        }
    }
}

/// Adds the IETF rate-limit headers describing a caller's standing.
pub fn insert_rate_limit_headers(headers: &mut HeaderMap, policy: RatePolicy, standing: RateStanding) {
    let policy_value = format!("\"burst\";q={};w={}", policy.burst, policy.window_s.max(1));
    let standing_value = format!("\"burst\";r={};t={}", standing.remaining, standing.reset_ms.div_ceil(1000));
    if let (Ok(policy_value), Ok(standing_value)) =
        (HeaderValue::from_str(&policy_value), HeaderValue::from_str(&standing_value))
    {
        headers.insert("ratelimit-policy", policy_value);
        headers.insert("ratelimit", standing_value);
    }
}
