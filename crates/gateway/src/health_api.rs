//! Liveness (`/healthz`: the process answers), readiness (`/readyz`: Redis answers) and `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

use crate::app_state::AppState;
use crate::error::GatewayError;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, GatewayError> {
    let _: String = state
        .redis
        .run(|mut connection| async move { redis::cmd("PING").query_async(&mut connection).await })
        .await?;
    Ok(Json(json!({"status": "ready"})))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
