//! Cancels the jobs nobody listens to any more: once a second, one `PUBSUB NUMSUB` for all of this worker's
//! registered jobs (not one query per job), waiting or running. A job is judged over several samples, with its
//! grace counted from when a listener was last seen (at first: the job's creation), so a client that reconnects
//! through a gateway restart keeps its chat, while an answer nobody reads costs no capacity or tokens for long.

use std::collections::HashMap;
use std::time::Duration;

use protocol::{JobId, RedisConnections};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel_listener::{ABANDONED, CancelRegistry};

/// How often the listeners of registered jobs are counted.
pub const LISTENER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long a job's channel must have stayed silent, sample after sample, before the job may be cancelled,
/// however long ago its grace ran out: a client that lost its gateway reconnects after EventSource's retry delay
/// (the gateway sends `retry: 2000`) plus the failed attempt and nginx's pick of another gateway, a few seconds.
/// A grace configured shorter than this shortens it too (that operator chose to wait less), but a job is always
/// judged on at least two samples.
pub const SILENCE_CONFIRMATION: Duration = Duration::from_secs(5);

/// What the checks know of one job's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerWatch {
    /// When a listener was last seen (or, before any sample found one, last known to be there).
    last_heard: Instant,
    /// The first of the samples in a row that found nobody, if the last one did.
    silent_since: Option<Instant>,
    /// How many samples in a row found nobody.
    silent_samples: u32,
}

/// What one sample tells about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerVerdict {
    Heard,
    /// Nobody listens, but not for long enough to give up on the job.
    Waiting,
    /// Nobody listened for the grace since a listener was last seen, confirmed over samples spanning
    /// [`SILENCE_CONFIRMATION`].
    Abandoned,
}

impl ListenerWatch {
    pub fn new(last_heard: Instant) -> Self {
        Self { last_heard, silent_since: None, silent_samples: 0 }
    }

    /// Takes one sample taken at `now` that counted `listeners`.
    pub fn record(&mut self, now: Instant, listeners: u64, grace: Duration) -> ListenerVerdict {
        if listeners > 0 {
            self.last_heard = now;
            self.silent_since = None;
            self.silent_samples = 0;
            return ListenerVerdict::Heard;
        }
        let silent_since = *self.silent_since.get_or_insert(now);
        self.silent_samples += 1;
        let confirmed =
            self.silent_samples >= 2 && now.duration_since(silent_since) >= SILENCE_CONFIRMATION.min(grace);
        if confirmed && now.duration_since(self.last_heard) > grace {
            ListenerVerdict::Abandoned
        } else {
            ListenerVerdict::Waiting
        }
    }
}

/// Checks the registered jobs' listeners until `shutdown`.
pub async fn cancel_abandoned_jobs_until_stopped(
    redis: RedisConnections,
    registry: CancelRegistry,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let mut watches: HashMap<JobId, ListenerWatch> = HashMap::new();
    let mut ticker = tokio::time::interval(LISTENER_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let jobs = registry.listened_jobs();
        watches.retain(|job_id, _| jobs.iter().any(|job| job.job_id == *job_id));
        if jobs.is_empty() {
            continue;
        }
        let mut count = redis::cmd("PUBSUB");
        count.arg("NUMSUB");
        for job in &jobs {
            count.arg(&job.channel);
        }
        let counted: redis::RedisResult<Vec<(String, u64)>> =
            redis.run(|mut connection| async move { count.query_async(&mut connection).await }).await;
        // Redis did not answer: no evidence either way.
        let Ok(counted) = counted else { continue };
        let now = Instant::now();
        for (job, (_, listeners)) in jobs.iter().zip(counted) {
            let watch = watches.entry(job.job_id).or_insert_with(|| ListenerWatch::new(job.last_heard));
            match watch.record(now, listeners, grace) {
                ListenerVerdict::Heard => registry.listener_heard(&job.job_id),
                ListenerVerdict::Waiting => {}
                ListenerVerdict::Abandoned => {
                    tracing::info!(job_id = %job.job_id, "nobody listens any more; cancelling");
                    registry.cancel(&job.job_id, ABANDONED);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(15);

    fn seconds(count: u64) -> Duration {
        Duration::from_secs(count)
    }

    #[test]
    fn one_silent_sample_long_after_the_grace_does_not_abandon_a_job() {
        let created = Instant::now();
        let mut watch = ListenerWatch::new(created);
        assert_eq!(watch.record(created + seconds(60), 0, GRACE), ListenerVerdict::Waiting);
        assert_eq!(watch.record(created + seconds(62), 0, GRACE), ListenerVerdict::Waiting);
        assert_eq!(watch.record(created + seconds(65), 0, GRACE), ListenerVerdict::Abandoned);
    }

    #[test]
    fn a_listener_that_comes_back_within_the_confirmation_keeps_the_job_and_restarts_its_grace() {
        let created = Instant::now();
        let mut watch = ListenerWatch::new(created);
        assert_eq!(watch.record(created + seconds(60), 0, GRACE), ListenerVerdict::Waiting);
        assert_eq!(watch.record(created + seconds(63), 1, GRACE), ListenerVerdict::Heard);
        // Silent again, for longer than the confirmation but not the grace since it was last heard.
        assert_eq!(watch.record(created + seconds(64), 0, GRACE), ListenerVerdict::Waiting);
        assert_eq!(watch.record(created + seconds(75), 0, GRACE), ListenerVerdict::Waiting);
        assert_eq!(watch.record(created + seconds(79), 0, GRACE), ListenerVerdict::Abandoned);
    }

    #[test]
    fn a_grace_shorter_than_the_confirmation_shortens_it_but_one_sample_never_decides() {
        let created = Instant::now();
        let short = Duration::from_millis(300);
        let mut watch = ListenerWatch::new(created);
        assert_eq!(watch.record(created + seconds(60), 0, short), ListenerVerdict::Waiting);
        assert_eq!(watch.record(created + seconds(61), 0, short), ListenerVerdict::Abandoned);
        let mut no_grace = ListenerWatch::new(created);
        assert_eq!(no_grace.record(created + seconds(1), 0, Duration::ZERO), ListenerVerdict::Waiting);
        assert_eq!(no_grace.record(created + seconds(2), 0, Duration::ZERO), ListenerVerdict::Abandoned);
    }

    #[test]
    fn a_job_is_never_abandoned_within_its_grace_of_the_last_listener() {
        let created = Instant::now();
        let mut watch = ListenerWatch::new(created);
        for second in 1..=15 {
            assert_eq!(watch.record(created + seconds(second), 0, GRACE), ListenerVerdict::Waiting);
        }
        assert_eq!(watch.record(created + seconds(16), 0, GRACE), ListenerVerdict::Abandoned);
    }
}
