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
use crate::chat_relay::{ChatRelay, OnGatewayStop, QueuedJob, RelayStart, locate_chat, read_queue_wait};
use crate::chat_request::OpenAiChatRequest;
use crate::error::GatewayError;
use crate::gateway_metrics::OPENAI_FLOW;
use crate::http_observation::RequestStarted;
use crate::json_body::JsonBody;
use crate::openai_format::{CompletionCollector, CompletionIdentity, OpenAiChunks};
use crate::server_timing::ChatTiming;
use crate::sse_stream::{StreamMetrics, relay_as_sse};

/// `POST /v1/chat/completions`; its answer, streamed or whole, a refusal's included, carries `Server-Timing`.
pub async fn chat_completions(
    State(state): State<AppState>,
    started: RequestStarted,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<OpenAiChatRequest>,
) -> Response {
    let mut timing = ChatTiming::new(started);
    let outcome = answer_chat_completion(&state, &caller, &headers, request, &mut timing).await;
    timing.stamp(outcome, Some(&state.counters.admission_added_latency))
}

async fn answer_chat_completion(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: OpenAiChatRequest,
    timing: &mut ChatTiming,
) -> Result<Response, GatewayError> {
    let open_stream = open_stream_slot(state, OPENAI_FLOW)?;
    let (chat, choice) = request.validate(&state.settings.chat)?;
    let model = chat.model.clone();
    let admitted =
        admit_chat_request(state, chat, caller, idempotency_key(headers), OPENAI_FLOW, timing).await?;
    let start = match admitted {
        AdmittedChat::Queued { job_id, lane, ticket, position, created_at_ms } => RelayStart {
            job_id,
            resume_after_seq: 0,
            queued: Some(QueuedJob { lane, ticket, position }),
            created_at_ms: Some(created_at_ms),
            started_at_ms: None,
            traceparent: None,
        },
        AdmittedChat::Joined { job_id } => locate_chat(state, job_id, 0).await?,
    };
    timing.record_queue_wait(start.queue_wait());
    let mut relay = ChatRelay::open(state, &start, OnGatewayStop::FinishWithinDrain).await?;
    let identity = CompletionIdentity {
        id: format!("chatcmpl-{}", admitted.job_id()),
        model,
        created: protocol::unix_time_ms() / 1000,
    };
    // A client that leaves early cancels the chat it started (an OpenAI client cannot resume a stream).
    let mut cancel_on_drop = match admitted {
        AdmittedChat::Queued { job_id, .. } => CancelOnDrop::armed(state, job_id),
        AdmittedChat::Joined { job_id } => CancelOnDrop::disarmed(job_id),
    };
    if choice.stream {
        let chunks = OpenAiChunks::new(&identity, choice.include_usage, cancel_on_drop);
        let keep_alive = Duration::from_secs(state.settings.gateway.sse_keep_alive_s);
        let metrics = StreamMetrics::for_stream(&state.counters, OPENAI_FLOW, &start);
        return Ok(relay_as_sse(relay, chunks, metrics, open_stream, keep_alive));
    }
    // From here the head waits for the whole answer: that wait is the queue's and the LLM's, not the gateway's.
    timing.end_own_time();
    let mut collector = CompletionCollector::default();
    while let Some(event) = relay.next_event().await {
        if let Some(outcome) = collector.accept(&event, &identity) {
            cancel_on_drop.disarm();
            // Known now: the head has not gone out yet.
            timing.record_queue_wait(read_queue_wait(state, admitted.job_id()).await);
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
