//! When a failed upstream call is tried again, and after how long: only a failure before any text went out (a
//! retry would repeat text already sent), only one the provider may answer differently next time, within
//! `llm.max_attempts`; after a pause that doubles from `llm.retry_base_delay_ms` up to `llm.retry_max_delay_ms`
//! with full jitter, and never shorter than the provider's `Retry-After` (itself capped at the longest pause).

use std::time::Duration;

use protocol::Settings;
use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};

use super::running_job::RunningJob;
use crate::error::WorkerError;
use crate::provider::ProviderError;

/// Whether upstream attempt `upstream_attempt` (of at most `max_attempts`), which failed with `error`, is tried again.
pub(super) fn may_retry(
    error: &ProviderError,
    text_started: bool,
    upstream_attempt: u32,
    max_attempts: u32,
) -> bool {
    !text_started && error.is_retryable() && upstream_attempt < max_attempts
}

/// The pauses between one job's upstream attempts.
pub(super) fn upstream_backoff(settings: &Settings) -> RetryBackoff {
    let llm = &settings.llm;
    RetryBackoff::new(RetryPolicy::doubling(
        Duration::from_millis(llm.retry_base_delay_ms),
        Duration::from_millis(llm.retry_max_delay_ms),
        Jitter::Full,
    ))
}

impl RunningJob<'_> {
    /// Sleeps before a retry, at least what the upstream asked for. Returns false when the job was cancelled
    /// meanwhile.
    pub(super) async fn back_off(&mut self, retry_after: Option<Duration>) -> Result<bool, WorkerError> {
        let delay = self.upstream_backoff.next_delay_at_least(retry_after.unwrap_or_default());
        tokio::select! {
            _ = self.stop.cancelled() => Err(WorkerError::Stopped),
            _ = self.cancel.cancelled() => Ok(false),
            _ = tokio::time::sleep(delay) => Ok(true),
        }
    }
}
