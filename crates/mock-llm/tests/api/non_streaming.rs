//! Whole (non-streamed) answers, over plain HTTP and through the async-openai client.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs, FinishReason, Role,
};
use mock_llm::answer_text;
use serde_json::{Value, json};

use crate::helpers::{chat_body, post_chat, spawn_fast_mock, wait_for_stats};

#[tokio::test]
async fn non_streaming_answer_is_a_whole_chat_completion() {
    let mock = spawn_fast_mock().await;

    let response = post_chat(&mock, &chat_body("Tell me about stones", false), &[]).await;

    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.expect("a JSON body");
    assert!(completion["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "mock-1");
    assert!(completion["created"].is_u64());
    let choice = &completion["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], answer_text("Tell me about stones", 8));
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(completion["usage"], json!({"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15}));
    let stats = wait_for_stats(&mock, |stats| stats.completed == 1).await;
    assert_eq!((stats.prompt_tokens_total, stats.completion_tokens_total), (7, 8));
}

#[tokio::test]
async fn max_tokens_truncation_finishes_with_length() {
    let mock = spawn_fast_mock().await;
    let mut body = chat_body("Tell me everything", false);
    body["max_tokens"] = json!(5);

    let completion: Value = post_chat(&mock, &body, &[]).await.json().await.expect("JSON");

    assert_eq!(completion["choices"][0]["message"]["content"], answer_text("Tell me everything", 5));
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn max_tokens_at_or_above_the_answer_length_finishes_with_stop() {
    let mock = spawn_fast_mock().await;
    let mut body = chat_body("Short", false);
    body["max_tokens"] = json!(8);

    let completion: Value = post_chat(&mock, &body, &[]).await.json().await.expect("JSON");

    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(completion["usage"]["completion_tokens"], 8);
}

#[tokio::test]
async fn async_openai_client_gets_the_whole_answer() {
    let mock = spawn_fast_mock().await;
    let client = Client::with_config(OpenAIConfig::new().with_api_base(mock.base_url()).with_api_key("x"));
    let request = CreateChatCompletionRequestArgs::default()
        .model("mock-1")
        .max_completion_tokens(4_u32)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("What is a river?")
            .build()
            .expect("user message")
            .into()])
        .build()
        .expect("request");

    let completion = client.chat().create(request).await.expect("a completion");

    let choice = &completion.choices[0];
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(choice.message.content.as_deref(), Some(answer_text("What is a river?", 4).as_str()));
    assert_eq!(choice.finish_reason, Some(FinishReason::Length));
    let usage = completion.usage.expect("usage");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (4, 4, 8));
}

#[tokio::test]
async fn fail_after_tokens_breaks_a_whole_answer_too() {
    let mock = spawn_fast_mock().await;

    let sent = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("x-mock-fail-after-tokens", "2")
        .json(&chat_body("Doomed", false))
        .send()
        .await;

    // Depending on timing the connection breaks before or after the status line; either way no answer arrives.
    if let Ok(response) = sent {
        assert!(response.bytes().await.is_err(), "the body must break");
    }
    let stats = wait_for_stats(&mock, |stats| stats.failed == 1).await;
    assert_eq!((stats.completed, stats.completion_tokens_total), (0, 2));
}
