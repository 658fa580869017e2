//! Liveness, readiness and metrics.

use std::time::Duration;

use serde_json::Value;
use test_support::{StackOptions, TestStack};

use crate::own_process::{in_a_process_of_its_own, run_in_a_process_of_its_own};

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
    stack
        .wait_until("readiness recovers by itself when redis returns", Duration::from_secs(10), || async {
            let status = stack.http.get(format!("{base}/readyz")).send().await.expect("get").status();
            assert!(status == 200 || status == 503, "readiness is either: {status}");
            status == 200
        })
        .await;
}

/// The metrics registry is one per process, and every test of this binary runs gateways in it. So the test runs
/// its requests in a process of its own (this test binary again, running only the ignored test below), where
/// every count is this test's.
#[tokio::test]
async fn metrics_count_exactly_what_this_test_caused() {
    run_in_a_process_of_its_own("health::metrics_counted_in_a_process_of_their_own").await;
}

/// The value of the sample `name{labels}` in Prometheus text, labels in any order; `None` if absent.
fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        let wanted = labels.iter().map(|(label, value)| format!("{label}=\"{value}\""));
        let matches = series_name == name
            && series_labels.trim_end_matches('}').split(',').filter(|label| !label.is_empty()).count()
                == labels.len()
            && wanted.into_iter().all(|label| series_labels.contains(&label));
        matches.then(|| value.parse().expect("a numeric sample"))
    })
}

#[tokio::test]
#[ignore = "runs only inside metrics_count_exactly_what_this_test_caused, in a process of its own"]
async fn metrics_counted_in_a_process_of_their_own() {
    if !in_a_process_of_its_own() {
        return;
    }
    let stack = TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
        settings.limits.tiers.anonymous.rate_per_second = 0.001;
        settings.limits.tiers.anonymous.burst = 2;
    })
    .await;
    for (index, expected) in [202, 202, 429].into_iter().enumerate() {
        let response = stack.post_chat(0, &serde_json::json!({"message": format!("count me {index}")})).await;
        assert_eq!(response.status(), expected);
    }
    let metrics = stack.http.get(format!("{}/metrics", stack.gateway_url(0))).send().await.expect("get");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"].to_str().expect("header").starts_with("text/plain"),
        "Prometheus text format"
    );
    let text = metrics.text().await.expect("text");
    let decisions = "dam_gateway_admission_decisions_total";
    assert!(text.contains(&format!("# TYPE {decisions} counter")), "{text}");
    let count = |decision, reason, flow| {
        sample_value(&text, decisions, &[("decision", decision), ("reason", reason), ("flow", flow)])
    };
    assert_eq!(count("admitted", "none", "browser"), Some(2.0), "{text}");
    assert_eq!(count("rejected", "rate_limited", "browser"), Some(1.0), "{text}");
    // Registered at zero at startup, so a dashboard shows 0 rather than no data.
    assert_eq!(count("admitted", "none", "openai"), Some(0.0), "{text}");
}
