//! The SDK flow: OpenAI-compatible `POST /v1/chat/completions` (streamed or whole) and `GET /v1/models`, so any
//! OpenAI SDK pointed at the gateway works. Handlers only translate; errors keep OpenAI's error shape.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::admission::{AdmittedChat, admit_chat_request, open_stream_slot};
use crate::app_state::AppState;
use crate::caller_identity::Caller;
use crate::cancellation::CancelOnDrop;
use crate::chat_api::idempotency_key;
use crate::chat_relay::{ChatRelay, QueuedJob, RelayStart, locate_chat};
use crate::chat_request::OpenAiChatRequest;
use crate::error::GatewayError;
use crate::json_body::JsonBody;
use crate::openai_format::{CompletionCollector, CompletionIdentity, OpenAiChunks};
use crate::sse_stream::relay_as_sse;

pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<OpenAiChatRequest>,
) -> Result<Response, GatewayError> {
    let open_stream = open_stream_slot(&state)?;
    let (chat, choice) = request.validate(&state.settings.chat)?;
    let model = chat.model.clone();
    let admitted = admit_chat_request(&state, chat, &caller, idempotency_key(&headers), "openai").await?;
    let start = match admitted {
        AdmittedChat::Queued { job_id, lane, ticket, position } => RelayStart {
            job_id,
            resume_after_seq: 0,
            queued: Some(QueuedJob { lane, ticket, position }),
            traceparent: None,
        },
        AdmittedChat::Joined { job_id } => locate_chat(&state, job_id, 0).await?,
    };
    let mut relay = ChatRelay::open(&state, start).await?;
    let identity = CompletionIdentity {
        id: format!("chatcmpl-{}", admitted.job_id()),
        model,
        created: protocol::unix_time_ms() / 1000,
    };
    // A client that leaves early cancels the chat it started (an OpenAI client cannot resume a stream).
    let mut cancel_on_drop = match admitted {
        AdmittedChat::Queued { job_id, .. } => CancelOnDrop::armed(&state, job_id),
        AdmittedChat::Joined { job_id } => CancelOnDrop::disarmed(job_id),
    };
    if choice.stream {
        let chunks = OpenAiChunks::new(&identity, choice.include_usage, cancel_on_drop);
        let keep_alive = Duration::from_secs(state.settings.gateway.sse_keep_alive_s);
        let events_relayed = state.counters.stream_events_relayed.clone();
        return Ok(relay_as_sse(relay, chunks, events_relayed, open_stream, keep_alive));
    }
    let mut collector = CompletionCollector::default();
    while let Some(event) = relay.next_event().await {
        if let Some(outcome) = collector.accept(&event, &identity) {
            cancel_on_drop.disarm();
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
