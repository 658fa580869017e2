//! Streamed answers: the chunk sequence, usage, the async-openai client, cuts and clients that leave.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    ChatCompletionStreamOptions, CreateChatCompletionRequestArgs, FinishReason,
};
use futures::StreamExt;
use mock_llm::{answer_text, answer_tokens};
use serde_json::{Value, json};

use crate::helpers::{chat_body, post_chat, read_sse, spawn_fast_mock, wait_for_stats};

#[tokio::test]
async fn streaming_answer_matches_the_deterministic_text() {
    let mock = spawn_fast_mock().await;

    let response = post_chat(&mock, &chat_body("Tell me about rivers", true), &[]).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let sse = read_sse(response).await;
    assert!(sse.body_error.is_none(), "{:?}", sse.body_error);
    assert!(sse.ended_with_done());
    assert_eq!(sse.content(), answer_text("Tell me about rivers", 8));

    let chunks = sse.chunks();
    // One role chunk, one chunk per token, one finishing chunk; no usage chunk unless asked for.
    assert_eq!(chunks.len(), 1 + 8 + 1);
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    for (chunk, token) in chunks[1..9].iter().zip(answer_tokens("Tell me about rivers", 8)) {
        assert_eq!(chunk["choices"][0]["delta"]["content"], token.as_str());
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    let finishing = &chunks[9];
    assert_eq!(finishing["choices"][0]["delta"], json!({}));
    assert_eq!(finishing["choices"][0]["finish_reason"], "stop");
    for chunk in &chunks {
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert!(chunk["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "mock-1");
        assert!(chunk["created"].is_u64());
        assert_eq!(chunk["choices"][0]["index"], 0);
        assert!(chunk.get("usage").is_none());
    }
    let stats = wait_for_stats(&mock, |stats| stats.completed == 1).await;
    assert_eq!((stats.requests, stats.failed, stats.cancelled_by_client, stats.in_flight), (1, 0, 0, 0));
    assert_eq!(stats.completion_tokens_total, 8);
    assert_eq!(stats.prompt_tokens_total, 3 + 4);
}

#[tokio::test]
async fn usage_chunk_arrives_last_before_done_when_requested() {
    let mock = spawn_fast_mock().await;
    let mut body = chat_body("Count my words please", true);
    body["stream_options"] = json!({"include_usage": true});

    let sse = read_sse(post_chat(&mock, &body, &[]).await).await;

    assert!(sse.ended_with_done());
    let chunks = sse.chunks();
    let usage_chunk = chunks.last().expect("chunks arrived");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], json!({"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15}));
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(sse.content(), answer_text("Count my words please", 8));
}

#[tokio::test]
async fn async_openai_client_streams_the_expected_text_and_usage() {
    let mock = spawn_fast_mock().await;
    let client =
        Client::with_config(OpenAIConfig::new().with_api_base(mock.base_url()).with_api_key("sk-anything"));
    // `stream(true)` by hand: with async-openai's `byot` feature on anywhere in the build (the worker needs it),
    // `create_stream` no longer sets it.
    let request = CreateChatCompletionRequestArgs::default()
        .model("any-model-id")
        .stream(true)
        .messages([
            ChatCompletionRequestSystemMessageArgs::default()
                .content("Be brief.")
                .build()
                .expect("system")
                .into(),
            ChatCompletionRequestUserMessageArgs::default()
                .content("Describe a lake [[mock tokens=12]]")
                .build()
                .expect("user message")
                .into(),
        ])
        .stream_options(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None })
        .build()
        .expect("request");

    let mut stream = client.chat().create_stream(request).await.expect("the stream opens");
    let mut text = String::new();
    let mut finish_reason = None;
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("every chunk parses");
        assert_eq!(chunk.model, "any-model-id");
        for choice in &chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
            finish_reason = finish_reason.or(choice.finish_reason);
        }
        usage = usage.or(chunk.usage);
    }

    assert_eq!(text, answer_text("Describe a lake [[mock tokens=12]]", 12));
    assert_eq!(text, answer_text("Describe a lake", 12));
    assert_eq!(finish_reason, Some(FinishReason::Stop));
    let usage = usage.expect("usage was sent");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (2 + 3, 12, 17));
}

#[tokio::test]
async fn max_completion_tokens_cuts_a_stream_with_finish_reason_length() {
    let mock = spawn_fast_mock().await;
    let mut body = chat_body("A long story", true);
    body["max_completion_tokens"] = json!(3);

    let sse = read_sse(post_chat(&mock, &body, &[]).await).await;

    assert_eq!(sse.content(), answer_text("A long story", 3));
    let chunks = sse.chunks();
    assert_eq!(chunks.last().expect("chunks")["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn fail_after_tokens_cuts_the_stream_without_done() {
    let mock = spawn_fast_mock().await;

    let response =
        post_chat(&mock, &chat_body("Unreliable upstream", true), &[("x-mock-fail-after-tokens", "3")]).await;

    assert_eq!(response.status(), 200);
    let sse = read_sse(response).await;
    assert!(sse.body_error.is_some(), "the connection should break mid-body");
    assert!(!sse.ended_with_done());
    assert_eq!(sse.content(), answer_text("Unreliable upstream", 3));
    assert!(sse.chunks().iter().all(|chunk| chunk["choices"][0]["finish_reason"].is_null()));
    let stats = wait_for_stats(&mock, |stats| stats.failed == 1).await;
    assert_eq!((stats.completed, stats.cancelled_by_client, stats.completion_tokens_total), (0, 0, 3));
}

#[tokio::test]
async fn fail_after_tokens_as_a_directive_cuts_the_stream_too() {
    let mock = spawn_fast_mock().await;
    let message = "Unreliable [[mock tokens=6 fail_after_tokens=6]]";

    let sse = read_sse(post_chat(&mock, &chat_body(message, true), &[]).await).await;

    // All six tokens arrive, but neither the finishing chunk nor [DONE].
    assert!(sse.body_error.is_some());
    assert_eq!(sse.content(), answer_text("Unreliable", 6));
    assert_eq!(sse.chunks().len(), 1 + 6);
}

#[tokio::test]
async fn content_given_as_text_parts_is_answered_like_a_string() {
    let mock = spawn_fast_mock().await;
    let body = json!({
        "model": "mock-1",
        "stream": true,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Parts work"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ]}],
    });

    let sse = read_sse(post_chat(&mock, &body, &[]).await).await;

    assert_eq!(sse.content(), answer_text("Parts work", 8));
}

#[tokio::test]
async fn a_client_leaving_mid_stream_counts_as_cancelled() {
    let mock = spawn_fast_mock().await;
    let headers = [("x-mock-tokens", "50"), ("x-mock-inter-token-ms", "40")];
    let mut response = post_chat(&mock, &chat_body("Slow answer", true), &headers).await;

    // Read the role chunk and the first token, then walk away.
    let mut received = String::new();
    while received.matches("data: ").count() < 2 {
        let bytes = response.chunk().await.expect("body").expect("more body");
        received.push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
    }
    drop(response);

    let stats = wait_for_stats(&mock, |stats| stats.cancelled_by_client == 1).await;
    assert_eq!((stats.completed, stats.failed, stats.hung, stats.in_flight), (0, 0, 0, 0));
    assert!(stats.completion_tokens_total < 50);
}
