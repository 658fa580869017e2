//! The LLM never overrun, its failures handled: global rate, retries, the circuit breaker, budgets.

use std::time::{Duration, Instant};

use protocol::StreamEvent;
use protocol::limits::TierLimits;
use protocol::settings::MockLlmSettings;
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::{StackOptions, TestStack};

use crate::{chat_envelope, enqueue, replay_log_when_final};

#[tokio::test]
async fn workers_together_never_start_more_upstream_requests_per_second_than_allowed() {
    let stack = TestStack::start_with(
        StackOptions { gateways: 0, workers: 4, ..StackOptions::default() },
        |settings| {
            settings.limits.llm.max_requests_per_second = 5.0;
        },
    )
    .await;
    let jobs: Vec<_> = (0..15).map(|index| chat_envelope(&format!("paced {index}"))).collect();
    for job in &jobs {
        enqueue(&stack, job).await;
    }
    for job in &jobs {
        let events = replay_log_when_final(&stack, &job.id).await;
        assert!(
            matches!(events.last(), Some(StreamEvent::Done { .. })),
            "every job completed, none failed for capacity"
        );
    }
    let stats = stack.mock_llm.stats().await;
    assert_eq!(stats.requests, 15);
    // Starts are reserved 200 ms apart by Redis's clock, so six consecutive starts span exactly one second; mock-llm
    // counts arrivals in a sliding one-second window, and on a loaded machine a request sent a few milliseconds late
    // puts six arrivals inside one window. One more than the limit is that delay; without pacing the 4 workers
    // would start all 15 at once.
    assert!(
        stats.max_starts_in_one_second <= 5 + 1,
        "{} starts in one second, with a limit of 5 a second",
        stats.max_starts_in_one_second
    );
}

#[tokio::test]
async fn safe_failures_are_retried_honouring_retry_after_and_a_job_that_still_fails_is_dead_lettered() {
    let stack = TestStack::start_with(StackOptions { gateways: 0, ..StackOptions::default() }, |settings| {
        settings.llm.max_attempts = 3;
        settings.llm.retry_base_delay_ms = 10;
    })
    .await;
    // The retry delay of 10 ms is far below the Retry-After of 1 s, so only a worker that waits out Retry-After
    // takes two seconds over three attempts.
    let throttled = chat_envelope("busy [[mock status=429 retry_after_s=1]]");
    let enqueued_at = Instant::now();
    enqueue(&stack, &throttled).await;
    let events = replay_log_when_final(&stack, &throttled.id).await;
    let took = enqueued_at.elapsed();
    assert!(
        matches!(events.last(), Some(StreamEvent::Error { code, .. }) if code == "upstream_error"),
        "{events:?}"
    );
    assert_eq!(stack.mock_llm.stats().await.requests, 3, "429 is retried up to the attempt limit");
    assert!(
        took >= Duration::from_secs(2),
        "two retries each waited out Retry-After: 1, but all took {took:?}"
    );

    let rejected = chat_envelope("bad [[mock status=400]]");
    enqueue(&stack, &rejected).await;
    let events = replay_log_when_final(&stack, &rejected.id).await;
    assert!(matches!(events.last(), Some(StreamEvent::Error { code, .. }) if code == "upstream_rejected"));
    assert_eq!(stack.mock_llm.stats().await.requests, 4, "a 400 is not retried");

    let mut redis = stack.redis_connection().await;
    let letters: Vec<String> = redis.lrange(stack.keys().dead_letters(), 0, -1).await.expect("lrange");
    let letters: Vec<_> = letters
        .iter()
        .map(|letter| protocol::dead_letter::DeadLetter::decode(letter).expect("letter"))
        .collect();
    assert_eq!(letters.len(), 2);
    assert_eq!((letters[0].reason.as_str(), letters[0].attempts), ("upstream_failed", 3));
    assert!(letters[0].last_error.contains("429"), "{}", letters[0].last_error);
    assert_eq!((letters[1].reason.as_str(), letters[1].attempts), ("upstream_rejected", 1));
}

#[tokio::test]
async fn a_first_token_that_never_comes_times_out_and_is_retried() {
    let stack = TestStack::start_with(StackOptions { gateways: 0, ..StackOptions::default() }, |settings| {
        settings.llm.first_token_timeout_ms = 300;
        settings.llm.max_attempts = 2;
        settings.llm.retry_base_delay_ms = 10;
    })
    .await;
    let hanging = chat_envelope("hang [[mock hang=true]]");
    enqueue(&stack, &hanging).await;
    let events = replay_log_when_final(&stack, &hanging.id).await;
    match events.last() {
        Some(StreamEvent::Error { message, .. }) => assert!(message.contains("first token"), "{message}"),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    let stats = stack.mock_llm.stats().await;
    assert_eq!((stats.requests, stats.hung), (2, 2));
    stack
        .wait_until("both hung requests were abandoned", Duration::from_secs(5), || async {
            stack.mock_llm.stats().await.cancelled_by_client == 2
        })
        .await;
}

#[tokio::test]
async fn a_failing_upstream_opens_the_circuit_so_gateways_refuse_at_once_until_it_recovers() {
    let options = StackOptions {
        gateways: 1,
        workers: 1,
        mock_llm: MockLlmSettings {
            failure_rate: 1.0,
            time_to_first_token_ms: 1,
            inter_token_delay_ms: 1,
            tokens_per_answer: 4,
            ..MockLlmSettings::default()
        },
    };
    let stack = TestStack::start_with(options, |settings| {
        settings.llm.max_attempts = 1;
        settings.llm.circuit_min_calls = 3;
        settings.llm.circuit_failure_ratio = 0.5;
        // Longer than any test: the test itself ends the cool-down, so nothing depends on scheduling.
        settings.llm.circuit_cool_down_ms = 600_000;
    })
    .await;
    for index in 0..3 {
        let created: Value = stack
            .post_chat(0, &json!({ "message": format!("failing {index}") }))
            .await
            .json()
            .await
            .expect("json");
        let events = stack
            .open_events(0, created["events_url"].as_str().expect("url"))
            .await
            .collect_all_within(Duration::from_secs(10))
            .await;
        assert_eq!(events.last().expect("an end").event, "error");
    }
    let refused = stack.post_chat(0, &json!({"message": "while open"})).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "upstream_unavailable");

    stack.configure_mock_llm(json!({"failure_rate": 0.0})).await;
    let mut redis = stack.redis_connection().await;
    let open_until: u64 =
        redis.hget(stack.keys().circuit_breaker(), "open_until_ms").await.expect("the circuit is open");
    assert!(open_until > protocol::unix_time_ms() + 60_000, "the circuit stays open for its whole cool-down");
    assert_eq!(stack.post_chat(0, &json!({"message": "still open"})).await.status(), 503);
    // The cool-down ends now.
    let _: () = redis
        .hset(stack.keys().circuit_breaker(), "open_until_ms", protocol::unix_time_ms().saturating_sub(1))
        .await
        .expect("hset");
    let served: Value = stack
        .wait_for("gateways admit again once the cool-down is over", Duration::from_secs(10), || async {
            let response = stack.post_chat(0, &json!({"message": "after recovery"})).await;
            match response.status().as_u16() {
                202 => Some(response.json::<Value>().await.expect("json")),
                503 => None,
                other => panic!("unexpected status {other}"),
            }
        })
        .await;
    let events = stack
        .open_events(0, served["events_url"].as_str().expect("url"))
        .await
        .collect_all_within(Duration::from_secs(10))
        .await;
    assert_eq!(events.last().expect("an end").event, "done", "the probe succeeded");
    let state: Option<String> = redis.hget(stack.keys().circuit_breaker(), "state").await.expect("hget");
    assert_eq!(state, None, "the circuit closed by itself");
}

#[tokio::test]
async fn tokens_used_are_charged_to_the_callers_daily_budget_and_a_spent_budget_is_refused() {
    let stack = TestStack::start_with(StackOptions::default(), |settings| {
        settings.limits.tiers.anonymous =
            TierLimits { daily_token_budget: 10, ..settings.limits.tiers.anonymous };
    })
    .await;
    // Admission reserves the prompt estimate (2) plus max_tokens (5) of the 10; the ending settles to what was used.
    let created: Value = stack
        .post_chat(0, &json!({"message": "spend it", "max_tokens": 5}))
        .await
        .json()
        .await
        .expect("json");
    let events = stack
        .open_events(0, created["events_url"].as_str().expect("url"))
        .await
        .collect_all_within(Duration::from_secs(10))
        .await;
    let done: Value = serde_json::from_str(&events.last().expect("done").data).expect("json");
    let total = done["usage"]["total_tokens"].as_u64().expect("total");

    let mut redis = stack.redis_connection().await;
    let day = protocol::unix_time_ms() / 86_400_000;
    let charged: u64 = redis.get(stack.keys().token_budget("ip:127.0.0.1", day)).await.expect("get");
    assert_eq!(charged, total);
    let refused = stack.post_chat(0, &json!({"message": "more", "max_tokens": 5})).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "budget_exhausted");
}

#[tokio::test]
async fn one_shared_provider_reports_each_calls_own_retry_after() {
    let stack = TestStack::start(StackOptions { gateways: 0, workers: 0, ..StackOptions::default() }).await;
    let provider = llm_worker::provider::openai::OpenAiProvider::new(&stack.settings.llm).expect("provider");
    let slow_down = chat_envelope("busy [[mock status=429 retry_after_s=7]]");
    let unavailable = chat_envelope("down [[mock status=503 retry_after_s=2]]");
    let plain = chat_envelope("broken [[mock status=500]]");
    let (slow_down, unavailable, plain) = tokio::join!(
        provider.stream_completion(&slow_down),
        provider.stream_completion(&unavailable),
        provider.stream_completion(&plain),
    );
    let retry_after = |outcome: Result<_, llm_worker::provider::ProviderError>| match outcome {
        Err(error) => error.retry_after(),
        Ok(_) => panic!("expected an error answer"),
    };
    assert_eq!(retry_after(slow_down), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(unavailable), Some(Duration::from_secs(2)));
    assert_eq!(retry_after(plain), None, "an answer without the header reports none");
}

#[tokio::test]
async fn while_the_upstream_rate_holds_jobs_back_the_rest_wait_visibly_in_their_lane() {
    let stack = TestStack::start_with(
        StackOptions { gateways: 0, workers: 1, ..StackOptions::default() },
        |settings| {
            settings.limits.llm.max_requests_per_second = 1.0;
            settings.worker.concurrency = 32;
        },
    )
    .await;
    let jobs: Vec<_> = (0..40).map(|index| chat_envelope(&format!("held back {index}"))).collect();
    for job in &jobs {
        enqueue(&stack, job).await;
    }
    stack
        .wait_until("the first job reached the upstream", Duration::from_secs(10), || async {
            stack.mock_llm.stats().await.requests >= 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // One claim took at most 16; with most of those waiting for their start, the worker took no more.
    let mut connection = stack.redis_connection().await;
    let queued: u64 = connection.llen(stack.keys().lane_queue(protocol::Lane::Standard)).await.expect("llen");
    assert!(queued >= 40 - 16, "only {queued} of 40 still wait in the lane");
}

#[tokio::test]
async fn while_the_upstream_has_room_a_worker_runs_as_many_jobs_as_its_concurrency() {
    let stack = TestStack::start_with(
        StackOptions {
            gateways: 0,
            workers: 1,
            mock_llm: MockLlmSettings {
                tokens_per_answer: 10,
                time_to_first_token_ms: 400,
                inter_token_delay_ms: 50,
                ..MockLlmSettings::default()
            },
        },
        |settings| settings.worker.concurrency = 40,
    )
    .await;
    let jobs: Vec<_> = (0..40).map(|index| chat_envelope(&format!("all at once {index}"))).collect();
    for job in &jobs {
        enqueue(&stack, job).await;
    }
    for job in &jobs {
        let events = replay_log_when_final(&stack, &job.id).await;
        assert!(matches!(events.last(), Some(StreamEvent::Done { .. })), "{events:?}");
    }
    // Claims take 16 at a time; each batch that got its permits at once lets the next claim go.
    let stats = stack.mock_llm.stats().await;
    assert!(stats.max_in_flight > 16, "at most {} upstream calls ran at once", stats.max_in_flight);
}
