//! A gateway reached through a proxy it does not trust: the forwarded address is ignored (so clients share the
//! proxy's identity and limits), and the misconfiguration is counted where an operator can see it.

use serde_json::json;
use test_support::{StackOptions, TestStack};

const UNTRUSTED_FORWARDED: &str = "dam_gateway_untrusted_forwarded_requests_total";

async fn untrusted_forwarded_count(stack: &TestStack) -> f64 {
    let text = stack
        .http
        .get(format!("{}/metrics", stack.gateway_url(0)))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{UNTRUSTED_FORWARDED} ")))
        .map(|value| value.trim().parse().expect("a number"))
        .expect("the counter is exported from the start")
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored_and_counted() {
    let stack = TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
        settings.auth.trusted_proxies = Vec::new();
        settings.limits.tiers.anonymous.rate_per_second = 0.001;
        settings.limits.tiers.anonymous.burst = 1;
    })
    .await;
    let before = untrusted_forwarded_count(&stack).await;

    let first = stack.post_chat_from(0, "198.51.100.1", &json!({ "message": "first" })).await;
    let second = stack.post_chat_from(0, "198.51.100.2", &json!({ "message": "second" })).await;

    assert_eq!(first.status(), 202);
    assert_eq!(second.status(), 429, "both clients are the untrusted peer, which has one chat's burst");
    let after = untrusted_forwarded_count(&stack).await;
    assert!(after >= before + 2.0, "both requests are counted: {before} -> {after}");
}
