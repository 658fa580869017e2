//! How every service talks to Redis: a few auto-reconnecting multiplexed connections shared by all tasks, opened
//! lazily (so a service starts, and reports not-ready, while Redis is down) and used round-robin. Every command
//! runs under a deadline, so an unreachable Redis costs a bounded wait, never a hang.
//!
//! Not a pool with checkout: a multiplexed connection already carries many concurrent commands, and pools such
//! as deadpool-redis spend a PING round trip on every checkout, which would double the cost of each admission.
//! Blocking commands (BLPOP) and pub/sub use their own dedicated connections, never these.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult};
use tokio::sync::OnceCell;

use crate::settings::RedisSettings;

/// Shared, cloneable access to Redis for one service process.
#[derive(Clone)]
pub struct RedisConnections {
    client: redis::Client,
    connections: Arc<[OnceCell<ConnectionManager>]>,
    next_connection: Arc<AtomicUsize>,
    command_timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for RedisConnections {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisConnections")
            .field("connections", &self.connections.len())
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisConnections {
    /// Checks the URL; connects only when first used.
    pub fn new(settings: &RedisSettings) -> RedisResult<Self> {
        let client = redis::Client::open(settings.url.as_str())?;
        let connection_count = settings.pool_size.max(1);
        Ok(Self {
            client,
            connections: (0..connection_count).map(|_| OnceCell::new()).collect(),
            next_connection: Arc::new(AtomicUsize::new(0)),
            command_timeout: Duration::from_millis(settings.command_timeout_ms.max(1)),
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms.max(1)),
        })
    }

    /// The client, for dedicated connections (pub/sub, blocking commands).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// One of the shared connections, connecting it first if needed (bounded by the connect timeout).
    pub async fn connection(&self) -> RedisResult<ConnectionManager> {
        let index = self.next_connection.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let cell = &self.connections[index];
        if let Some(connection) = cell.get() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.command_timeout))
            .set_connection_timeout(Some(self.connect_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connect = cell.get_or_try_init(|| self.client.get_connection_manager_with_config(config));
        let connection = bounded(self.connect_timeout, connect).await?;
        Ok(connection.clone())
    }

    /// Runs `operation` on a shared connection under the command deadline (plus the connect deadline when the
    /// connection must be opened first), so an unreachable Redis costs a bounded wait.
    pub async fn run<T, F, Fut>(&self, operation: F) -> RedisResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        // Bounded as a whole: callers queued behind one slow connection attempt wait no longer than it.
        let connection = bounded(self.connect_timeout, self.connection()).await?;
        bounded(self.command_timeout, operation(connection)).await
    }
}

/// Bounds any Redis future, turning a timeout into a Redis I/O error.
pub async fn bounded<T>(limit: Duration, operation: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from((ErrorKind::Io, "redis did not answer in time"))),
    }
}
