//! The browser flow: `POST /api/chats` queues a chat and answers 202 with where to listen;
//! `GET /api/chats/{id}/events` streams its events as SSE (`id:` = seq, `event:` = type). Handlers only translate.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use protocol::{JobId, StreamEvent};
use serde::Serialize;

use crate::admission::admit_chat_request;
use crate::app_state::AppState;
use crate::caller_identity::CallerIdentity;
use crate::chat_relay::{ChatRelay, locate_chat};
use crate::chat_request::BrowserChatRequest;
use crate::error::GatewayError;
use crate::json_body::JsonBody;
use crate::sse_stream::{FormattedEvents, StreamFormat, relay_as_sse};

/// The 202 body of `POST /api/chats`.
#[derive(Debug, Serialize)]
pub struct CreatedChat {
    pub id: String,
    pub events_url: String,
    /// 1 = next in line.
    pub position: u64,
}

pub async fn create_chat(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(request): JsonBody<BrowserChatRequest>,
) -> Result<Response, GatewayError> {
    let chat = request.validate(&state.settings.chat)?;
    let admitted = admit_chat_request(&state, chat, &CallerIdentity::from_peer(peer), "browser").await?;
    let events_url = format!("/api/chats/{}/events", admitted.job_id);
    let body = CreatedChat {
        id: admitted.job_id.to_string(),
        events_url: events_url.clone(),
        position: admitted.position,
    };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, events_url)], Json(body)).into_response())
}

pub async fn chat_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    // A malformed id cannot exist, so it is refused without asking Redis.
    let job_id: JobId = id.parse().map_err(|_| GatewayError::ChatNotFound(id))?;
    let start = locate_chat(&state, job_id, last_event_id(&headers)).await?;
    let relay = ChatRelay::open(&state, start).await?;
    let keep_alive = Duration::from_secs(state.settings.gateway.sse_keep_alive_s);
    Ok(relay_as_sse(relay, BrowserEvents, state.open_streams.enter(), keep_alive).into_response())
}

/// `Last-Event-ID`, sent by a reconnecting EventSource: the stream resumes after it.
fn last_event_id(headers: &HeaderMap) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Each chat event as a typed SSE event whose data is the event's JSON.
struct BrowserEvents;

impl StreamFormat for BrowserEvents {
    fn format(&mut self, event: &StreamEvent, last_seq: u64) -> FormattedEvents {
        // Events the gateway makes (queued, timeouts) carry the last relayed seq: the point to resume from.
        let id = event.seq().unwrap_or(last_seq);
        let sse = Event::default().id(id.to_string()).event(event.kind()).data(event.encode());
        FormattedEvents { events: vec![sse], end_stream: event.is_terminal() }
    }
}
