//! Who the caller is, and when two requests are one chat: forwarded addresses count only from trusted proxies, a
//! known API key names the caller and picks its lane, and duplicates and idempotent retries join one job.

use std::time::Duration;

use futures::future::join_all;
use protocol::Lane;
use protocol::access::api_key_hash;
use protocol::limits::{Tier, TierLimits};
use protocol::settings::ConfiguredApiKey;
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::{StackOptions, TestStack};

use super::{anonymous, generous, no_workers};

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
