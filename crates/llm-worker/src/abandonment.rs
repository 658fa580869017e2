//! Cancels the running jobs nobody listens to any more: once a second, one `PUBSUB NUMSUB` for all of this
//! worker's jobs (not one query per job), and a job whose event channel had no subscriber on any gateway for
//! the grace period is cancelled, so no capacity or tokens go to answers nobody reads.

use std::collections::HashMap;
use std::time::Duration;

use protocol::{JobId, RedisConnections};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel_listener::{ABANDONED, CancelRegistry};

/// How often the listeners of running jobs are counted.
const LISTENER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Checks the registered jobs' listeners until `shutdown`.
pub async fn cancel_abandoned_jobs_until_stopped(
    redis: RedisConnections,
    registry: CancelRegistry,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let mut silent_since: HashMap<JobId, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(LISTENER_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let jobs = registry.listened_channels();
        silent_since.retain(|job_id, _| jobs.iter().any(|(running, _)| running == job_id));
        if jobs.is_empty() {
            continue;
        }
        let mut count = redis::cmd("PUBSUB");
        count.arg("NUMSUB");
        for (_, channel) in &jobs {
            count.arg(channel);
        }
        let counted: redis::RedisResult<Vec<(String, u64)>> =
            redis.run(|mut connection| async move { count.query_async(&mut connection).await }).await;
        // Redis did not answer: no evidence either way.
        let Ok(counted) = counted else { continue };
        let now = Instant::now();
        for ((job_id, _), (_, listeners)) in jobs.iter().zip(counted) {
            if listeners > 0 {
                silent_since.remove(job_id);
            } else if now.duration_since(*silent_since.entry(*job_id).or_insert(now)) > grace {
                tracing::info!(%job_id, "nobody listens any more; cancelling");
                registry.cancel(job_id, ABANDONED);
            }
        }
    }
}
