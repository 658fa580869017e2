//! The gateway's whole route table, and the fallbacks that keep unknown paths and methods in the JSON error shape.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::app_state::AppState;
use crate::error::GatewayError;
use crate::http_observation::observe_request;
use crate::{chat_api, chat_page, health_api, openai_api, request_tracing};

pub fn build_router(state: AppState) -> Router {
    let body_limit = state.settings.gateway.max_body_bytes;
    let body_timeout = Duration::from_millis(state.settings.gateway.body_read_timeout_ms);
    let instance_header = state.instance_header.clone();
    Router::new()
        .route("/", get(chat_page::chat_page))
        .route("/static/{name}", get(chat_page::static_asset))
        .route("/api/chat-limits", get(chat_api::chat_limits))
        .route("/api/chats", post(chat_api::create_chat))
        .route("/api/chats/{id}", delete(chat_api::cancel_chat))
        .route("/api/chats/{id}/events", get(chat_api::chat_events))
        .route("/v1/chat/completions", post(openai_api::chat_completions))
        .route("/v1/models", get(openai_api::list_models))
        .route("/healthz", get(health_api::healthz))
        .route("/readyz", get(health_api::readyz))
        .route("/metrics", get(health_api::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // HTTP/1.1 bodies are read whole, within these limits, before routing (`http1_connection.rs`); these
        // layers hold the same limits for HTTP/2 requests, whose bodies hyper streams.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(axum::middleware::from_fn(request_tracing::trace_chat_requests))
        // Outermost: every answer is counted and names this instance, the fallbacks' and the limits' included.
        .layer(middleware::from_fn_with_state(instance_header, observe_request))
        .with_state(state)
}

async fn route_not_found() -> GatewayError {
    GatewayError::RouteNotFound
}

async fn method_not_allowed() -> GatewayError {
    GatewayError::MethodNotAllowed
}
