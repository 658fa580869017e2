//! The browser flow: `POST /api/chats` queues a chat and answers 202 with where to listen;
//! `GET /api/chats/{id}/events` streams its events as SSE (`id:` = seq, `event:` = type); `DELETE /api/chats/{id}`
//! cancels; `GET /api/chat-limits` says how much history one chat may carry. Handlers only translate.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use protocol::job_lifecycle::CancelOutcome;
use protocol::{JobId, StreamEvent};
use serde::Serialize;

use crate::admission::{AdmittedChat, admit_chat_request, open_stream_slot};
use crate::app_state::AppState;
use crate::caller_identity::Caller;
use crate::cancellation;
use crate::chat_relay::{ChatRelay, OnGatewayStop, RelayedEvent, locate_chat};
use crate::chat_request::BrowserChatRequest;
use crate::error::GatewayError;
use crate::gateway_metrics::BROWSER_FLOW;
use crate::http_observation::RequestStarted;
use crate::json_body::JsonBody;
use crate::server_timing::ChatTiming;
use crate::sse_stream::{
    EVENTSOURCE_RESUME_ELSEWHERE, EVENTSOURCE_RETRY, StreamFormat, StreamMetrics, relay_as_sse,
    write_sse_event,
};

/// The 202 body of `POST /api/chats`.
#[derive(Debug, Serialize)]
pub struct CreatedChat {
    pub id: String,
    pub events_url: String,
    /// 1 = next in line; 0 once a worker has it.
    pub position: u64,
    /// True when this request duplicated an earlier one and joined its chat.
    pub joined: bool,
}

/// The body of `GET /api/chat-limits`: what one chat request may carry, so a client can trim its history before
/// the gate refuses it.
#[derive(Debug, Serialize)]
pub struct ChatLimits {
    pub max_messages: usize,
    pub max_message_chars: usize,
    pub max_body_bytes: usize,
}

/// `GET /api/chat-limits`.
pub async fn chat_limits(State(state): State<AppState>) -> Response {
    let settings = &state.settings;
    let limits = ChatLimits {
        max_messages: settings.chat.max_messages,
        max_message_chars: settings.chat.max_message_chars,
        max_body_bytes: settings.gateway.max_body_bytes,
    };
    ([(header::CACHE_CONTROL, "no-cache")], Json(limits)).into_response()
}

/// `POST /api/chats`; its answer, a refusal's included, carries `Server-Timing`.
pub async fn create_chat(
    State(state): State<AppState>,
    started: RequestStarted,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<BrowserChatRequest>,
) -> Response {
    let mut timing = ChatTiming::new(started);
    let outcome = queue_browser_chat(&state, &caller, &headers, request, &mut timing).await;
    timing.stamp(outcome, Some(&state.counters.admission_added_latency))
}

async fn queue_browser_chat(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: BrowserChatRequest,
    timing: &mut ChatTiming,
) -> Result<Response, GatewayError> {
    let chat = request.validate(&state.settings.chat)?;
    let admitted =
        admit_chat_request(state, chat, caller, idempotency_key(headers), BROWSER_FLOW, timing).await?;
    let position = match admitted {
        AdmittedChat::Queued { position, .. } => position,
        AdmittedChat::Joined { job_id } => {
            let start = locate_chat(state, job_id, 0).await?;
            timing.record_queue_wait(start.queue_wait());
            start.queued.map(|queued| queued.position).unwrap_or(0)
        }
    };
    let job_id = admitted.job_id();
    let events_url = format!("/api/chats/{job_id}/events");
    let joined = matches!(admitted, AdmittedChat::Joined { .. });
    let body = CreatedChat { id: job_id.to_string(), events_url: events_url.clone(), position, joined };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, events_url)], Json(body)).into_response())
}

/// `GET /api/chats/{id}/events`; its answer carries `Server-Timing` (no admission: that was the POST's).
pub async fn chat_events(
    State(state): State<AppState>,
    started: RequestStarted,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut timing = ChatTiming::new(started);
    let outcome = stream_chat_events(&state, id, &headers, &mut timing).await;
    timing.stamp(outcome, None)
}

async fn stream_chat_events(
    state: &AppState,
    id: String,
    headers: &HeaderMap,
    timing: &mut ChatTiming,
) -> Result<Response, GatewayError> {
    let open_stream = open_stream_slot(state, BROWSER_FLOW)?;
    // A malformed id cannot exist, so it is refused without asking Redis.
    let job_id: JobId = id.parse().map_err(|_| GatewayError::ChatNotFound(id))?;
    let resume_after_seq = last_event_id(headers);
    let opened = match locate_chat(state, job_id, resume_after_seq).await {
        Ok(start) => {
            timing.record_queue_wait(start.queue_wait());
            ChatRelay::open(state, &start, OnGatewayStop::ResumeElsewhere).await.map(|relay| (relay, start))
        }
        Err(error) => Err(error),
    };
    let (relay, start) = match opened {
        Ok(opened) => opened,
        // EventSource gives up for good on an error status, so while Redis is away the stream opens only to ask
        // the client to come back after its retry delay, from where it was.
        Err(GatewayError::BackendUnavailable(error)) => {
            tracing::warn!(%error, "chat events asked for while Redis is unavailable; the client is told to resume");
            return Ok(stream_asking_to_resume(resume_after_seq));
        }
        Err(error) => return Err(error),
    };
    let keep_alive = Duration::from_secs(state.settings.gateway.sse_keep_alive_s);
    let metrics = StreamMetrics::for_stream(&state.counters, BROWSER_FLOW, &start);
    Ok(relay_as_sse(relay, BrowserEvents, metrics, open_stream, keep_alive))
}

/// An event stream that only sets EventSource's reconnect delay and says `stream_interrupted`, with the seq the
/// client resumes from as its id: the chat is not over, its events cannot be read right now.
fn stream_asking_to_resume(resume_after_seq: u64) -> Response {
    let interrupted = StreamEvent::Error {
        seq: resume_after_seq,
        code: "stream_interrupted".to_owned(),
        message: "the chat's events cannot be read right now; reconnect to resume".to_owned(),
    };
    let mut body = BytesMut::from(EVENTSOURCE_RETRY);
    write_sse_event(&mut body, Some(resume_after_seq), Some(interrupted.kind()), &interrupted.encode());
    let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
    (headers, body.freeze()).into_response()
}

/// `DELETE /api/chats/{id}`: the client no longer wants the answer.
pub async fn cancel_chat(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let job_id: JobId = id.parse().map_err(|_| GatewayError::ChatNotFound(id))?;
    let status = match cancellation::cancel_chat(&state, job_id).await? {
        CancelOutcome::Cancelled => "cancelled".to_owned(),
        CancelOutcome::Cancelling { .. } => "cancelling".to_owned(),
        CancelOutcome::AlreadyFinal { status } => status,
        CancelOutcome::Missing => return Err(GatewayError::ChatNotFound(job_id.to_string())),
    };
    Ok(Json(serde_json::json!({"id": job_id.to_string(), "status": status})).into_response())
}

/// The `Idempotency-Key` header: a retry carrying the same key joins the first request's chat.
pub fn idempotency_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

/// `Last-Event-ID`, sent by a reconnecting EventSource: the stream resumes after it.
fn last_event_id(headers: &HeaderMap) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Each chat event as a typed SSE event (`id:` its seq, `event:` its type) whose data is the event's JSON: a stored
/// event's JSON goes out exactly as the worker wrote it, without being decoded and encoded again.
struct BrowserEvents;

impl StreamFormat for BrowserEvents {
    fn write_event(&mut self, event: &RelayedEvent, last_seq: u64, output: &mut BytesMut) -> bool {
        match event {
            RelayedEvent::Stored(stored) => {
                write_sse_event(output, Some(stored.seq), Some(stored.kind.name()), stored.json());
            }
            // Events the gateway makes (queued, timeouts) carry the last relayed seq: the point to resume from.
            RelayedEvent::Made(made) => {
                let id = made.seq().unwrap_or(last_seq);
                write_sse_event(output, Some(id), Some(made.kind()), &made.encode());
            }
        }
        event.is_terminal()
    }

    fn opening(&self) -> &'static [u8] {
        EVENTSOURCE_RETRY
    }

    fn gateway_stop_notice(&self) -> &'static [u8] {
        EVENTSOURCE_RESUME_ELSEWHERE
    }
}
