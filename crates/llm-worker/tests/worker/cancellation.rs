//! No token wasted: cancelled and abandoned chats stop costing at once.

use std::time::Duration;

use protocol::settings::MockLlmSettings;
use serde_json::{Value, json};
use test_support::{SseReader, StackOptions, TestStack};

fn slow_answers(workers: usize) -> StackOptions {
    StackOptions {
        gateways: 1,
        workers,
        mock_llm: MockLlmSettings {
            tokens_per_answer: 200,
            time_to_first_token_ms: 5,
            inter_token_delay_ms: 30,
            ..MockLlmSettings::default()
        },
    }
}

#[tokio::test]
async fn an_openai_client_that_disconnects_mid_answer_gets_its_upstream_stream_aborted() {
    let stack = TestStack::start(slow_answers(1)).await;
    let response = stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "long answer"}]}))
        .send()
        .await
        .expect("post");
    let mut chunks = SseReader::new(response);
    while !chunks
        .next_event_within(Duration::from_secs(10))
        .await
        .expect("a chunk")
        .data
        .contains("content\":\"")
    {}
    drop(chunks);

    stack
        .wait_until("mock-llm saw its client leave", Duration::from_secs(5), || async {
            stack.mock_llm.stats().await.cancelled_by_client == 1
        })
        .await;
    let stats = stack.mock_llm.stats().await;
    assert!(stats.completion_tokens_total < 200, "generation stopped early: {stats:?}");
}

#[tokio::test]
async fn deleting_a_queued_chat_means_it_never_starts_and_deleting_a_running_one_aborts_it() {
    let mut stack = TestStack::start(slow_answers(0)).await;
    let queued: Value =
        stack.post_chat(0, &json!({"message": "never mind"})).await.json().await.expect("json");
    let url = format!("{}/api/chats/{}", stack.gateway_url(0), queued["id"].as_str().expect("id"));
    let deleted: Value = stack.http.delete(&url).send().await.expect("delete").json().await.expect("json");
    assert_eq!(deleted["status"], "cancelled");
    let events = stack
        .open_events(0, queued["events_url"].as_str().expect("url"))
        .await
        .collect_all_within(Duration::from_secs(5))
        .await;
    let last = events.last().expect("an end");
    assert_eq!(
        (last.event.as_str(), serde_json::from_str::<Value>(&last.data).expect("json")["code"].clone()),
        ("error", json!("cancelled"))
    );

    stack.add_worker();
    let running: Value =
        stack.post_chat(0, &json!({"message": "stop this"})).await.json().await.expect("json");
    let mut events = stack.open_events(0, running["events_url"].as_str().expect("url")).await;
    while events.next_event_within(Duration::from_secs(10)).await.expect("an event").event != "token" {}
    let url = format!("{}/api/chats/{}", stack.gateway_url(0), running["id"].as_str().expect("id"));
    let deleted: Value = stack.http.delete(&url).send().await.expect("delete").json().await.expect("json");
    assert_eq!(deleted["status"], "cancelling");
    let rest = events.collect_all_within(Duration::from_secs(5)).await;
    assert_eq!(rest.last().expect("an end").event, "error");
    stack
        .wait_until("the upstream stream was aborted", Duration::from_secs(5), || async {
            stack.mock_llm.stats().await.cancelled_by_client == 1
        })
        .await;
    assert_eq!(stack.mock_llm.stats().await.requests, 1, "the queued chat never reached the LLM");
    let gone = stack
        .http
        .delete(format!("{}/api/chats/0192f0c1-7b7e-7cc0-8b5e-3f7d2a9b1c00", stack.gateway_url(0)))
        .send()
        .await
        .expect("delete");
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn a_chat_nobody_listens_to_is_cancelled_after_the_grace_period() {
    let stack =
        TestStack::start_with(slow_answers(1), |settings| settings.worker.abandon_grace_ms = 300).await;
    let created: Value =
        stack.post_chat(0, &json!({"message": "posted and forgotten"})).await.json().await.expect("json");
    stack
        .wait_until("the abandoned chat was cancelled", Duration::from_secs(10), || async {
            stack.mock_llm.stats().await.cancelled_by_client == 1
        })
        .await;
    let events = stack
        .open_events(0, created["events_url"].as_str().expect("url"))
        .await
        .collect_all_within(Duration::from_secs(5))
        .await;
    let last = events.last().expect("an end");
    assert_eq!(serde_json::from_str::<Value>(&last.data).expect("json")["code"], "cancelled");
}
