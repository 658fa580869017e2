//! `WorkerError`, what can go wrong with a job or a request to the worker's own small HTTP listener, and its
//! mapping to a status, a stable `code` and the JSON body `{"error": {"code", "message"}}`. Failures to start are
//! `StartupError`s (`startup_error.rs`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the job now belongs to another worker or attempt; this attempt stops")]
    Fenced,
    #[error("the job was cancelled by the worker's shutdown")]
    Stopped,
    #[error("the job's client cancelled it")]
    CancelRequested,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// `/readyz` while the worker cannot take jobs: not registered yet, or draining.
    #[error("not ready: {0}")]
    NotReady(&'static str),
    #[error("no such route")]
    RouteNotFound,
    #[error("this route does not answer that method")]
    MethodNotAllowed,
}

impl WorkerError {
    /// The status this error answers an HTTP request with.
    pub fn status(&self) -> StatusCode {
        match self {
            WorkerError::Redis(_) | WorkerError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            WorkerError::RouteNotFound => StatusCode::NOT_FOUND,
            WorkerError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            WorkerError::Redis(_) => "backend_unavailable",
            WorkerError::NotReady(_) => "not_ready",
            WorkerError::RouteNotFound => "route_not_found",
            WorkerError::MethodNotAllowed => "method_not_allowed",
            _ => "internal_error",
        }
    }
}

impl IntoResponse for WorkerError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        (self.status(), axum::Json(body)).into_response()
    }
}
