//! Builds the gateway from settings and serves it on a given listener until a shutdown future completes; then it
//! stops accepting, ends the streams a client can resume elsewhere at once, lets the others run for the drain time,
//! and ends the rest.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use protocol::live_limits::watch_live_limits;
use protocol::{RedisConnections, RedisKeys, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access_directory::AccessDirectory;
use crate::app_state::{AppState, GatewayCounters, OpenStreams, SharedState};
use crate::gateway_metrics::register_series_at_zero;
use crate::http_observation::InstanceHeader;
use crate::http_server::{ConnectionLimits, serve_with_limits};
use crate::queue_watch::start_queue_watch;
use crate::routes::build_router;
use crate::startup_error::StartupError;
use crate::stream_router::StreamRouter;

/// Cancellations of departed clients' chats running at once: enough to keep Redis busy, few enough that a crowd
/// leaving together waits here instead of timing out inside Redis commands queued behind each other.
const CONCURRENT_DEPARTURE_CANCELLATIONS: usize = 64;

/// Builds the shared state and starts the background tasks (stream router, queue watch), which stop when
/// `background` is cancelled.
pub fn build_app_state(settings: Settings, background: CancellationToken) -> Result<AppState, StartupError> {
    let redis = RedisConnections::new(&settings.redis).map_err(StartupError::RedisSettings)?;
    let keys = RedisKeys::new(settings.redis.key_prefix.clone());
    // The recorder first, so that counters resolved once below record into it.
    let metrics = protocol::telemetry::prometheus_handle();
    let counters = GatewayCounters::register();
    register_series_at_zero();
    let instance_header = InstanceHeader::new(&settings.telemetry.instance_name());
    let stream_router = StreamRouter::start(
        redis.client().clone(),
        redis.connect_timeout(),
        counters.pubsub_messages.clone(),
        background.clone(),
    );
    let limits = watch_live_limits(redis.clone(), keys.clone(), settings.limits.clone(), background.clone());
    let access_directory = AccessDirectory::start(
        redis.clone(),
        keys.clone(),
        settings.auth.api_keys.clone(),
        stream_router.clone(),
        background.clone(),
    );
    let queue_watch = start_queue_watch(
        redis.clone(),
        keys.clone(),
        Duration::from_millis(settings.gateway.queue_update_interval_ms),
        background.clone(),
    );
    Ok(AppState::new(SharedState {
        settings: Arc::new(settings),
        keys,
        redis,
        stream_router,
        queue_watch,
        metrics,
        stream_shutdown: background.child_token(),
        resumable_stream_shutdown: background.child_token(),
        open_streams: OpenStreams::default(),
        limits,
        access_directory,
        counters,
        instance_header,
        departure_cancellations: tokio::sync::Semaphore::new(CONCURRENT_DEPARTURE_CANCELLATIONS),
    }))
}

/// Serves the gateway on `listener` until `shutdown` completes and every stream has ended or been cut.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let background = CancellationToken::new();
    let drain_time = Duration::from_secs(settings.gateway.shutdown_drain_s);
    let connection_limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(settings.gateway.header_read_timeout_ms),
        max_header_bytes: settings.gateway.max_header_bytes,
        max_body_bytes: settings.gateway.max_body_bytes,
        body_read_timeout: Duration::from_millis(settings.gateway.body_read_timeout_ms),
        response_write_timeout: Duration::from_millis(settings.gateway.response_write_timeout_ms),
    };
    let state = build_app_state(settings, background.clone())?;
    let stream_shutdown = state.stream_shutdown.clone();
    let resumable_stream_shutdown = state.resumable_stream_shutdown.clone();
    let instance_header = state.instance_header.clone();
    let app = build_router(state);
    let graceful = async move {
        shutdown.await;
        tracing::info!(
            ?drain_time,
            "gateway stopping: no new connections; browser event streams end now and resume on another gateway, OpenAI-compatible streams may finish within the drain time"
        );
        resumable_stream_shutdown.cancel();
        tokio::spawn(async move {
            tokio::time::sleep(drain_time).await;
            stream_shutdown.cancel();
        });
    };
    let served = serve_with_limits(listener, app, connection_limits, instance_header, graceful).await;
    background.cancel();
    served.map_err(StartupError::Serve)
}
