//! The route table and its handlers. Handlers only translate between HTTP and the modules that do the work;
//! nothing is decided here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use protocol::settings::MockLlmSettings;

use crate::chat_completions::answer_chat_completion;
use crate::error::MockLlmError;
use crate::openai_wire::{Model, ModelList};
use crate::startup::MockLlmState;
use crate::stats::MockLlmStats;

/// `created` of every listed model: a fixed date (2024-01-01), so `/v1/models` answers are identical across runs.
const MODEL_CREATED_UNIX_SECONDS: u64 = 1_704_067_200;

pub(crate) fn mock_llm_router(state: Arc<MockLlmState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(create_chat_completion))
        .route("/v1/models", get(list_models))
        .route("/healthz", get(report_health))
        .route("/stats", get(read_stats))
        .route("/stats/reset", post(reset_stats))
        .route("/config", get(read_config).put(replace_config))
        .with_state(state)
}

/// The body is taken raw so that a malformed one still gets OpenAI's error shape and still counts in the stats.
async fn create_chat_completion(
    State(state): State<Arc<MockLlmState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, MockLlmError> {
    answer_chat_completion(&state, &headers, &body).await
}

async fn list_models(State(state): State<Arc<MockLlmState>>) -> Json<ModelList> {
    let data = (state.config.settings().models.into_iter())
        .map(|id| Model { id, object: "model", created: MODEL_CREATED_UNIX_SECONDS, owned_by: "mock-llm" })
        .collect();
    Json(ModelList { object: "list", data })
}

async fn report_health() -> StatusCode {
    StatusCode::OK
}

async fn read_stats(State(state): State<Arc<MockLlmState>>) -> Json<MockLlmStats> {
    Json(state.stats.snapshot())
}

async fn reset_stats(State(state): State<Arc<MockLlmState>>) -> Json<MockLlmStats> {
    state.stats.reset();
    Json(state.stats.snapshot())
}

async fn read_config(State(state): State<Arc<MockLlmState>>) -> Json<MockLlmSettings> {
    Json(state.config.settings())
}

async fn replace_config(
    State(state): State<Arc<MockLlmState>>,
    body: Bytes,
) -> Result<Json<MockLlmSettings>, MockLlmError> {
    Ok(Json(state.config.apply_update(&body)?))
}
