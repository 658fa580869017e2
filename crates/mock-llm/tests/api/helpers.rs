//! Shared arrange steps: a fast mock, request bodies, an SSE reader, and a wait for stats that settle after the
//! client has already seen the answer.

use std::time::Duration;

use mock_llm::{MockLlmHandle, MockLlmStats, spawn_mock_llm};
use protocol::settings::MockLlmSettings;
use serde_json::{Value, json};
use test_support::{HarnessFailure, SseReader};

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
    pub body_error: Option<HarnessFailure>,
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

/// Reads an SSE body to its end with the tests' one event-stream reader (`test_support::SseReader`).
pub async fn read_sse(response: reqwest::Response) -> SseRead {
    let mut reader = SseReader::new(response);
    let mut data = Vec::new();
    let body_error = loop {
        match reader.try_next_event().await {
            Ok(Some(event)) => data.push(event.data),
            Ok(None) => break None,
            Err(failure) => break Some(failure),
        }
    };
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
