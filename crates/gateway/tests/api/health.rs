//! Liveness, readiness and metrics.

use std::time::Duration;

use serde_json::Value;
use test_support::{StackOptions, TestStack};

#[tokio::test]
async fn readiness_follows_redis_while_liveness_does_not() {
    let mut stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let base = stack.gateway_url(0);
    assert_eq!(stack.http.get(format!("{base}/healthz")).send().await.expect("get").status(), 200);
    assert_eq!(stack.http.get(format!("{base}/readyz")).send().await.expect("get").status(), 200);

    stack.redis.stop();
    let started = std::time::Instant::now();
    let response = stack.http.get(format!("{base}/readyz")).send().await.expect("get");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.json::<Value>().await.expect("json")["error"]["code"], "backend_unavailable");
    assert!(started.elapsed() < Duration::from_secs(5), "an unreachable redis is reported, not waited on");
    assert_eq!(stack.http.get(format!("{base}/healthz")).send().await.expect("get").status(), 200);

    stack.redis.restart().await;
    let mut ready = false;
    for _ in 0..50 {
        if stack.http.get(format!("{base}/readyz")).send().await.expect("get").status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "readiness recovers by itself when redis returns");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let stack = TestStack::start(StackOptions::default()).await;
    let response = stack.post_chat(0, &serde_json::json!({"message": "count me"})).await;
    assert_eq!(response.status(), 202);
    let metrics = stack.http.get(format!("{}/metrics", stack.gateway_url(0))).send().await.expect("get");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("dam_gateway_admission_decisions_total"), "{text}");
}
