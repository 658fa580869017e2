//! Process-wide telemetry plumbing every service binary shares: logs, trace export and the one Prometheus
//! recorder of the process. What each service measures, and which spans it opens, lives in that service.

pub mod json_log_format;
pub mod trace_context;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;

use crate::settings::TelemetrySettings;

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

/// Keeps trace export running; dropping it flushes the spans not yet sent and stops the exporter.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the process's logging and tracing, once, from inside the tokio runtime (the OTLP exporter needs it):
/// - logs to stderr, filtered by `RUST_LOG` (default `info`); `LOG_FORMAT=json` gives one JSON object per line
///   ([`json_log_format`]) with trace and span ids;
/// - spans exported over OTLP/gRPC to `telemetry.otlp_endpoint` when it is set.
///
/// With neither JSON logs nor an endpoint, no OpenTelemetry layer is installed at all: spans stay plain tracing
/// spans and cost what they cost without telemetry.
pub fn init_telemetry(service: &'static str, settings: &TelemetrySettings) -> TelemetryGuard {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let json_logs = std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json");
    let instance = settings.instance_name();
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: logs redirected to files stay plain text.
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text_logs = (!json_logs).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(on_terminal)
            .with_filter(log_filter)
    });
    let json_log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json_log_lines = json_logs.then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(json_log_format::JsonLogFormat { service, instance: instance.clone() })
            .with_writer(std::io::stderr)
            .with_filter(json_log_filter)
    });
    let span_fields = json_logs.then_some(json_log_format::SpanFieldsLayer);

    let mut export_failure = None;
    let tracer_provider = (json_logs || !settings.otlp_endpoint.is_empty()).then(|| {
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio))))
            .with_resource(
                Resource::builder()
                    .with_service_name(format!("traffic-dam-{service}"))
                    .with_attribute(KeyValue::new("service.instance.id", instance.clone()))
                    .build(),
            );
        if !settings.otlp_endpoint.is_empty() {
            match opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.otlp_endpoint.clone())
                .build()
            {
                Ok(exporter) => builder = builder.with_batch_exporter(exporter),
                Err(error) => export_failure = Some(error.to_string()),
            }
        }
        builder.build()
    });
    // Traces follow the service's own spans at info, whatever RUST_LOG says about log lines.
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(trace_context::TRACER_NAME))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry()
        .with(otel_layer)
        .with(span_fields)
        .with(text_logs)
        .with(json_log_lines)
        .try_init();
    if installed.is_ok() {
        if let Some(error) = export_failure {
            tracing::error!(endpoint = %settings.otlp_endpoint, %error, "trace export is off: the OTLP exporter could not be built");
        } else if !settings.otlp_endpoint.is_empty() {
            tracing::info!(endpoint = %settings.otlp_endpoint, sample_ratio = settings.sample_ratio, "exporting traces over OTLP");
        }
    }
    TelemetryGuard { tracer_provider }
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
            crate::script_runner::register_script_metrics();
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
