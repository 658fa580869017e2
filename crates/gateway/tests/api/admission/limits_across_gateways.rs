//! The bounds hold across two gateways: one caller's rate, its active chats and the global queue under 200
//! concurrent requests, and limits written to Redis while the gateways run.

use std::time::{Duration, Instant};

use futures::future::join_all;
use protocol::Lane;
use protocol::limits::TierLimits;
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::TestStack;

use super::{anonymous, generous, no_workers, status_and_code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callers_admitted_count_stays_within_rate_times_window_plus_burst_across_two_gateways() {
    let (rate, burst) = (10.0, 5);
    let stack = TestStack::start_with(no_workers(), |settings| {
        anonymous(settings, TierLimits { rate_per_second: rate, burst, ..generous() })
    })
    .await;

    let started = Instant::now();
    let (mut admitted, mut refused) = (0_u32, 0_u32);
    let mut index = 0;
    // Ask above the rate for two seconds, alternating gateways.
    while started.elapsed() < Duration::from_secs(2) {
        let response = stack.post_chat(index % 2, &json!({ "message": format!("chat {index}") })).await;
        match response.status().as_u16() {
            202 => admitted += 1,
            429 => {
                assert_eq!(response.headers()["x-dam-reason"], "rate_limited");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
        index += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every admission happened inside the window, so none can be beyond what the window allows (1 ms more for
    // the gateways' whole-millisecond clock). Exact counts at window edges are the fixed-clock script test's job.
    let window_s = started.elapsed().as_secs_f64() + 0.001;
    let allowed = (rate * window_s).floor() as u32 + burst;
    assert!(refused > 0, "the test asked above the rate ({admitted} admitted, none refused)");
    assert!(admitted >= burst, "at least the burst got in: {admitted}");
    assert!(admitted <= allowed, "admitted {admitted}, more than rate x window + burst = {allowed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_per_caller_and_the_global_queue_bound_hold_under_200_concurrent_requests() {
    let stack = TestStack::start_with(no_workers(), |settings| {
        anonymous(settings, TierLimits { max_active_chats: 5, ..generous() });
        settings.limits.max_queue_depth = 20;
    })
    .await;

    // One caller, 200 at once: exactly its 5 active chats get in.
    let one_caller = join_all((0..200).map(|index| {
        let stack = &stack;
        async move {
            stack
                .post_chat_from(
                    index % 2,
                    "198.51.100.1",
                    &json!({ "message": format!("same caller {index}") }),
                )
                .await
        }
    }))
    .await;
    let mut one_caller_answers = Vec::new();
    for response in one_caller {
        one_caller_answers.push(status_and_code(response).await);
    }
    let admitted = one_caller_answers.iter().filter(|answer| **answer == (202, String::new())).count();
    let refused =
        one_caller_answers.iter().filter(|answer| **answer == (429, "too_many_active_chats".to_owned()));
    assert_eq!(
        (admitted, refused.count()),
        (5, 195),
        "every answer is one of the two: {one_caller_answers:?}"
    );

    // 200 callers at once: the queue takes 15 more, then it is full.
    let many_callers = join_all((0..200).map(|index| {
        let stack = &stack;
        async move {
            let client = format!("203.0.113.{}", index + 1);
            stack.post_chat_from(index % 2, &client, &json!({ "message": format!("caller {index}") })).await
        }
    }))
    .await;
    let mut admitted = 0;
    for response in many_callers {
        match response.status().as_u16() {
            202 => admitted += 1,
            429 => {
                let retry_after = response.headers().get("retry-after").cloned();
                let body: Value = response.json().await.expect("json");
                assert_eq!(body["error"]["code"], "queue_full", "{body}");
                let retry_after_s = body["error"]["retry_after_s"].as_u64().expect("retry_after_s");
                assert!(retry_after_s >= 1, "{body}");
                let header = retry_after.expect("a Retry-After header");
                assert_eq!(header.to_str().expect("header"), retry_after_s.to_string());
            }
            other => panic!("unexpected status {other}: {}", response.text().await.unwrap_or_default()),
        }
    }
    assert_eq!(admitted, 15);

    let mut redis = stack.redis_connection().await;
    let depth: u64 = redis.llen(stack.keys().lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(depth, 20, "nothing about a rejected request was queued");
}

#[tokio::test]
async fn limits_written_to_redis_apply_on_running_gateways_without_a_restart() {
    let stack = TestStack::start(no_workers()).await;
    assert_eq!(stack.post_chat(0, &json!({"message": "a"})).await.status(), 202);
    let mut limits = stack.settings.limits.clone();
    limits.max_queue_depth = 1;
    let mut redis = stack.redis_connection().await;
    let _: () = redis.set(stack.keys().live_limits(), limits.encode()).await.expect("set");
    for gateway in 0..2 {
        stack
            .wait_until(
                &format!("gateway {gateway} applies the new queue bound"),
                Duration::from_secs(10),
                || async {
                    let (status, code) =
                        status_and_code(stack.post_chat(gateway, &json!({"message": "b"})).await).await;
                    assert!(
                        status == 202 || (status, code.as_str()) == (429, "queue_full"),
                        "{status} {code}"
                    );
                    status == 429
                },
            )
            .await;
    }
}
