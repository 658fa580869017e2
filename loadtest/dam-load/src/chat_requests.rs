//! The HTTP requests of a chat: queueing a browser chat, opening its event stream, posting JSON. A refusal or a
//! failed connection comes back as the chat's `ChatOutcome`, with the status, `X-Dam-Reason` or the error chain.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::chat_outcome::ChatOutcome;
use crate::http_clients::{ChatHttpClient, LoopbackTarget};

/// Error bodies and the browser flow's 202 body are small; anything larger is not what we expect.
const SMALL_BODY_LIMIT_BYTES: usize = 64 * 1024;

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

pub async fn send_json(
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
pub async fn unexpected_status(response: Response<Incoming>) -> ChatOutcome {
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
