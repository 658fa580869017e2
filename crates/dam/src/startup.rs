//! Builds the dam service from settings and serves it on a given listener until the shutdown future completes.
//! Refuses to serve an admin API without a token on anything but loopback.

use std::future::Future;
use std::sync::Arc;

use protocol::{RedisConnections, RedisKeys, Settings};
use tokio::net::TcpListener;

use crate::app_state::AdminState;
use crate::auth::{AdminToken, ensure_safe_to_serve};
use crate::routes::build_router;
use crate::startup_error::StartupError;

pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let admin_token = AdminToken::from_settings(&settings.dam);
    let address = listener.local_addr().map_err(StartupError::ListenerAddress)?;
    ensure_safe_to_serve(admin_token.as_ref(), address)?;
    if admin_token.is_none() {
        tracing::warn!(%address, "no admin token is set: the admin API is open to every local user of this host");
    }
    tracing::info!(%address, "dam listening");
    let redis = RedisConnections::new(&settings.redis).map_err(StartupError::RedisSettings)?;
    let state = AdminState {
        keys: RedisKeys::new(settings.redis.key_prefix.clone()),
        settings: Arc::new(settings),
        redis,
        metrics: protocol::telemetry::prometheus_handle(),
        admin_token,
    };
    axum::serve(listener, build_router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartupError::Serve)?;
    tracing::info!("dam stopped");
    Ok(())
}

/// What `dam serve` does: telemetry, settings from files and environment, bind `dam.host:dam.port`, serve until
/// SIGINT or SIGTERM.
pub async fn serve_until_signalled() -> Result<(), StartupError> {
    let settings = Settings::load()?;
    let _telemetry = protocol::telemetry::init_telemetry("dam", &settings.telemetry);
    let address = format!("{}:{}", settings.dam.host, settings.dam.port);
    let listener =
        TcpListener::bind(&address).await.map_err(|source| StartupError::Listen { address, source })?;
    run(listener, settings, protocol::shutdown::shutdown_signal()).await
}
