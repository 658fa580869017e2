//! Liveness, readiness and Prometheus metrics: the routes that need no admin token (a scraper must reach them).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

use crate::app_state::AdminState;
use crate::error::AdminError;
use crate::fleet_gauges::refresh_fleet_gauges;

/// The process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Redis answers.
pub async fn readyz(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, AdminError> {
    let _: String = state
        .redis
        .run(|mut connection| async move { redis::cmd("PING").query_async(&mut connection).await })
        .await?;
    Ok(Json(json!({"status": "ready"})))
}

/// Prometheus text, with the fleet gauges read from Redis for this scrape.
pub async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    refresh_fleet_gauges(&state).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
