//! The dam service's route table. Today: health, readiness and metrics; the admin API joins here.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app_state::AdminState;
use crate::error::AdminError;

pub fn build_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { AdminError::RouteNotFound })
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, AdminError> {
    let _: String = state
        .redis
        .run(|mut connection| async move { redis::cmd("PING").query_async(&mut connection).await })
        .await?;
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
