//! The SDK flow: OpenAI-compatible `POST /v1/chat/completions` (streamed or whole) and `GET /v1/models`, so any
//! OpenAI SDK pointed at the gateway works. Handlers only translate; errors keep OpenAI's error shape.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::admission::admit_chat_request;
use crate::app_state::AppState;
use crate::caller_identity::CallerIdentity;
use crate::chat_relay::{ChatRelay, QueuedJob, RelayStart};
use crate::chat_request::OpenAiChatRequest;
use crate::error::GatewayError;
use crate::json_body::JsonBody;
use crate::openai_format::{CompletionCollector, CompletionIdentity, OpenAiChunks};
use crate::sse_stream::relay_as_sse;

pub async fn chat_completions(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(request): JsonBody<OpenAiChatRequest>,
) -> Result<Response, GatewayError> {
    let (chat, choice) = request.validate(&state.settings.chat)?;
    let model = chat.model.clone();
    let admitted = admit_chat_request(&state, chat, &CallerIdentity::from_peer(peer), "openai").await?;
    let queued = QueuedJob { lane: admitted.lane, ticket: admitted.ticket, position: admitted.position };
    let start = RelayStart { job_id: admitted.job_id, resume_after_seq: 0, queued: Some(queued) };
    let mut relay = ChatRelay::open(&state, start).await?;
    let identity = CompletionIdentity {
        id: format!("chatcmpl-{}", admitted.job_id),
        model,
        created: protocol::unix_time_ms() / 1000,
    };
    let open_stream = state.open_streams.enter();
    if choice.stream {
        let chunks = OpenAiChunks {
            identity,
            include_usage: choice.include_usage,
            sent_role: false,
            sent_text: false,
        };
        let keep_alive = Duration::from_secs(state.settings.gateway.sse_keep_alive_s);
        return Ok(relay_as_sse(relay, chunks, open_stream, keep_alive).into_response());
    }
    let mut collector = CompletionCollector::default();
    while let Some(event) = relay.next_event().await {
        if let Some(outcome) = collector.accept(event, &identity) {
            return outcome.map(|completion| Json(completion).into_response());
        }
    }
    Err(GatewayError::ChatFailed {
        code: "stream_interrupted".to_owned(),
        message: "the gateway shut down before the answer finished; retry the request".to_owned(),
    })
}

pub async fn list_models(State(state): State<AppState>) -> Json<serde_json::Value> {
    let data: Vec<_> = state
        .settings
        .chat
        .allowed_models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "traffic-dam"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
