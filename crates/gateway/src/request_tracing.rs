//! The `chat.request` span around every request that opens a chat (`POST /api/chats`, `POST
//! /v1/chat/completions`), continuing the caller's trace when it sent a `traceparent`. The admission's span and
//! the relay's span of an OpenAI chat are its children.

use axum::extract::Request;
use axum::http::{Method, header::HeaderName};
use axum::middleware::Next;
use axum::response::Response;
use protocol::telemetry::trace_context::{self, continue_trace, trace_context_from_headers};
use tracing::Instrument;

const TRACEPARENT: HeaderName = HeaderName::from_static(trace_context::TRACEPARENT);
const TRACESTATE: HeaderName = HeaderName::from_static(trace_context::TRACESTATE);

/// Runs a chat-opening request inside `chat.request`; every other request passes untouched.
pub async fn trace_chat_requests(request: Request, next: Next) -> Response {
    let flow = match (request.method(), request.uri().path()) {
        (&Method::POST, "/api/chats") => "browser",
        (&Method::POST, "/v1/chat/completions") => "openai",
        _ => return next.run(request).await,
    };
    let span = tracing::info_span!("chat.request", flow);
    let caller_trace = {
        let header = |name: &HeaderName| request.headers().get(name).and_then(|value| value.to_str().ok());
        trace_context_from_headers(header(&TRACEPARENT), header(&TRACESTATE))
    };
    continue_trace(&span, &caller_trace);
    next.run(request).instrument(span).await
}
