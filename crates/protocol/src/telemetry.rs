//! Process-wide telemetry plumbing every service binary shares: the tracing subscriber and the one Prometheus
//! recorder of the process. What each service measures lives in that service.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for latency histograms, in seconds: from sub-millisecond rejections to minute-long answers.
const LATENCY_BUCKETS_S: [f64; 16] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Buckets for what the dam itself adds (admission, Redis scripts, relaying a token): 100 µs to 100 ms, where
/// the fast-path objective (under a millisecond) sits in the middle.
const OVERHEAD_BUCKETS_S: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1];

/// Buckets for what a user waits (queue wait, first token): 50 ms to 60 s, dense around the 3 s objective.
const WAIT_BUCKETS_S: [f64; 14] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0];

/// Metric name suffixes measured in [`OVERHEAD_BUCKETS_S`].
const OVERHEAD_METRIC_SUFFIXES: [&str; 3] =
    ["added_latency_seconds", "admission_seconds", "redis_script_duration_seconds"];

/// Metric name suffixes measured in [`WAIT_BUCKETS_S`].
const WAIT_METRIC_SUFFIXES: [&str; 3] =
    ["time_to_first_token_seconds", "queue_wait_seconds", "permit_wait_seconds"];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); `LOG_FORMAT=json` gives one JSON object per line.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: logs redirected to files stay plain text.
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(on_terminal);
    let _ = if std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The process's Prometheus registry, installed as the global `metrics` recorder on first use. Several services
/// running in one process (as in tests) share it. Must first be called inside a tokio runtime.
pub fn prometheus_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS_S)
                .expect("latency buckets are not empty");
            for suffix in OVERHEAD_METRIC_SUFFIXES {
                builder = builder
                    .set_buckets_for_metric(Matcher::Suffix(suffix.to_owned()), &OVERHEAD_BUCKETS_S)
                    .expect("overhead buckets are not empty");
            }
            for suffix in WAIT_METRIC_SUFFIXES {
                builder = builder
                    .set_buckets_for_metric(Matcher::Suffix(suffix.to_owned()), &WAIT_BUCKETS_S)
                    .expect("wait buckets are not empty");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder was installed first; /metrics will be empty");
            }
            let upkeep_handle = handle.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_secs(5));
                loop {
                    ticker.tick().await;
                    upkeep_handle.run_upkeep();
                }
            });
            handle
        })
        .clone()
}
