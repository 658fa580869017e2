//! Builds the gateway from settings and serves it on a given listener until a shutdown future completes; then it
//! stops accepting, lets open streams run for the drain time, and ends the rest (clients resume elsewhere).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::{RedisConnections, RedisKeys, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app_state::{AppState, OpenStreams};
use crate::error::GatewayError;
use crate::queue_watch::start_queue_watch;
use crate::routes::build_router;
use crate::stream_router::StreamRouter;

/// Builds the shared state and starts the background tasks (stream router, queue watch), which stop when
/// `background` is cancelled.
pub fn build_app_state(settings: Settings, background: CancellationToken) -> Result<AppState, GatewayError> {
    let redis = RedisConnections::new(&settings.redis)
        .map_err(|error| GatewayError::Internal(format!("invalid redis settings: {error}")))?;
    let keys = RedisKeys::new(settings.redis.key_prefix.clone());
    let stream_router =
        StreamRouter::start(redis.client().clone(), redis.connect_timeout(), background.clone());
    let queue_watch = start_queue_watch(
        redis.clone(),
        keys.clone(),
        Duration::from_millis(settings.gateway.queue_update_interval_ms),
        background.clone(),
    );
    Ok(AppState {
        settings: Arc::new(settings),
        keys,
        redis,
        stream_router,
        queue_watch,
        metrics: protocol::telemetry::prometheus_handle(),
        stream_shutdown: background.child_token(),
        open_streams: OpenStreams::default(),
    })
}

/// Serves the gateway on `listener` until `shutdown` completes and every stream has ended or been cut.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let background = CancellationToken::new();
    let drain_time = Duration::from_secs(settings.gateway.shutdown_drain_s);
    let state = build_app_state(settings, background.clone())?;
    let stream_shutdown = state.stream_shutdown.clone();
    let app = build_router(state).into_make_service_with_connect_info::<SocketAddr>();
    let graceful = async move {
        shutdown.await;
        tracing::info!(?drain_time, "gateway stopping: no new connections, open streams may finish");
        tokio::spawn(async move {
            tokio::time::sleep(drain_time).await;
            stream_shutdown.cancel();
        });
    };
    let served = axum::serve(listener, app).with_graceful_shutdown(graceful).await;
    background.cancel();
    served.map_err(|error| GatewayError::Internal(format!("server error: {error}")))
}
