//! One chat from request to its end, in either flow: OpenAI streaming (`POST /v1/chat/completions`, `data:`
//! chunks until `[DONE]`) or the browser flow (`POST /api/chats`, then the events URL until `done` or `error`).
//! It times what the client sees; counting and summarising belong to `run_recorder`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::http_clients::{ChatHttpClient, LoopbackTarget};
use crate::sse_parser::{SseEvent, SseParser};

/// Error bodies and the browser flow's 202 body are small; anything larger is not what we expect.
const SMALL_BODY_LIMIT_BYTES: usize = 64 * 1024;
/// After the final event, the rest of the body (the OpenAI usage chunk, the end of the chunked body) is read
/// for at most this long, so the connection can go back to the pool; past it the connection is dropped.
const BODY_END_WAIT: Duration = Duration::from_secs(2);

/// Which API a chat goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatFlow {
    /// `POST /v1/chat/completions` with `stream: true` (the gateway's OpenAI API, or mock-llm itself).
    Openai,
    /// `POST /api/chats`, then `GET` its `events_url` (the gateway only).
    Browser,
}

/// How a chat ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatOutcome {
    /// `[DONE]` (OpenAI) or `event: done` (browser).
    Done,
    /// An `error` event or an OpenAI error chunk, with its code.
    ErrorEvent(String),
    /// A status other than the expected one, with `X-Dam-Reason` when the answer had it.
    HttpStatus { status: u16, reason: Option<String> },
    /// The connection failed: refused, reset, or cut mid-body.
    Transport { stage: &'static str, detail: String },
    /// The body ended before the final event.
    EndedWithoutFinalEvent,
    /// The chat took longer than the chat timeout.
    TimedOut,
}

impl ChatOutcome {
    /// A short, low-cardinality name for counting (`done`, `http_429:queue_full`, `transport:connect`).
    pub fn key(&self) -> String {
        match self {
            ChatOutcome::Done => "done".to_owned(),
            ChatOutcome::ErrorEvent(code) => format!("error_event:{code}"),
            ChatOutcome::HttpStatus { status, reason: Some(reason) } => format!("http_{status}:{reason}"),
            ChatOutcome::HttpStatus { status, reason: None } => format!("http_{status}"),
            ChatOutcome::Transport { stage, .. } => format!("transport:{stage}"),
            ChatOutcome::EndedWithoutFinalEvent => "ended_without_final_event".to_owned(),
            ChatOutcome::TimedOut => "timed_out".to_owned(),
        }
    }

    /// A longer description of one occurrence, kept once per key in the result file.
    pub fn detail(&self) -> String {
        match self {
            ChatOutcome::Transport { detail, .. } => detail.clone(),
            other => other.key(),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, ChatOutcome::Done)
    }
}

/// What one chat looked like to its client. Times count from `started`, the moment the first request was sent.
#[derive(Debug, Clone)]
pub struct ChatTimeline {
    pub started: Instant,
    /// Until the response headers of the first request (for the browser flow, the 202).
    pub admitted_after: Option<Duration>,
    /// Until the first non-empty piece of text.
    pub first_token_after: Option<Duration>,
    /// Between consecutive non-empty pieces of text, in the order they came.
    pub token_gaps: Vec<Duration>,
    last_token_at: Option<Instant>,
    /// Non-empty pieces of text received.
    pub tokens: u32,
    /// `reset` events (the answer restarted).
    pub resets: u32,
    /// Until the final event, or until the chat failed.
    pub finished_after: Option<Duration>,
}

impl ChatTimeline {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            admitted_after: None,
            first_token_after: None,
            token_gaps: Vec::with_capacity(64),
            last_token_at: None,
            tokens: 0,
            resets: 0,
            finished_after: None,
        }
    }

    fn note_admitted(&mut self) {
        self.admitted_after = Some(self.started.elapsed());
    }

    fn note_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let now = Instant::now();
        match self.last_token_at {
            Some(previous) => self.token_gaps.push(now - previous),
            None => self.first_token_after = Some(now - self.started),
        }
        self.last_token_at = Some(now);
        self.tokens += 1;
    }
}

/// A finished chat: its timeline and how it ended.
#[derive(Debug, Clone)]
pub struct ChatRecord {
    pub timeline: ChatTimeline,
    pub outcome: ChatOutcome,
    pub ended_at: Instant,
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

/// `POST /api/chats`; the events URL from its 202.
pub async fn queue_browser_chat(
    client: &ChatHttpClient,
    target: &LoopbackTarget,
    prompt: &str,
) -> Result<String, ChatOutcome> {
    #[derive(Deserialize)]
    struct QueuedChat {
        events_url: String,
    }
    let response = send_json(client, target, "/api/chats", &json!({"message": prompt})).await?;
    if response.status() != StatusCode::ACCEPTED {
        return Err(unexpected_status(response).await);
    }
    let body = read_small_body(response.into_body()).await?;
    let queued: QueuedChat = serde_json::from_slice(&body).map_err(|error| ChatOutcome::Transport {
        stage: "queued_body",
        detail: format!("the 202 body is not the expected JSON: {error}"),
    })?;
    Ok(queued.events_url)
}

/// `GET` an events URL; the response once its headers say 200.
pub async fn open_event_stream(
    client: &ChatHttpClient,
    target: &LoopbackTarget,
    events_url: &str,
) -> Result<Response<Incoming>, ChatOutcome> {
    let response = send_request(client, target, Method::GET, events_url, None).await?;
    if response.status() != StatusCode::OK {
        return Err(unexpected_status(response).await);
    }
    Ok(response)
}

async fn send_json(
    client: &ChatHttpClient,
    target: &LoopbackTarget,
    path: &str,
    body: &serde_json::Value,
) -> Result<Response<Incoming>, ChatOutcome> {
    send_request(client, target, Method::POST, path, Some(body)).await
}

/// One request (with a JSON body when given); the response once its headers arrived.
async fn send_request(
    client: &ChatHttpClient,
    target: &LoopbackTarget,
    method: Method,
    path: &str,
    json_body: Option<&serde_json::Value>,
) -> Result<Response<Incoming>, ChatOutcome> {
    let uri = target
        .uri(path)
        .map_err(|error| ChatOutcome::Transport { stage: "url", detail: error.to_string() })?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(ACCEPT, HeaderValue::from_static("text/event-stream, application/json"));
    let body = match json_body {
        Some(json_body) => {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Full::new(Bytes::from(json_body.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let request = request.body(body).expect("a request with constant headers is valid");
    client.request(request).await.map_err(|error| transport_failure(&error))
}

fn transport_failure(error: &hyper_util::client::legacy::Error) -> ChatOutcome {
    let stage = if error.is_connect() { "connect" } else { "request" };
    // The source chain says what happened (refused, reset, address in use); the top level only "client error".
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    ChatOutcome::Transport { stage, detail }
}

/// A refusal: its status and `X-Dam-Reason`; the body is read so the connection can be reused.
async fn unexpected_status(response: Response<Incoming>) -> ChatOutcome {
    let status = response.status().as_u16();
    let reason =
        (response.headers().get("x-dam-reason")).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let _ignored = read_small_body(response.into_body()).await;
    ChatOutcome::HttpStatus { status, reason }
}

async fn read_small_body(body: Incoming) -> Result<Bytes, ChatOutcome> {
    match Limited::new(body, SMALL_BODY_LIMIT_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(ChatOutcome::Transport { stage: "body", detail: error.to_string() }),
    }
}

/// What an event means for the chat: `Some(outcome)` when it is the final one.
type EventInterpreter = fn(&SseEvent, &mut ChatTimeline) -> Option<ChatOutcome>;

/// Reads the event stream until `interpret` names a final event, the body ends, or the connection fails.
async fn read_events_until_final(
    mut body: Incoming,
    timeline: &mut ChatTimeline,
    interpret: EventInterpreter,
) -> ChatOutcome {
    let mut parser = SseParser::new();
    loop {
        match body.frame().await {
            None => return ChatOutcome::EndedWithoutFinalEvent,
            Some(Err(error)) => {
                return ChatOutcome::Transport { stage: "stream", detail: error.to_string() };
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                parser.push_bytes(&data);
                while let Some(event) = parser.next_event() {
                    if let Some(outcome) = interpret(&event, timeline) {
                        timeline.finished_after = Some(timeline.started.elapsed());
                        finish_reading_body(body).await;
                        return outcome;
                    }
                }
            }
        }
    }
}

/// Reads what is left of a body, briefly, so that its keep-alive connection returns to the pool.
async fn finish_reading_body(mut body: Incoming) {
    let _ignored =
        tokio::time::timeout(BODY_END_WAIT, async { while let Some(Ok(_frame)) = body.frame().await {} })
            .await;
}

fn interpret_openai_event(event: &SseEvent, timeline: &mut ChatTimeline) -> Option<ChatOutcome> {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
        error: Option<ErrorBody>,
    }
    #[derive(Deserialize)]
    struct Choice {
        delta: Option<Delta>,
    }
    #[derive(Deserialize)]
    struct Delta {
        content: Option<String>,
    }

    if event.data == "[DONE]" {
        return Some(ChatOutcome::Done);
    }
    let Ok(chunk) = serde_json::from_str::<Chunk>(&event.data) else {
        return Some(ChatOutcome::ErrorEvent("unparsable_chunk".to_owned()));
    };
    if let Some(error) = chunk.error {
        return Some(ChatOutcome::ErrorEvent(error.code_or_unknown()));
    }
    for choice in chunk.choices {
        if let Some(content) = choice.delta.and_then(|delta| delta.content) {
            timeline.note_text(&content);
        }
    }
    None
}

fn interpret_browser_event(event: &SseEvent, timeline: &mut ChatTimeline) -> Option<ChatOutcome> {
    #[derive(Deserialize)]
    struct TokenData {
        text: String,
    }
    match event.event_type.as_str() {
        "token" => {
            match serde_json::from_str::<TokenData>(&event.data) {
                Ok(token) => timeline.note_text(&token.text),
                Err(_) => return Some(ChatOutcome::ErrorEvent("unparsable_token".to_owned())),
            }
            None
        }
        "reset" => {
            timeline.resets += 1;
            None
        }
        "done" => Some(ChatOutcome::Done),
        "error" => {
            let code = serde_json::from_str::<ErrorBody>(&event.data).map(ErrorBody::code_or_unknown);
            Some(ChatOutcome::ErrorEvent(code.unwrap_or_else(|_| "unparsable_error".to_owned())))
        }
        _ => None,
    }
}

/// The `code` of an error, wherever the two flows put it.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<serde_json::Value>,
}

impl ErrorBody {
    fn code_or_unknown(self) -> String {
        match self.code {
            Some(serde_json::Value::String(code)) => code,
            Some(other) => other.to_string(),
            None => "unknown".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: &str) -> SseEvent {
        SseEvent { event_type: event_type.to_owned(), data: data.to_owned() }
    }

    #[test]
    fn openai_chunks_count_non_empty_text_and_end_at_done() {
        let mut timeline = ChatTimeline::start();
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        let text = r#"{"choices":[{"index":0,"delta":{"content":"The river"}}]}"#;
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":3}}"#;
        assert_eq!(interpret_openai_event(&event("message", role), &mut timeline), None);
        assert_eq!(timeline.first_token_after, None);
        assert_eq!(interpret_openai_event(&event("message", text), &mut timeline), None);
        assert_eq!(interpret_openai_event(&event("message", text), &mut timeline), None);
        assert_eq!(interpret_openai_event(&event("message", usage), &mut timeline), None);
        assert_eq!(
            interpret_openai_event(&event("message", "[DONE]"), &mut timeline),
            Some(ChatOutcome::Done)
        );
        assert_eq!(timeline.tokens, 2);
        assert!(timeline.first_token_after.is_some());
        assert_eq!(timeline.token_gaps.len(), 1);
    }

    #[test]
    fn an_openai_error_chunk_ends_the_chat_with_its_code() {
        let mut timeline = ChatTimeline::start();
        let error = r#"{"error":{"code":"upstream_failed","message":"x"}}"#;
        assert_eq!(
            interpret_openai_event(&event("message", error), &mut timeline),
            Some(ChatOutcome::ErrorEvent("upstream_failed".to_owned()))
        );
    }

    #[test]
    fn browser_events_count_tokens_and_resets_and_end_at_done_or_error() {
        let mut timeline = ChatTimeline::start();
        assert_eq!(interpret_browser_event(&event("queued", r#"{"position":1}"#), &mut timeline), None);
        assert_eq!(interpret_browser_event(&event("token", r#"{"seq":1,"text":"A"}"#), &mut timeline), None);
        assert_eq!(interpret_browser_event(&event("reset", r#"{"seq":2}"#), &mut timeline), None);
        assert_eq!(interpret_browser_event(&event("done", "{}"), &mut timeline), Some(ChatOutcome::Done));
        assert_eq!((timeline.tokens, timeline.resets), (1, 1));
        assert_eq!(
            interpret_browser_event(&event("error", r#"{"seq":3,"code":"expired"}"#), &mut timeline),
            Some(ChatOutcome::ErrorEvent("expired".to_owned()))
        );
    }

    #[test]
    fn outcome_keys_are_short_and_name_the_reason() {
        let refused = ChatOutcome::HttpStatus { status: 429, reason: Some("queue_full".to_owned()) };
        assert_eq!(refused.key(), "http_429:queue_full");
        let failed = ChatOutcome::Transport { stage: "connect", detail: "refused".to_owned() };
        assert_eq!(failed.key(), "transport:connect");
        assert_eq!(failed.detail(), "refused");
    }
}
