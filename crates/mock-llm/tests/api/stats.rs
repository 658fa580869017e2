//! The counters behind `/stats`: concurrency and start-rate peaks, totals, and reset.

use mock_llm::MockLlmStats;
use serde_json::json;

use crate::helpers::{chat_body, post_chat, read_sse, spawn_fast_mock, wait_for_stats};

#[tokio::test]
async fn concurrent_requests_raise_max_in_flight_and_the_start_rate() {
    let mock = spawn_fast_mock().await;
    // The first token comes late enough that all five are in flight at once, even on a busy machine.
    let headers = [("x-mock-ttft-ms", "400"), ("x-mock-tokens", "2")];

    let answers = futures::future::join_all((0..5).map(|index| {
        let body = chat_body(&format!("Concurrent {index}"), true);
        let mock = &mock;
        async move { read_sse(post_chat(mock, &body, &headers).await).await }
    }))
    .await;

    assert!(answers.iter().all(|answer| answer.ended_with_done()));
    let stats = wait_for_stats(&mock, |stats| stats.completed == 5).await;
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.max_in_flight, 5);
    assert_eq!(stats.max_starts_in_one_second, 5);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.completion_tokens_total, 10);
}

#[tokio::test]
async fn stats_endpoint_serves_and_resets_the_counters() {
    let mock = spawn_fast_mock().await;
    let http = reqwest::Client::new();
    let stats_url = format!("http://{}/stats", mock.address());
    for _ in 0..2 {
        read_sse(post_chat(&mock, &chat_body("Count me", true), &[]).await).await;
    }
    wait_for_stats(&mock, |stats| stats.completed == 2).await;

    let served: MockLlmStats =
        http.get(&stats_url).send().await.expect("GET").json().await.expect("stats JSON");
    let after_reset: MockLlmStats =
        http.post(format!("{stats_url}/reset")).send().await.expect("POST").json().await.expect("stats JSON");
    let read_again: MockLlmStats =
        http.get(&stats_url).send().await.expect("GET").json().await.expect("JSON");

    assert_eq!((served.requests, served.completed, served.completion_tokens_total), (2, 2, 16));
    assert_eq!(served.prompt_tokens_total, 2 * (3 + 2));
    assert_eq!(after_reset, MockLlmStats::default());
    assert_eq!(read_again, MockLlmStats::default());
}

#[tokio::test]
async fn stats_json_has_every_documented_field() {
    let mock = spawn_fast_mock().await;

    let stats: serde_json::Value = reqwest::get(format!("http://{}/stats", mock.address()))
        .await
        .expect("GET /stats")
        .json()
        .await
        .expect("JSON");

    assert_eq!(
        stats,
        json!({
            "requests": 0, "in_flight": 0, "max_in_flight": 0, "completed": 0, "failed": 0, "hung": 0,
            "cancelled_by_client": 0, "prompt_tokens_total": 0, "completion_tokens_total": 0,
            "max_starts_in_one_second": 0,
        })
    );
}
