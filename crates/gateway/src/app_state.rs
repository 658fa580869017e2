//! `AppState`: what every handler can reach (settings, Redis, the stream router, the queue snapshot, metrics),
//! built once per gateway process and cloned cheaply into each request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use protocol::limits::Limits;
use protocol::{RedisConnections, RedisKeys, Settings};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::access_directory::AccessDirectory;
use crate::gateway_metrics::{ADDED_LATENCY, BROWSER_FLOW, OPENAI_FLOW, TIME_TO_FIRST_TOKEN};
use crate::http_observation::InstanceHeader;
use crate::queue_watch::QueueSnapshot;
use crate::stream_router::StreamRouter;

/// Cheap to clone (one reference count), as axum clones it into every request.
#[derive(Debug, Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The process-wide state behind [`AppState`].
#[derive(Debug)]
pub struct SharedState {
    pub settings: Arc<Settings>,
    pub keys: RedisKeys,
    pub redis: RedisConnections,
    pub stream_router: StreamRouter,
    pub queue_watch: watch::Receiver<QueueSnapshot>,
    pub metrics: PrometheusHandle,
    /// Cancelled when the shutdown drain time is over: open streams end and clients resume elsewhere.
    pub stream_shutdown: CancellationToken,
    /// Cancelled as soon as the gateway begins to stop: streams a client can resume elsewhere (the browser flow's
    /// event streams) end at once, with a short reconnect delay, so that clients move to another gateway.
    pub resumable_stream_shutdown: CancellationToken,
    pub open_streams: OpenStreams,
    /// The limits in force, kept current from Redis.
    pub limits: watch::Receiver<Arc<Limits>>,
    pub access_directory: AccessDirectory,
    pub counters: GatewayCounters,
    /// `X-Dam-Instance`: this process's instance name (`telemetry.instance`).
    pub instance_header: InstanceHeader,
    /// Bounds the cancellations of chats whose OpenAI clients left (see `CancelOnDrop`).
    pub departure_cancellations: tokio::sync::Semaphore,
}

/// Counters and histograms touched per request, message or event, resolved once rather than looked up by name
/// (and labels) every time.
#[derive(Debug, Clone)]
pub struct GatewayCounters {
    pub stream_events_relayed: metrics::Counter,
    pub duplicate_events_dropped: metrics::Counter,
    pub stream_gaps_filled: metrics::Counter,
    pub pubsub_messages: metrics::Counter,
    /// `dam_gateway_added_latency_seconds{stage="admission"}`: a chat POST read to its answer's head.
    pub admission_added_latency: metrics::Histogram,
    /// `dam_gateway_added_latency_seconds{stage="relay"}`: a published message received to its bytes written.
    pub relay_added_latency: metrics::Histogram,
    /// `dam_gateway_time_to_first_token_seconds`, by flow.
    pub browser_time_to_first_token: metrics::Histogram,
    pub openai_time_to_first_token: metrics::Histogram,
}

impl GatewayCounters {
    /// Registers the counters with the installed recorder (so call it after installing one).
    pub fn register() -> Self {
        Self {
            stream_events_relayed: metrics::counter!("dam_gateway_stream_events_relayed_total"),
            duplicate_events_dropped: metrics::counter!("dam_gateway_duplicate_events_dropped_total"),
            stream_gaps_filled: metrics::counter!("dam_gateway_stream_gaps_filled_total"),
            pubsub_messages: metrics::counter!("dam_gateway_pubsub_messages_total"),
            admission_added_latency: metrics::histogram!(ADDED_LATENCY, "stage" => "admission"),
            relay_added_latency: metrics::histogram!(ADDED_LATENCY, "stage" => "relay"),
            browser_time_to_first_token: metrics::histogram!(TIME_TO_FIRST_TOKEN, "flow" => BROWSER_FLOW),
            openai_time_to_first_token: metrics::histogram!(TIME_TO_FIRST_TOKEN, "flow" => OPENAI_FLOW),
        }
    }

    /// The time-to-first-token histogram of `flow` (`browser` or `openai`).
    pub fn time_to_first_token(&self, flow: &str) -> &metrics::Histogram {
        if flow == OPENAI_FLOW { &self.openai_time_to_first_token } else { &self.browser_time_to_first_token }
    }
}

/// Counts this process's open streaming responses.
#[derive(Debug, Clone, Default)]
pub struct OpenStreams(Arc<AtomicUsize>);

impl OpenStreams {
    /// Counts one more open stream until the guard drops.
    pub fn enter(&self) -> OpenStreamGuard {
        let open = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("dam_gateway_open_streams").set(open as f64);
        OpenStreamGuard(self.0.clone())
    }

    /// Counts one more open stream unless `limit` are open already.
    pub fn try_enter(&self, limit: usize) -> Option<OpenStreamGuard> {
        let guard = self.enter();
        if self.current() > limit {
            return None;
        }
        Some(guard)
    }

    pub fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Held by a streaming response for as long as it is open.
#[derive(Debug)]
pub struct OpenStreamGuard(Arc<AtomicUsize>);

impl Drop for OpenStreamGuard {
    fn drop(&mut self) {
        let open = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("dam_gateway_open_streams").set(open as f64);
    }
}
