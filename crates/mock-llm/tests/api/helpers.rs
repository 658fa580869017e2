//! Shared arrange steps: a fast mock, request bodies, an SSE reader, and a wait for stats that settle after the
//! client has already seen the answer.

use std::time::Duration;

use mock_llm::{MockLlmHandle, MockLlmStats, spawn_mock_llm};
use protocol::settings::MockLlmSettings;
use serde_json::{Value, json};

/// Defaults that keep tests fast: short answers, no time to first token, 1 ms between tokens.
pub fn fast_settings() -> MockLlmSettings {
    MockLlmSettings {
        tokens_per_answer: 8,
        time_to_first_token_ms: 0,
        inter_token_delay_ms: 1,
        ..MockLlmSettings::default()
    }
}

pub async fn spawn_fast_mock() -> MockLlmHandle {
    spawn_mock_llm(fast_settings()).await.expect("the mock LLM starts")
}

/// A chat completion body with a system message and one user message.
pub fn chat_body(user_message: &str, stream: bool) -> Value {
    json!({
        "model": "mock-1",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": user_message},
        ],
        "stream": stream,
    })
}

pub async fn post_chat(mock: &MockLlmHandle, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth("any-key-works")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the request is sent")
}

/// What a streamed response delivered: the `data:` payloads in order, and the body error that ended it, if any.
#[derive(Debug)]
pub struct SseRead {
    pub data: Vec<String>,
    pub body_error: Option<reqwest::Error>,
}

impl SseRead {
    /// The parsed JSON chunks (everything except `[DONE]`).
    pub fn chunks(&self) -> Vec<Value> {
        self.data
            .iter()
            .filter(|data| data.as_str() != "[DONE]")
            .map(|data| serde_json::from_str(data).expect("every chunk is JSON"))
            .collect()
    }

    /// The concatenated `delta.content` of all chunks.
    pub fn content(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn ended_with_done(&self) -> bool {
        self.data.last().is_some_and(|data| data == "[DONE]")
    }
}

/// Reads an SSE body to its end, splitting events on blank lines as the SSE spec says.
pub async fn read_sse(mut response: reqwest::Response) -> SseRead {
    let mut buffer = String::new();
    let mut data = Vec::new();
    let body_error = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                buffer.push_str(std::str::from_utf8(&bytes).expect("SSE is UTF-8"));
                while let Some(event_end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..event_end + 2).collect();
                    data.extend(
                        event.lines().filter_map(|line| line.strip_prefix("data: ")).map(str::to_owned),
                    );
                }
            }
            Ok(None) => break None,
            Err(error) => break Some(error),
        }
    };
    assert!(buffer.is_empty(), "an incomplete event was left: {buffer:?}");
    SseRead { data, body_error }
}

/// Polls the stats until `condition` holds. The server updates them when its side of a request ends, which can be
/// a moment after the client has read the last byte.
pub async fn wait_for_stats(mock: &MockLlmHandle, condition: impl Fn(&MockLlmStats) -> bool) -> MockLlmStats {
    let mut stats = mock.stats().await;
    for _ in 0..500 {
        if condition(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = mock.stats().await;
    }
    panic!("the stats never reached the expected state: {stats:?}");
}
