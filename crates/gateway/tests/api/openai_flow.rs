//! The SDK flow: OpenAI-compatible chat completions and models.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::{SseReader, StackOptions, TestStack};

#[tokio::test]
async fn a_streamed_completion_sends_chunks_a_usage_chunk_and_done() {
    let stack = TestStack::start(StackOptions::default()).await;
    let response = stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
        .json(&json!({
            "model": "mock-1",
            "messages": [{"role": "user", "content": "stream please"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("header").starts_with("text/event-stream"));
    let events = SseReader::new(response).collect_all_within(Duration::from_secs(20)).await;
    let (last, chunks) = events.split_last().expect("events");
    assert_eq!(last.data, "[DONE]");
    let chunks: Vec<Value> =
        chunks.iter().map(|event| serde_json::from_str(&event.data).expect("chunk json")).collect();
    assert!(chunks.iter().all(|chunk| chunk["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, mock_llm::answer_text("stream please", 12));
    let finish =
        chunks.iter().find(|chunk| chunk["choices"][0]["finish_reason"].is_string()).expect("finish chunk");
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 12);
}

#[tokio::test]
async fn a_whole_completion_comes_back_as_one_object_with_usage() {
    let stack = TestStack::start(StackOptions::default()).await;
    let response = stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
        .json(&json!({"messages": [{"role": "user", "content": "all at once"}], "max_tokens": 5}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.expect("json");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["content"], mock_llm::answer_text("all at once", 5));
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn models_lists_the_allowed_models() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let models: Value = stack
        .http
        .get(format!("{}/v1/models", stack.gateway_url(0)))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "mock-1");
}

#[tokio::test]
async fn an_upstream_failure_reaches_the_client_as_an_error_in_openai_shape() {
    let stack = TestStack::start(StackOptions::default()).await;
    let response = stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
        .json(&json!({"messages": [{"role": "user", "content": "fail [[mock status=400]]"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "upstream_rejected");
    assert_eq!(body["error"]["type"], "server_error");
}
