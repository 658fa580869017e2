//! Refusals are fast and explain themselves: the rate standing and when to retry on both flows, paused intake,
//! blocked callers and an open circuit with their own codes, an unreachable Redis, and the connection gate.

use std::time::{Duration, Instant};

use protocol::limits::TierLimits;
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::{StackOptions, TestStack};

use super::{anonymous, generous, no_workers, status_and_code};

#[tokio::test]
async fn rejections_say_why_when_to_retry_and_the_rate_standing_on_both_flows() {
    let stack = TestStack::start_with(no_workers(), |settings| {
        anonymous(settings, TierLimits { rate_per_second: 0.5, burst: 1, ..generous() })
    })
    .await;
    assert_eq!(stack.post_chat(0, &json!({"message": "first"})).await.status(), 202);
    let limited = stack.post_chat(0, &json!({"message": "second"})).await;
    assert_eq!(limited.status(), 429);
    let headers = limited.headers().clone();
    assert_eq!(headers["x-dam-reason"], "rate_limited");
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["ratelimit-policy"], "\"burst\";q=1;w=2");
    assert!(headers["ratelimit"].to_str().expect("header").starts_with("\"burst\";r=0;t="));
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retry_after_s"], 2);
    assert_eq!(body["error"]["type"], "rate_limit_error");

    let openai = stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(1)))
        .json(&json!({"messages": [{"role": "user", "content": "third"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(openai.status(), 429);
    let headers = openai.headers().clone();
    assert_eq!(headers["x-dam-reason"], "rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().expect("header").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after), "until the next chat is allowed: {retry_after}");
    assert_eq!(headers["ratelimit-policy"], "\"burst\";q=1;w=2");
    assert!(headers["ratelimit"].to_str().expect("header").starts_with("\"burst\";r=0;t="));
    let body: Value = openai.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{body}");
}

#[tokio::test]
async fn paused_intake_blocks_and_an_open_circuit_refuse_new_chats_with_their_own_codes() {
    let stack = TestStack::start(no_workers()).await;
    let keys = stack.keys();
    let mut redis = stack.redis_connection().await;

    let _: () = redis.set(keys.intake_paused(), "{}").await.expect("set");
    assert_eq!(
        status_and_code(stack.post_chat(0, &json!({"message": "a"})).await).await,
        (503, "maintenance".to_owned())
    );
    let _: () = redis.del(keys.intake_paused()).await.expect("del");

    let _: () = redis.set_ex(keys.identity_block("ip:192.0.2.7"), "{}", 60).await.expect("set");
    assert_eq!(
        status_and_code(stack.post_chat_from(0, "192.0.2.7", &json!({"message": "a"})).await).await,
        (403, "blocked".to_owned())
    );
    assert_eq!(stack.post_chat_from(0, "192.0.2.8", &json!({"message": "a"})).await.status(), 202);

    let open_until = protocol::unix_time_ms() + 60_000;
    let _: () = redis
        .hset_multiple(
            keys.circuit_breaker(),
            &[("state", "open".to_owned()), ("open_until_ms", open_until.to_string())],
        )
        .await
        .expect("hset");
    let refused = stack.post_chat(1, &json!({"message": "b"})).await;
    let retry_after: u64 =
        refused.headers()["retry-after"].to_str().expect("header").parse().expect("seconds");
    assert!((55..=60).contains(&retry_after), "until the circuit may close: {retry_after}");
    assert_eq!(status_and_code(refused).await, (503, "upstream_unavailable".to_owned()));
}

#[tokio::test]
async fn an_unreachable_redis_gets_a_prompt_503_and_service_resumes_when_it_returns() {
    let mut stack = TestStack::start(no_workers()).await;
    assert_eq!(stack.post_chat(0, &json!({"message": "before"})).await.status(), 202);
    stack.redis.stop();
    let started = Instant::now();
    let (status, code) = status_and_code(stack.post_chat(0, &json!({"message": "during"})).await).await;
    assert_eq!((status, code.as_str()), (503, "backend_unavailable"));
    assert!(started.elapsed() < Duration::from_secs(3), "answered, not hung: {:?}", started.elapsed());

    stack.redis.restart().await;
    stack
        .wait_until("admission resumes by itself", Duration::from_secs(10), || async {
            let (status, code) =
                status_and_code(stack.post_chat(0, &json!({"message": "after"})).await).await;
            assert!(status == 202 || code == "backend_unavailable", "{status} {code}");
            status == 202
        })
        .await;
}

#[tokio::test]
async fn the_connection_gate_refuses_streams_past_the_limit_without_touching_redis() {
    let mut stack =
        TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
            settings.limits.max_open_streams = 2;
        })
        .await;
    let created: Value = stack.post_chat(0, &json!({"message": "wait"})).await.json().await.expect("json");
    let url = created["events_url"].as_str().expect("url").to_owned();
    let first = stack.open_events(0, &url).await;
    let second = stack.open_events(0, &url).await;

    // With Redis gone, anything that asked it would answer 503: a 429 shows the gate decided alone.
    stack.redis.stop();
    let third = stack.http.get(format!("{}{url}", stack.gateway_url(0))).send().await.expect("get");
    assert_eq!(third.headers()["retry-after"], "1");
    assert_eq!(third.headers()["x-dam-reason"], "too_many_connections");
    assert_eq!(status_and_code(third).await, (429, "too_many_connections".to_owned()));

    // The restarted Redis (without persistence) has forgotten the chat: a new one needs a slot of its own.
    stack.redis.restart().await;
    drop((first, second));
    let created: Value = stack
        .wait_for("admission resumes after the restart", Duration::from_secs(10), || async {
            let response = stack.post_chat(0, &json!({"message": "after the restart"})).await;
            (response.status() == 202).then_some(response).map(|response| response.json())
        })
        .await
        .await
        .expect("json");
    let url = created["events_url"].as_str().expect("url").to_owned();
    stack
        .wait_until("a freed slot lets a stream open again", Duration::from_secs(10), || async {
            let again = stack.http.get(format!("{}{url}", stack.gateway_url(0))).send().await.expect("get");
            let status = again.status().as_u16();
            // 503 while the gateway's pub/sub connection to the restarted Redis comes back.
            assert!(status == 200 || status == 429 || status == 503, "unexpected status {status}");
            status == 200
        })
        .await;
}
