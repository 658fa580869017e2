//! One chat from request to its end, in either flow: OpenAI streaming (`POST /v1/chat/completions`, `data:`
//! chunks until `[DONE]`) or the browser flow (`POST /api/chats`, then the events URL until `done` or `error`).
//! It times what the client sees; counting and summarising belong to `run_recorder`.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;

use crate::chat_events::{interpret_browser_event, interpret_openai_event, read_events_until_final};
use crate::chat_outcome::{ChatOutcome, ChatRecord, ChatTimeline};
use crate::chat_requests::{open_event_stream, queue_browser_chat, send_json, unexpected_status};
use crate::http_clients::{ChatHttpClient, LoopbackTarget};

/// Which API a chat goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatFlow {
    /// `POST /v1/chat/completions` with `stream: true` (the gateway's OpenAI API, or mock-llm itself).
    Openai,
    /// `POST /api/chats`, then `GET` its `events_url` (the gateway only).
    Browser,
}

/// What every chat of a run shares.
#[derive(Debug, Clone)]
pub struct ChatRequestSettings {
    pub flow: ChatFlow,
    pub target: LoopbackTarget,
    pub model: String,
    pub chat_timeout: Duration,
}

/// Runs one chat to its end (or its timeout) with `prompt` as the user's message.
pub async fn run_one_chat(
    client: &ChatHttpClient,
    settings: &ChatRequestSettings,
    prompt: &str,
) -> ChatRecord {
    let mut timeline = ChatTimeline::start();
    let outcome = match tokio::time::timeout(settings.chat_timeout, async {
        match settings.flow {
            ChatFlow::Openai => run_openai_chat(client, settings, prompt, &mut timeline).await,
            ChatFlow::Browser => run_browser_chat(client, settings, prompt, &mut timeline).await,
        }
    })
    .await
    {
        Ok(outcome) => outcome,
        Err(_elapsed) => ChatOutcome::TimedOut,
    };
    let ended_at = Instant::now();
    timeline.finished_after.get_or_insert(ended_at - timeline.started);
    ChatRecord { timeline, outcome, ended_at }
}

async fn run_openai_chat(
    client: &ChatHttpClient,
    settings: &ChatRequestSettings,
    prompt: &str,
    timeline: &mut ChatTimeline,
) -> ChatOutcome {
    let body = json!({
        "model": settings.model,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": prompt}],
    });
    let response = match send_json(client, &settings.target, "/v1/chat/completions", &body).await {
        Ok(response) => response,
        Err(outcome) => return outcome,
    };
    timeline.note_admitted();
    if response.status() != StatusCode::OK {
        return unexpected_status(response).await;
    }
    read_events_until_final(response.into_body(), timeline, interpret_openai_event).await
}

async fn run_browser_chat(
    client: &ChatHttpClient,
    settings: &ChatRequestSettings,
    prompt: &str,
    timeline: &mut ChatTimeline,
) -> ChatOutcome {
    let events_url = match queue_browser_chat(client, &settings.target, prompt).await {
        Ok(events_url) => events_url,
        Err(outcome) => return outcome,
    };
    timeline.note_admitted();
    let response = match open_event_stream(client, &settings.target, &events_url).await {
        Ok(response) => response,
        Err(outcome) => return outcome,
    };
    read_events_until_final(response.into_body(), timeline, interpret_browser_event).await
}
