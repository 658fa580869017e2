//! Liveness (`/healthz`: the process answers, draining included), readiness (`/readyz`: registered, Redis
//! answers, not draining) and `/metrics`. Handlers only; the state they read is kept by `heartbeat` and `startup`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use protocol::RedisConnections;
use serde_json::json;

use crate::error::WorkerError;
use crate::heartbeat::WorkerReadiness;

/// What the listener's handlers read.
#[derive(Debug, Clone)]
pub struct HealthState {
    pub redis: RedisConnections,
    pub metrics: PrometheusHandle,
    pub readiness: Arc<WorkerReadiness>,
}

/// The process answers: also while it drains, so an orchestrator does not kill a worker finishing its jobs.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The worker takes jobs: it is registered, Redis answers and it is not draining.
pub async fn readyz(State(state): State<HealthState>) -> Result<Json<serde_json::Value>, WorkerError> {
    if state.readiness.is_draining() {
        return Err(WorkerError::NotReady("the worker is draining: it takes no new jobs"));
    }
    if !state.readiness.is_registered() {
        return Err(WorkerError::NotReady("the worker has not registered in Redis yet"));
    }
    let _: String = state
        .redis
        .run(|mut connection| async move { redis::cmd("PING").query_async(&mut connection).await })
        .await?;
    Ok(Json(json!({"status": "ready"})))
}

pub async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
