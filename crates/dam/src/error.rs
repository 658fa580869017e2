//! `AdminError`, the dam service's one error type, and its mapping to a status, a stable `code` and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the queue backend is unavailable: {0}")]
    BackendUnavailable(#[from] redis::RedisError),
    #[error("no such route")]
    RouteNotFound,
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("server error: {0}")]
    Server(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::RouteNotFound => StatusCode::NOT_FOUND,
            AdminError::Settings(_) | AdminError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AdminError::BackendUnavailable(_) => "backend_unavailable",
            AdminError::RouteNotFound => "route_not_found",
            AdminError::Settings(_) => "invalid_settings",
            AdminError::Server(_) => "internal_error",
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        (self.status(), axum::Json(body)).into_response()
    }
}
