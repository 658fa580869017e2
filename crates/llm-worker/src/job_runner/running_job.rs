//! One started job's attempts at the upstream: for each, wait for a permit, call, settle the permit with what the
//! call used, then end the job or (for a failure before any text) pause and try again. How an answer is relayed
//! lives in `answer_stream`, how a job ends in `job_endings`, when to retry in `upstream_retry`.

use std::time::Duration;

use protocol::job_lifecycle::JobEnding;
use protocol::retry_backoff::RetryBackoff;
use protocol::upstream_capacity::{CallOutcome, PermitDecision, UpstreamPermit};
use protocol::{JobEnvelope, JobStatus, Usage, unix_time_ms};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::answer_stream::{AnswerOutcome, WriteInFlight};
use super::{JobContext, JobOutcome, estimated_usage};
use crate::cancel_listener::CancelRegistration;
use crate::error::WorkerError;
use crate::stream_writer::StreamWriter;
use crate::upstream_permits::{PermitLineSeat, PermitWait, settle_upstream_permit, wait_for_upstream_permit};
use crate::worker_metrics::LlmRequestOutcome;

/// One job in progress: its stream writer, the write under way, and what can interrupt it.
pub(super) struct RunningJob<'a> {
    pub(super) context: &'a JobContext,
    pub(super) envelope: &'a JobEnvelope,
    pub(super) stop: &'a CancellationToken,
    pub(super) cancel: CancellationToken,
    pub(super) registration: &'a CancelRegistration,
    pub(super) writer: StreamWriter<'a>,
    /// At most one write at a time, so events land in seq order.
    pub(super) write_in_flight: Option<WriteInFlight<'a>>,
    /// The most tokens one upstream call of this job may use.
    pub(super) reserve_tokens: u64,
    /// The permit answer had with the start, for the first upstream call.
    pub(super) early_permit: Option<PermitDecision>,
    /// Held from the claim until the first permit answer (see `PermitLine`); dropping it leaves the line.
    pub(super) seat_until_first_permit: Option<PermitLineSeat>,
    /// When this worker claimed the job: the start of its own time (`dam_worker_added_latency_seconds{start}`).
    pub(super) claimed_at: Instant,
    /// Time since the claim spent waiting on purpose (a permit, a listener): not the worker's overhead.
    pub(super) waited_not_overhead: Duration,
    /// Whether the start latency was recorded: once, at the first upstream request.
    pub(super) start_recorded: bool,
    pub(super) upstream_retries: u32,
    /// The pauses between upstream attempts (see `upstream_retry`).
    pub(super) upstream_backoff: RetryBackoff,
}

impl RunningJob<'_> {
    pub(super) async fn run(&mut self) -> Result<JobOutcome, WorkerError> {
        if unix_time_ms() > self.envelope.deadline_ms {
            return self.end_expired().await;
        }
        let listener_wait_started = Instant::now();
        self.wait_for_a_listener_after_a_long_wait().await?;
        self.waited_not_overhead += listener_wait_started.elapsed();
        if self.cancel.is_cancelled() {
            return self.end_cancelled(self.registration.reason(), 0).await;
        }
        let max_attempts = self.context.settings.llm.max_attempts.max(1);
        for upstream_attempt in 1..=max_attempts {
            let Some(permit) = self.wait_for_permit().await? else {
                return self.end_expired().await;
            };
            match self.call_upstream_once(&permit, upstream_attempt).await? {
                AnswerOutcome::Completed { usage, finish_reason } => {
                    // The upstream spent them whether or not the ending lands.
                    self.context.metrics.count_llm_tokens(usage.prompt_tokens, usage.completion_tokens);
                    let done = self.writer.done(usage, finish_reason);
                    let ending = JobEnding {
                        status: JobStatus::Done,
                        tokens_used: usage.total_tokens,
                        dead_letter: None,
                    };
                    self.finish(done, ending).await?;
                    return Ok(JobOutcome::Completed);
                }
                AnswerOutcome::Cancelled { reason, pieces } => {
                    return self.end_cancelled(reason, pieces).await;
                }
                AnswerOutcome::Failed { error, text_started, .. }
                    if super::upstream_retry::may_retry(
                        &error,
                        text_started,
                        upstream_attempt,
                        max_attempts,
                    ) =>
                {
                    tracing::info!(job_id = %self.envelope.id, %error, upstream_attempt, "upstream failed; retrying");
                    self.context.metrics.upstream_retries.increment(1);
                    self.upstream_retries += 1;
                    if !self.back_off(error.retry_after()).await? {
                        return self.end_cancelled(self.registration.reason(), 0).await;
                    }
                }
                AnswerOutcome::Failed { error, pieces, .. } => {
                    return self.end_failed(&error, upstream_attempt, pieces).await;
                }
            }
        }
        unreachable!("the last attempt always ends the job")
    }

    /// Waits for leave to call the upstream (using the permit answer had with the start, if any); `None` when the
    /// job's deadline passed first.
    async fn wait_for_permit(&mut self) -> Result<Option<UpstreamPermit>, WorkerError> {
        let interrupt = PermitWait { stop: self.stop, cancel: &self.cancel };
        let first_answer = self.early_permit.take();
        let permit_wait_started = Instant::now();
        // The steps' spans are held, not entered: a span entered on every poll of a streaming answer costs the
        // subscriber's bookkeeping per token. They are children of `chat.run`, which this task runs in.
        let permit_wait_span = tracing::info_span!("chat.permit_wait", job_id = %self.envelope.id);
        let waited = wait_for_upstream_permit(
            self.context,
            self.envelope,
            self.reserve_tokens,
            first_answer,
            interrupt,
        )
        .await;
        drop(permit_wait_span);
        // The first answer is in: the worker may claim more if nothing else waits.
        self.seat_until_first_permit = None;
        let permit_waited = permit_wait_started.elapsed();
        self.waited_not_overhead += permit_waited;
        if matches!(waited, Ok(Some(_))) {
            self.context.metrics.record_permit_wait(permit_waited);
        }
        waited
    }

    /// Calls the upstream once under `permit`, counts the request, and settles the permit with what the call
    /// used and what it says about the upstream's health.
    async fn call_upstream_once(
        &mut self,
        permit: &UpstreamPermit,
        upstream_attempt: u32,
    ) -> Result<AnswerOutcome, WorkerError> {
        let upstream_call_span =
            tracing::info_span!("chat.upstream_call", job_id = %self.envelope.id, upstream_attempt);
        let answer = self.stream_one_answer().await;
        drop(upstream_call_span);
        self.context.metrics.count_llm_request(match &answer {
            Ok(AnswerOutcome::Completed { .. }) => LlmRequestOutcome::Ok,
            Ok(AnswerOutcome::Failed { error, .. }) => LlmRequestOutcome::of_failure(error),
            // Cut by this worker: the client cancelled, the worker stopped or lost Redis mid-answer.
            Ok(AnswerOutcome::Cancelled { .. }) | Err(_) => LlmRequestOutcome::Cancelled,
        });
        let (tokens_used, call_outcome) = match &answer {
            Ok(AnswerOutcome::Completed { usage, .. }) => (usage.total_tokens, CallOutcome::Ok),
            Ok(AnswerOutcome::Failed { error, pieces, .. }) => {
                (self.estimated_usage(*pieces).total_tokens, error.call_outcome())
            }
            Ok(AnswerOutcome::Cancelled { pieces, .. }) => {
                (self.estimated_usage(*pieces).total_tokens, CallOutcome::Neutral)
            }
            Err(_) => (permit.reserved_tokens, CallOutcome::Neutral),
        };
        settle_upstream_permit(self.context, permit, tokens_used, call_outcome).await;
        answer
    }

    pub(super) fn estimated_usage(&self, completion_pieces: u64) -> Usage {
        estimated_usage(self.envelope, completion_pieces)
    }
}
