//! Builds the dam service from settings and serves it on a given listener until the shutdown future completes.

use std::future::Future;
use std::sync::Arc;

use protocol::{RedisConnections, RedisKeys, Settings};
use tokio::net::TcpListener;

use crate::app_state::AdminState;
use crate::error::AdminError;
use crate::routes::build_router;

pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdminError> {
    let redis =
        RedisConnections::new(&settings.redis).map_err(|error| AdminError::Settings(error.to_string()))?;
    let state = AdminState {
        keys: RedisKeys::new(settings.redis.key_prefix.clone()),
        settings: Arc::new(settings),
        redis,
        metrics: protocol::telemetry::prometheus_handle(),
    };
    axum::serve(listener, build_router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|error| AdminError::Server(error.to_string()))
}
