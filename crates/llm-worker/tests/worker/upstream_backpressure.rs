//! A provider's rate limit (429) is backpressure, not failure: it slows every worker's starts by the provider's
//! `Retry-After` and never opens the circuit breaker.

use protocol::StreamEvent;
use redis::AsyncCommands;
use test_support::{StackOptions, TestStack};

use crate::{chat_envelope, enqueue, replay_log_when_final};

/// One attempt per job and a breaker that would open after three failures in four: a burst of 429s would
/// trip it at once if they counted as failures.
async fn stack_with_a_hair_trigger_breaker() -> TestStack {
    TestStack::start_with(StackOptions { gateways: 0, ..StackOptions::default() }, |settings| {
        settings.llm.max_attempts = 1;
        settings.llm.circuit_min_calls = 3;
        settings.llm.circuit_failure_ratio = 0.5;
    })
    .await
}

#[tokio::test]
async fn upstream_burst_of_429s_leaves_the_breaker_closed_and_later_chats_complete() {
    let stack = stack_with_a_hair_trigger_breaker().await;
    let throttled: Vec<_> = (0..5)
        .map(|index| chat_envelope(&format!("busy {index} [[mock status=429 retry_after_s=0]]")))
        .collect();
    for job in &throttled {
        enqueue(&stack, job).await;
    }
    for job in &throttled {
        let events = replay_log_when_final(&stack, &job.id).await;
        assert!(matches!(events.last(), Some(StreamEvent::Error { .. })), "{events:?}");
    }

    let mut redis = stack.redis_connection().await;
    let state: Option<String> = redis.hget(stack.keys().circuit_breaker(), "state").await.expect("hget");
    assert_eq!(state, None, "five 429s are no sign of an unhealthy upstream");
    let later = chat_envelope("after the rush");
    enqueue(&stack, &later).await;
    let events = replay_log_when_final(&stack, &later.id).await;
    assert!(matches!(events.last(), Some(StreamEvent::Done { .. })), "{events:?}");
}

#[tokio::test]
async fn upstream_429_with_retry_after_holds_back_every_workers_next_start_by_that_long() {
    let stack = stack_with_a_hair_trigger_breaker().await;
    let throttled = chat_envelope("slow down [[mock status=429 retry_after_s=30]]");
    enqueue(&stack, &throttled).await;
    replay_log_when_final(&stack, &throttled.id).await;

    // The shared start slot moved 30 s ahead (minus the time this test took to look, far less than 10 s).
    let mut redis = stack.redis_connection().await;
    let next_start: Option<f64> = redis.get(stack.keys().llm_next_start_slot()).await.expect("get");
    let ahead_ms = next_start.expect("a start slot is set") - protocol::unix_time_ms() as f64;
    assert!(ahead_ms > 20_000.0, "the next start waits the provider's Retry-After: {ahead_ms} ms ahead");
}
