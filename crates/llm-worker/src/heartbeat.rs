//! The worker's presence in Redis: it registers its id, and refreshes a heartbeat key with a TTL for as long as
//! it lives. A heartbeat that expired means the worker died, and its processing list can be recovered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use protocol::{RedisConnections, RedisKeys, unix_time_ms};
use tokio_util::sync::CancellationToken;

/// What `/readyz` reports: whether the last heartbeat landed (the worker is registered and known to the reaper)
/// and whether the worker is draining.
#[derive(Debug, Default)]
pub struct WorkerReadiness {
    registered: AtomicBool,
    draining: AtomicBool,
}

impl WorkerReadiness {
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether the last heartbeat was written.
    pub fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Release);
    }

    /// From the shutdown signal on: no new jobs, running ones finish or go back.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Writes the heartbeat and registers the worker once: done before the first claim, so a worker that dies
/// holding a job is always known to the reaper.
pub async fn beat_once(
    redis: &RedisConnections,
    keys: &RedisKeys,
    worker_id: &str,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let mut beat = redis::pipe();
    beat.cmd("SET")
        .arg(keys.worker_heartbeat(worker_id))
        .arg(unix_time_ms())
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .ignore();
    beat.cmd("SADD").arg(keys.worker_registry()).arg(worker_id).ignore();
    redis.run(|mut connection| async move { beat.query_async(&mut connection).await }).await
}

/// Refreshes the heartbeat every `interval` until `stop` is cancelled, telling `readiness` whether it landed.
pub async fn keep_heartbeat_until_stopped(
    redis: RedisConnections,
    keys: RedisKeys,
    worker_id: String,
    interval: Duration,
    ttl: Duration,
    readiness: Arc<WorkerReadiness>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let beat = beat_once(&redis, &keys, &worker_id, ttl).await;
        readiness.set_registered(beat.is_ok());
        if let Err(error) = beat {
            tracing::warn!(%error, "heartbeat not written");
        }
    }
}

/// Removes the worker's presence, but only when its processing list is empty: a worker that leaves jobs behind
/// stays registered, so its expired heartbeat leads to their recovery.
pub async fn deregister_if_idle(
    redis: &RedisConnections,
    keys: &RedisKeys,
    worker_id: &str,
) -> redis::RedisResult<bool> {
    let processing = keys.worker_processing_list(worker_id);
    let left: u64 = redis
        .run(|mut connection| async move {
            redis::cmd("LLEN").arg(&processing).query_async(&mut connection).await
        })
        .await?;
    if left > 0 {
        return Ok(false);
    }
    let mut farewell = redis::pipe();
    farewell.cmd("DEL").arg(keys.worker_heartbeat(worker_id)).ignore();
    farewell.cmd("SREM").arg(keys.worker_registry()).arg(worker_id).ignore();
    redis.run(|mut connection| async move { farewell.query_async::<()>(&mut connection).await }).await?;
    Ok(true)
}
