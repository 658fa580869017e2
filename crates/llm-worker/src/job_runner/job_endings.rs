//! How a started job ends: its terminal event (`done`, or an `error` the client sees) written with its final status
//! once any write in flight has landed, and for a job that failed for good, its dead-letter record.

use protocol::dead_letter::DeadLetter;
use protocol::job_lifecycle::JobEnding;
use protocol::{JobStatus, StreamEvent, unix_time_ms};

use super::JobOutcome;
use super::running_job::RunningJob;
use crate::error::WorkerError;
use crate::provider::ProviderError;

impl RunningJob<'_> {
    /// Ends the job with its terminal event, once any write in flight has landed.
    pub(super) async fn finish(
        &mut self,
        terminal: StreamEvent,
        ending: JobEnding<'_>,
    ) -> Result<(), WorkerError> {
        self.wait_for_write_in_flight().await?;
        self.writer.finish(&[terminal], ending).await
    }

    pub(super) async fn end_expired(&mut self) -> Result<JobOutcome, WorkerError> {
        let expired =
            self.writer.error("expired", "the chat waited longer than its deadline and was not started");
        self.finish(expired, JobEnding { status: JobStatus::Expired, tokens_used: 0, dead_letter: None })
            .await?;
        Ok(JobOutcome::Expired)
    }

    pub(super) async fn end_cancelled(
        &mut self,
        reason: &str,
        pieces: u64,
    ) -> Result<JobOutcome, WorkerError> {
        let cancelled = self.writer.error("cancelled", reason);
        let tokens_used = if pieces > 0 { self.estimated_usage(pieces).total_tokens } else { 0 };
        let ending = JobEnding { status: JobStatus::Cancelled, tokens_used, dead_letter: None };
        self.finish(cancelled, ending).await?;
        metrics::counter!("dam_worker_cancellations_total").increment(1);
        Ok(JobOutcome::Cancelled)
    }

    pub(super) async fn end_failed(
        &mut self,
        error: &ProviderError,
        upstream_attempts: u32,
        pieces: u64,
    ) -> Result<JobOutcome, WorkerError> {
        tracing::warn!(job_id = %self.envelope.id, %error, upstream_attempts, "job failed");
        let (code, reason) = if error.is_retryable() {
            ("upstream_error", "upstream_failed")
        } else {
            ("upstream_rejected", "upstream_rejected")
        };
        let message = format!("the model provider failed after {upstream_attempts} attempt(s): {error}");
        let failure = self.writer.error(code, &message);
        let dead_letter = DeadLetter {
            job_id: Some(self.envelope.id),
            reason: reason.to_owned(),
            last_error: error.to_string(),
            attempts: upstream_attempts,
            worker_id: self.context.worker_id.to_string(),
            dead_at_ms: unix_time_ms(),
            raw_envelope: self.writer.fence.raw_envelope.to_owned(),
        };
        let tokens_used = self.estimated_usage(pieces).total_tokens;
        let ending = JobEnding { status: JobStatus::Failed, tokens_used, dead_letter: Some(&dead_letter) };
        self.finish(failure, ending).await?;
        Ok(JobOutcome::Failed)
    }
}
