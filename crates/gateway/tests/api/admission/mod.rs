//! The gate, against a real Redis and two gateways: rate, concurrency and queue bounds hold across instances,
//! identities cannot be spoofed, duplicates join, rejections are fast and explain themselves.

use std::time::{Duration, Instant};

use futures::future::join_all;
use protocol::access::api_key_hash;
use protocol::limits::{Tier, TierLimits};
use protocol::settings::ConfiguredApiKey;
use protocol::{Lane, Settings};
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::{StackOptions, TestStack};

fn no_workers() -> StackOptions {
    StackOptions { gateways: 2, workers: 0, ..StackOptions::default() }
}

fn anonymous(settings: &mut Settings, limits: TierLimits) {
    settings.limits.tiers.anonymous = limits;
}

fn generous() -> TierLimits {
    TierLimits {
        rate_per_second: 100_000.0,
        burst: 100_000,
        max_active_chats: 100_000,
        daily_token_budget: 0,
    }
}

async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json body");
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
}

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
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let limits = TierLimits { rate_per_second: 0.001, burst: 1, ..generous() };
    let trusting = TestStack::start_with(no_workers(), |settings| anonymous(settings, limits)).await;
    assert_eq!(trusting.post_chat_from(0, "192.0.2.1", &json!({"message": "a"})).await.status(), 202);
    assert_eq!(
        trusting.post_chat_from(1, "192.0.2.2", &json!({"message": "b"})).await.status(),
        202,
        "another client"
    );
    assert_eq!(
        trusting.post_chat_from(0, "192.0.2.1", &json!({"message": "c"})).await.status(),
        429,
        "the same client"
    );

    let distrusting = TestStack::start_with(no_workers(), |settings| {
        anonymous(settings, limits);
        settings.auth.trusted_proxies = vec!["10.255.0.0/16".parse().expect("cidr")];
    })
    .await;
    assert_eq!(distrusting.post_chat_from(0, "192.0.2.1", &json!({"message": "a"})).await.status(), 202);
    let spoofed = distrusting.post_chat_from(1, "192.0.2.99", &json!({"message": "b"})).await;
    assert_eq!(spoofed.status(), 429, "a spoofed X-Forwarded-For from an untrusted peer changes nothing");
}

#[tokio::test]
async fn duplicates_and_idempotent_retries_join_one_job_and_cost_one_llm_call() {
    let stack =
        TestStack::start_with(StackOptions::default(), |settings| settings.limits.duplicate_window_s = 30)
            .await;
    let first: Value =
        stack.post_chat(0, &json!({"message": "double click"})).await.json().await.expect("json");
    let second: Value =
        stack.post_chat(0, &json!({"message": "double click"})).await.json().await.expect("json");
    assert_eq!(first["id"], second["id"]);
    assert_eq!((first["joined"].clone(), second["joined"].clone()), (json!(false), json!(true)));

    let with_key = |message: &str| {
        stack
            .http
            .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
            .header("idempotency-key", "retry-42")
            .json(&json!({"messages": [{"role": "user", "content": message}]}))
            .send()
    };
    let mut answers = Vec::new();
    for response in join_all([with_key("retry storm"), with_key("retry storm")]).await {
        let response = response.expect("response");
        assert_eq!(response.status(), 200);
        answers.push(response.json::<Value>().await.expect("json"));
    }
    assert_eq!(answers[0]["id"], answers[1]["id"], "the retry joined the first request's chat");
    assert_eq!(
        answers[0]["choices"][0]["message"]["content"],
        answers[1]["choices"][0]["message"]["content"]
    );

    let events = stack
        .open_events(0, first["events_url"].as_str().expect("url"))
        .await
        .collect_all_within(Duration::from_secs(20))
        .await;
    assert_eq!(events.last().expect("events").event, "done");
    assert_eq!(stack.mock_llm.stats().await.requests, 2, "one LLM call per distinct chat");
}

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

#[tokio::test]
async fn a_known_api_key_names_the_caller_and_its_tier_picks_the_lane() {
    let key = "sk-premium-test";
    let stack = TestStack::start_with(no_workers(), |settings| {
        settings.auth.api_keys = vec![ConfiguredApiKey {
            name: "partner".to_owned(),
            tier: Tier::Premium,
            key_sha256: api_key_hash(key),
        }];
        settings.limits.tiers.anonymous = TierLimits { rate_per_second: 0.001, burst: 1, ..generous() };
    })
    .await;
    let with_key = |header: &'static str, value: String| {
        stack
            .http
            .post(format!("{}/api/chats", stack.gateway_url(0)))
            .header(header, value)
            .json(&json!({"message": "hi"}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(with_key("authorization", format!("Bearer {key}")).await.expect("post").status(), 202);
    }
    assert_eq!(with_key("x-api-key", key.to_owned()).await.expect("post").status(), 202);
    // An unknown key is just an anonymous caller.
    assert_eq!(with_key("authorization", "Bearer sk-unknown".to_owned()).await.expect("post").status(), 202);
    assert_eq!(with_key("authorization", "Bearer sk-unknown".to_owned()).await.expect("post").status(), 429);

    let mut redis = stack.redis_connection().await;
    let premium: Vec<String> =
        redis.lrange(stack.keys().lane_queue(Lane::Premium), 0, -1).await.expect("lrange");
    assert_eq!(premium.len(), 4);
    let envelope = protocol::JobEnvelope::decode(&premium[0]).expect("envelope");
    assert_eq!(envelope.identity, protocol::access::api_key_identity(&api_key_hash(key)));
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
