//! The worker's own listener: liveness, readiness (also while it drains) and its Prometheus series after a real
//! chat through mock-llm. The recorder is shared by every service of this test binary, so counts are lower bounds.

use std::time::Duration;

use protocol::Lane;
use redis::AsyncCommands;
use test_support::{ServiceHandle, StackOptions, TestStack};

use crate::{chat_envelope, enqueue, replay_log_when_final};

async fn get(stack: &TestStack, worker: &ServiceHandle, path: &str) -> (u16, String) {
    let response = stack
        .http
        .get(format!("{}{path}", worker.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the worker's listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// The value of the series `name{labels}` (exactly as rendered) in Prometheus text, if present.
fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[tokio::test]
async fn the_worker_serves_health_readiness_and_its_series_after_a_real_chat() {
    let stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    let worker = &stack.workers[0];
    assert_eq!(get(&stack, worker, "/healthz").await.0, 200);
    stack
        .wait_until("the worker is ready", Duration::from_secs(10), || async {
            get(&stack, worker, "/readyz").await.0 == 200
        })
        .await;

    let job = chat_envelope("count my tokens");
    enqueue(&stack, &job).await;
    replay_log_when_final(&stack, &job.id).await;
    let (status, metrics) = get(&stack, worker, "/metrics").await;

    assert_eq!(status, 200);
    let at_least = |series: &str, least: f64| {
        let value = series_value(&metrics, series).unwrap_or_else(|| panic!("{series} missing:\n{metrics}"));
        assert!(value >= least, "{series} is {value}, expected at least {least}");
    };
    at_least(&format!("dam_worker_queue_wait_seconds_count{{lane=\"{}\"}}", Lane::Standard.as_str()), 1.0);
    at_least("dam_worker_permit_wait_seconds_count", 1.0);
    at_least("dam_worker_added_latency_seconds_count{stage=\"start\"}", 1.0);
    at_least("dam_worker_added_latency_seconds_count{stage=\"write\"}", 1.0);
    at_least("dam_worker_llm_requests_total{outcome=\"ok\"}", 1.0);
    at_least("dam_worker_llm_tokens_total{direction=\"out\"}", 12.0);
    at_least("dam_worker_llm_tokens_total{direction=\"in\"}", 1.0);
    at_least("dam_worker_jobs_total{outcome=\"completed\"}", 1.0);
    // Registered at zero from the start: an alert on failures sees 0, not "no data".
    for series in [
        "dam_worker_llm_requests_total{outcome=\"error\"}",
        "dam_worker_llm_requests_total{outcome=\"throttled\"}",
        "dam_worker_llm_requests_total{outcome=\"timeout\"}",
        "dam_worker_llm_requests_total{outcome=\"cancelled\"}",
        "dam_worker_upstream_retries_total",
        "dam_worker_jobs_total{outcome=\"dead_lettered\"}",
        "dam_worker_jobs_recovered_total{outcome=\"requeued\"}",
    ] {
        at_least(series, 0.0);
    }
    assert!(series_value(&metrics, "dam_worker_tokens_total").is_none(), "the old name is gone");
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    let (status, body) = get(&stack, &stack.workers[0], "/nothing-here").await;
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["error"]["code"], "route_not_found");
}

#[tokio::test]
async fn a_draining_worker_stays_alive_but_answers_not_ready() {
    let mut stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    // A chat whose upstream never answers keeps the worker draining until its drain time is over.
    let job = chat_envelope("wait for me [[mock hang=true]]");
    enqueue(&stack, &job).await;
    let connection = stack.redis_connection().await;
    let state_key = stack.keys().job_state(&job.id);
    stack
        .wait_until("the job runs", Duration::from_secs(10), || {
            let (mut connection, state_key) = (connection.clone(), state_key.clone());
            async move {
                let status: Option<String> = connection.hget(&state_key, "status").await.expect("hget");
                status.as_deref() == Some("running")
            }
        })
        .await;
    let worker = stack.workers.pop().expect("one worker");
    let worker_url = worker.url();
    let stopping = tokio::spawn(worker.stop());

    let readiness_url = format!("{worker_url}/readyz");
    let body = stack
        .wait_for("the worker answers not ready", Duration::from_secs(10), || {
            let (http, readiness_url) = (stack.http.clone(), readiness_url.clone());
            async move {
                let response = http.get(&readiness_url).send().await.ok()?;
                (response.status().as_u16() == 503).then_some(())?;
                response.json::<serde_json::Value>().await.ok()
            }
        })
        .await;
    assert_eq!(body["error"]["code"], "not_ready");
    let alive = stack.http.get(format!("{worker_url}/healthz")).send().await.expect("healthz answers");
    assert_eq!(alive.status().as_u16(), 200, "a draining worker is alive");

    stopping.await.expect("the worker stopped");
}

#[tokio::test]
async fn upstream_failures_are_counted_by_outcome_with_their_retries() {
    let stack = TestStack::start_with(StackOptions { gateways: 0, ..StackOptions::default() }, |settings| {
        settings.llm.max_attempts = 2;
        settings.llm.retry_base_delay_ms = 10;
        settings.llm.retry_max_delay_ms = 50;
    })
    .await;
    let throttled = chat_envelope("slow down [[mock status=429]]");
    let broken = chat_envelope("broken [[mock status=500]]");
    enqueue(&stack, &throttled).await;
    enqueue(&stack, &broken).await;
    replay_log_when_final(&stack, &throttled.id).await;
    replay_log_when_final(&stack, &broken.id).await;

    let (_, metrics) = get(&stack, &stack.workers[0], "/metrics").await;
    let value = |series: &str| series_value(&metrics, series).unwrap_or_else(|| panic!("{series} missing"));
    assert!(value("dam_worker_llm_requests_total{outcome=\"throttled\"}") >= 2.0);
    assert!(value("dam_worker_llm_requests_total{outcome=\"error\"}") >= 2.0);
    assert!(value("dam_worker_upstream_retries_total") >= 2.0);
    assert!(value("dam_worker_jobs_total{outcome=\"failed\"}") >= 2.0);
}

#[tokio::test]
async fn the_binary_refuses_a_taken_port_and_names_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("address").port();
    let empty_config = std::env::temp_dir().join(format!("dam-worker-no-config-{}", std::process::id()));
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_llm-worker"))
        .env_clear()
        .env("DAM_CONFIG_DIR", &empty_config)
        .env("DAM_WORKER__HOST", "127.0.0.1")
        .env("DAM_WORKER__PORT", port.to_string())
        // Never reached: the listener is bound first.
        .env("DAM_REDIS__URL", "redis://127.0.0.1:1")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker binary");
    let mut stderr = worker.stderr.take().expect("stderr");
    let exited = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    let status = exited.expect("the worker exits at once").expect("exit status");
    let mut output = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut output).await.expect("read stderr");
    assert!(!status.success(), "a taken port is an error: {output}");
    assert!(output.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{output}");
    assert!(output.contains("DAM_WORKER__PORT"), "{output}");
}
