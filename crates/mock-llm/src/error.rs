//! The mock LLM's one error type, answered in OpenAI's error shape so SDKs raise their usual exceptions. Injected
//! failures are errors too: they travel the same path as real ones.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything the mock LLM can answer instead of a completion.
#[derive(Debug, thiserror::Error)]
pub enum MockLlmError {
    /// The body is not a chat completion request; the message says why.
    #[error("{0}")]
    InvalidRequestBody(String),
    #[error("invalid mock knob {knob}: {value:?} is not {expected}")]
    MalformedKnob { knob: String, value: String, expected: &'static str },
    #[error("unknown mock knob {knob}")]
    UnknownKnob { knob: String },
    #[error("unterminated mock directive: `[[mock ...` must end with `]]`")]
    UnterminatedDirective,
    /// The `status` knob asked for this error.
    #[error("mock-llm answered {status} because the request asked for it")]
    InjectedStatus { status: StatusCode, retry_after_seconds: Option<u64> },
    /// The `failure_rate` knob drew a failure.
    #[error("The server had an error while processing your request (mock-llm failure_rate).")]
    InjectedFailure { retry_after_seconds: Option<u64> },
    #[error("invalid mock-llm config: {0}")]
    InvalidConfig(String),
    /// A hung request released because the server is stopping.
    #[error("mock-llm is shutting down")]
    ShuttingDown,
}

impl MockLlmError {
    fn status(&self) -> StatusCode {
        match self {
            MockLlmError::InvalidRequestBody(_)
            | MockLlmError::MalformedKnob { .. }
            | MockLlmError::UnknownKnob { .. }
            | MockLlmError::UnterminatedDirective
            | MockLlmError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
            MockLlmError::InjectedStatus { status, .. } => *status,
            MockLlmError::InjectedFailure { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            MockLlmError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's `error.type` and a stable machine-readable `error.code`.
    fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            MockLlmError::InvalidRequestBody(_) => ("invalid_request_error", "invalid_request_body"),
            MockLlmError::MalformedKnob { .. }
            | MockLlmError::UnknownKnob { .. }
            | MockLlmError::UnterminatedDirective => ("invalid_request_error", "invalid_mock_knob"),
            MockLlmError::InvalidConfig(_) => ("invalid_request_error", "invalid_mock_config"),
            MockLlmError::InjectedFailure { .. } => ("server_error", "server_error"),
            MockLlmError::ShuttingDown => ("server_error", "service_unavailable"),
            MockLlmError::InjectedStatus { status, .. } => match status.as_u16() {
                401 => ("authentication_error", "invalid_api_key"),
                403 => ("permission_error", "permission_denied"),
                404 => ("invalid_request_error", "model_not_found"),
                429 => ("rate_limit_error", "rate_limit_exceeded"),
                400..=499 => ("invalid_request_error", "invalid_request"),
                _ => ("server_error", "server_error"),
            },
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            MockLlmError::MalformedKnob { knob, .. } | MockLlmError::UnknownKnob { knob } => Some(knob),
            _ => None,
        }
    }

    fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            MockLlmError::InjectedStatus { retry_after_seconds, .. }
            | MockLlmError::InjectedFailure { retry_after_seconds } => *retry_after_seconds,
            _ => None,
        }
    }
}

/// `{"error": {...}}`, exactly as OpenAI sends it.
#[derive(Debug, Serialize)]
struct OpenAiErrorBody<'error> {
    error: OpenAiErrorDetail<'error>,
}

#[derive(Debug, Serialize)]
struct OpenAiErrorDetail<'error> {
    message: String,
    #[serde(rename = "type")]
    error_type: &'static str,
    param: Option<&'error str>,
    code: &'static str,
}

impl IntoResponse for MockLlmError {
    fn into_response(self) -> Response {
        let (error_type, code) = self.type_and_code();
        let body = OpenAiErrorBody {
            error: OpenAiErrorDetail { message: self.to_string(), error_type, param: self.param(), code },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
