//! The worker's whole route table: its own small listener for probes and Prometheus. It serves no chat traffic
//! (the worker takes its work from Redis only) and is never behind the public nginx.

use axum::Router;
use axum::routing::get;

use crate::error::WorkerError;
use crate::health_api::{self, HealthState};

pub fn build_router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(health_api::healthz))
        .route("/readyz", get(health_api::readyz))
        .route("/metrics", get(health_api::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn route_not_found() -> WorkerError {
    WorkerError::RouteNotFound
}

async fn method_not_allowed() -> WorkerError {
    WorkerError::MethodNotAllowed
}
