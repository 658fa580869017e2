//! Keeps a process's view of the live limits current: reads `{prefix}limits` every `LIVE_LIMITS_POLL` (a single
//! GET), falls back to the configured limits when the key is absent, and keeps the last good value while Redis
//! is unreachable or the stored value is invalid. So a change made through the dam is in force everywhere
//! within a second, with no restart and nothing to miss.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::limits::Limits;
use crate::{RedisConnections, RedisKeys};

/// How often the limits are re-read: twice per second, so a change applies within one.
pub const LIVE_LIMITS_POLL: Duration = Duration::from_millis(500);

/// Starts the watcher. The receiver holds the configured limits until the first read succeeds.
pub fn watch_live_limits(
    redis: RedisConnections,
    keys: RedisKeys,
    configured: Limits,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<Limits>> {
    let (sender, receiver) = watch::channel(Arc::new(configured.clone()));
    tokio::spawn(async move {
        let limits_key = keys.live_limits();
        let mut ticker = tokio::time::interval(LIVE_LIMITS_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let key = limits_key.clone();
            let stored: redis::RedisResult<Option<String>> = redis
                .run(|mut connection| async move {
                    redis::cmd("GET").arg(&key).query_async(&mut connection).await
                })
                .await;
            let limits = match stored {
                Ok(None) => configured.clone(),
                Ok(Some(text)) => {
                    match Limits::decode(&text).map_err(|error| error.to_string()).and_then(|limits| {
                        limits.validate().map_err(|error| error.to_string())?;
                        Ok(limits)
                    }) {
                        Ok(limits) => limits,
                        Err(error) => {
                            tracing::warn!(%error, "stored limits are invalid; keeping the previous ones");
                            continue;
                        }
                    }
                }
                Err(_) => continue,
            };
            sender.send_if_modified(|current| {
                if **current == limits {
                    return false;
                }
                tracing::info!("live limits changed");
                *current = Arc::new(limits);
                true
            });
            if sender.is_closed() {
                return;
            }
        }
    });
    receiver
}
