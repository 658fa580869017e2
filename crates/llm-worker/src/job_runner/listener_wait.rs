//! A job that waited long in its lane may have lost its client: before it reaches the upstream, it waits (boundedly)
//! until somebody is known to listen, or until the worker's abandonment check cancels it.

use std::time::Duration;

use protocol::unix_time_ms;

use super::give_back_unused_permit;
use super::running_job::RunningJob;
use crate::abandonment::{LISTENER_CHECK_INTERVAL, SILENCE_CONFIRMATION};
use crate::error::WorkerError;

impl RunningJob<'_> {
    /// A job that waited longer than the grace period may have lost its client meanwhile: it is not started
    /// before somebody is known to listen. One sample now; when it finds nobody, the job waits for the worker's
    /// abandonment check, which judges over several samples (see `abandonment`): a listener heard (a client that
    /// reconnected) starts it, a confirmed silence cancels it before it reaches the LLM. Without evidence (Redis
    /// not answering) it starts after a bounded wait: a chat is never dropped on a guess.
    pub(super) async fn wait_for_a_listener_after_a_long_wait(&mut self) -> Result<(), WorkerError> {
        let grace = Duration::from_millis(self.context.settings.worker.abandon_grace_ms);
        let waited = Duration::from_millis(unix_time_ms().saturating_sub(self.envelope.created_at_ms));
        if self.envelope.unattended || waited <= grace {
            return Ok(());
        }
        let channel = self.context.keys.job_event_channel(&self.envelope.id);
        let counted: redis::RedisResult<(String, u64)> = self
            .context
            .redis
            .run(|mut connection| async move {
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut connection).await
            })
            .await;
        if matches!(counted, Ok((_, listeners)) if listeners > 0) {
            return Ok(());
        }
        // Waiting for a listener is not waiting for upstream capacity: the worker may claim more meanwhile, and
        // a permit had with the start goes back (the job asks again if it starts).
        self.seat_until_first_permit = None;
        give_back_unused_permit(self.context, self.early_permit.take()).await;
        let longest_wait = SILENCE_CONFIRMATION.min(grace) + LISTENER_CHECK_INTERVAL * 3;
        tokio::select! {
            _ = self.stop.cancelled() => Err(WorkerError::Stopped),
            _ = self.cancel.cancelled() => Ok(()),
            _ = self.registration.listener_heard() => Ok(()),
            _ = tokio::time::sleep(longest_wait) => Ok(()),
        }
    }
}
