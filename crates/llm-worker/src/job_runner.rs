//! Runs one claimed job from start to end: takes ownership (the fence), refuses it if it expired or was
//! abandoned, waits for an upstream permit, streams the answer to the replay log and channel (the first token at
//! once, then group commit: see `group_commit`), retries what is safe to retry, and ends the job with `done`, or
//! with an `error` the client sees (and a dead-letter record when it failed for good). Permits live in
//! `upstream_permits`, the fenced writes in `stream_writer`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use protocol::dead_letter::DeadLetter;
use protocol::job_lifecycle::{JobEnding, JobFence, JobStart, start_job, start_job_with_permit_request};
use protocol::upstream_capacity::{CallOutcome, PermitDecision};
use protocol::{
    JobEnvelope, JobStatus, RedisConnections, RedisKeys, Settings, StreamEvent, Usage, unix_time_ms,
};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::abandonment::{LISTENER_CHECK_INTERVAL, SILENCE_CONFIRMATION};
use crate::cancel_listener::{CANCELLED_BY_CLIENT, CancelRegistration, CancelRegistry, ListenedChannel};
use crate::error::WorkerError;
use crate::group_commit::GroupCommit;
use crate::provider::openai::OpenAiProvider;
use crate::provider::{ProviderError, ProviderEvent};
use crate::reaper::Reaper;
use crate::stream_writer::StreamWriter;
use crate::upstream_permits::{
    PermitLine, PermitLineSeat, PermitWait, permit_request, settle_upstream_permit, wait_for_upstream_permit,
};
use crate::worker_metrics::{LlmRequestOutcome, WorkerMetrics};

/// What every job of this worker shares.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub redis: RedisConnections,
    pub keys: RedisKeys,
    pub settings: Arc<Settings>,
    pub worker_id: Arc<str>,
    /// One client for the whole process: its connection pool is shared by every job.
    pub provider: OpenAiProvider,
    /// The limits in force, kept current from Redis.
    pub limits: tokio::sync::watch::Receiver<Arc<protocol::limits::Limits>>,
    pub cancels: CancelRegistry,
    /// This worker's jobs waiting for upstream capacity (see `PermitLine`).
    pub permit_line: Arc<PermitLine>,
    /// Hands an attempt that lost Redis (or its ownership) back: requeued, released or ended (see `reaper`).
    pub reaper: Reaper,
    /// The process's metric handles, resolved once (behind one `Arc`: the context is cloned for every job).
    pub metrics: Arc<WorkerMetrics>,
}

/// What one attempt tells its caller besides its outcome, for the slow-path log line.
#[derive(Debug, Clone, Default)]
pub struct AttemptReport {
    /// Upstream requests retried (after a failure before any text).
    pub upstream_retries: u32,
}

/// How a job attempt ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Completed,
    Failed,
    Expired,
    Cancelled,
    /// Already final or gone when claimed; it was only removed from the processing list.
    Skipped,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Failed => "failed",
            JobOutcome::Expired => "expired",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::Skipped => "skipped",
        }
    }
}

/// How one upstream answer ended.
enum AnswerOutcome {
    Completed { usage: Usage, finish_reason: String },
    Failed { error: ProviderError, text_started: bool, pieces: u64 },
    Cancelled { reason: &'static str, pieces: u64 },
}

/// A stream write under way while the job goes on reading its upstream. Not `Sync`: the job's async methods
/// take `&mut self`, so the job stays `Send` while one is pending.
type WriteInFlight<'a> = Pin<Box<dyn Future<Output = Result<(), WorkerError>> + Send + 'a>>;

/// Runs `envelope` (claimed as `raw_envelope` at `claimed_at`) to its end, or until `stop` is cancelled (then the
/// job stays in the processing list, to be put back). `seat` is the job's place in the permit line since its
/// claim, given up with its first permit answer. `report` receives what the slow-path log needs.
pub async fn run_claimed_job(
    context: &JobContext,
    envelope: &JobEnvelope,
    raw_envelope: &str,
    stop: &CancellationToken,
    seat: PermitLineSeat,
    claimed_at: Instant,
    report: &mut AttemptReport,
) -> Result<JobOutcome, WorkerError> {
    // Registered before the start, so a cancellation sent once the job runs here always finds it. An unattended
    // job (an operator's replay) is never cancelled for want of listeners.
    // Its client was there when it asked for the chat: the grace for a silent channel counts from then.
    let waited = Duration::from_millis(unix_time_ms().saturating_sub(envelope.created_at_ms));
    let listened_channel = (!envelope.unattended).then(|| ListenedChannel {
        channel: context.keys.job_event_channel(&envelope.id),
        last_heard: Instant::now().checked_sub(waited).unwrap_or_else(Instant::now),
    });
    let registration = context.cancels.register(envelope.id, listened_channel);
    let (job_id, worker_id, keys) = (envelope.id, &context.worker_id, &context.keys);
    let new_log_ttl_s = context.settings.job_state_ttl_s();
    let reserve_tokens = estimated_usage(envelope, u64::from(envelope.parameters.max_tokens)).total_tokens;
    // The fast path asks for the upstream permit in the same round trip as the start (a job already late
    // will not call upstream, so it does not ask).
    let permit = (unix_time_ms() <= envelope.deadline_ms).then(|| permit_request(context, reserve_tokens));
    let (start, early_permit) = context
        .redis
        .run(|mut connection| async move {
            match &permit {
                Some(permit) => {
                    start_job_with_permit_request(
                        &mut connection,
                        keys,
                        &job_id,
                        worker_id,
                        unix_time_ms(),
                        new_log_ttl_s,
                        permit,
                    )
                    .await
                }
                None => {
                    let start =
                        start_job(&mut connection, keys, &job_id, worker_id, unix_time_ms(), new_log_ttl_s)
                            .await?;
                    Ok((start, None))
                }
            }
        })
        .await?;
    let (replay_log_length, attempt, cancel_requested) = match start {
        JobStart::Started { replay_log_length, attempt, cancel_requested } => {
            (replay_log_length, attempt, cancel_requested)
        }
        JobStart::AlreadyFinal { .. } | JobStart::Missing => {
            give_back_unused_permit(context, early_permit).await;
            remove_from_processing(context, raw_envelope).await?;
            return Ok(JobOutcome::Skipped);
        }
    };
    let fence = JobFence {
        job_id: &envelope.id,
        identity: &envelope.identity,
        worker_id: &context.worker_id,
        attempt,
        raw_envelope,
        created_at_ms: envelope.created_at_ms,
    };
    let mut job = RunningJob {
        context,
        envelope,
        stop,
        cancel: registration.token.clone(),
        registration: &registration,
        writer: StreamWriter::new(context, fence, replay_log_length),
        write_in_flight: None,
        reserve_tokens,
        early_permit,
        seat_until_first_permit: Some(seat),
        claimed_at,
        waited_not_overhead: Duration::ZERO,
        start_recorded: false,
        upstream_retries: 0,
    };
    // Cancelled while an earlier attempt ran (that worker then died): this attempt only ends it.
    if cancel_requested {
        give_back_unused_permit(context, job.early_permit.take()).await;
        return job.end_cancelled(CANCELLED_BY_CLIENT, 0).await;
    }
    let outcome = job.run().await;
    report.upstream_retries = job.upstream_retries;
    // A job that ended before its first upstream call (expired, abandoned, stopped) did not use that permit.
    give_back_unused_permit(context, job.early_permit.take()).await;
    match outcome {
        Err(WorkerError::CancelRequested) => job.end_cancelled(registration.reason(), 0).await,
        other => other,
    }
}

/// Settles a permit that was granted but never used, so its tokens count no longer.
async fn give_back_unused_permit(context: &JobContext, permit: Option<PermitDecision>) {
    if let Some(PermitDecision::Granted(permit)) = permit {
        settle_upstream_permit(context, &permit, 0, CallOutcome::Neutral).await;
    }
}

/// One job in progress: its stream writer, the write under way, and what can interrupt it.
struct RunningJob<'a> {
    context: &'a JobContext,
    envelope: &'a JobEnvelope,
    stop: &'a CancellationToken,
    cancel: CancellationToken,
    registration: &'a CancelRegistration,
    writer: StreamWriter<'a>,
    /// At most one write at a time, so events land in seq order.
    write_in_flight: Option<WriteInFlight<'a>>,
    /// The most tokens one upstream call of this job may use.
    reserve_tokens: u64,
    /// The permit answer had with the start, for the first upstream call.
    early_permit: Option<PermitDecision>,
    /// Held from the claim until the first permit answer (see `PermitLine`); dropping it leaves the line.
    seat_until_first_permit: Option<PermitLineSeat>,
    /// When this worker claimed the job: the start of its own time (`dam_worker_added_latency_seconds{start}`).
    claimed_at: Instant,
    /// Time since the claim spent waiting on purpose (a permit, a listener): not the worker's overhead.
    waited_not_overhead: Duration,
    /// Whether the start latency was recorded: once, at the first upstream request.
    start_recorded: bool,
    upstream_retries: u32,
}

impl RunningJob<'_> {
    async fn run(&mut self) -> Result<JobOutcome, WorkerError> {
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
            let Some(permit) = waited? else {
                return self.end_expired().await;
            };
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
            settle_upstream_permit(self.context, &permit, tokens_used, call_outcome).await;
            match answer? {
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
                AnswerOutcome::Failed { error, text_started: false, .. }
                    if error.is_retryable() && upstream_attempt < max_attempts =>
                {
                    tracing::info!(job_id = %self.envelope.id, %error, upstream_attempt, "upstream failed; retrying");
                    self.context.metrics.upstream_retries.increment(1);
                    self.upstream_retries += 1;
                    if !self.back_off(upstream_attempt, error.retry_after()).await? {
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

    /// Sleeps before a retry: exponential backoff with full jitter, at least what the upstream asked for.
    /// Returns false when the job was cancelled meanwhile.
    async fn back_off(
        &mut self,
        upstream_attempt: u32,
        retry_after: Option<Duration>,
    ) -> Result<bool, WorkerError> {
        let llm = &self.context.settings.llm;
        let ceiling = llm.retry_base_delay_ms.saturating_mul(1 << upstream_attempt.saturating_sub(1).min(20));
        let jittered =
            Duration::from_millis(rand::rng().random_range(0..=ceiling.min(llm.retry_max_delay_ms)));
        let delay =
            jittered.max(retry_after.unwrap_or_default().min(Duration::from_millis(llm.retry_max_delay_ms)));
        tokio::select! {
            _ = self.stop.cancelled() => Err(WorkerError::Stopped),
            _ = self.cancel.cancelled() => Ok(false),
            _ = tokio::time::sleep(delay) => Ok(true),
        }
    }

    /// Calls upstream once and relays the answer: each piece of text is written as soon as no write of this
    /// job is in flight; pieces arriving meanwhile join the next write. The text no write took yet is left in
    /// `commit` for the ending.
    async fn stream_one_answer(&mut self) -> Result<AnswerOutcome, WorkerError> {
        let llm = &self.context.settings.llm;
        let first_token_timeout = Duration::from_millis(llm.first_token_timeout_ms);
        let gap_timeout = Duration::from_millis(llm.token_gap_timeout_ms);
        if !self.start_recorded {
            self.start_recorded = true;
            let own_time = self.claimed_at.elapsed().saturating_sub(self.waited_not_overhead);
            self.context.metrics.record_start_latency(own_time);
        }
        let call_started = Instant::now();
        let opened = tokio::select! {
            _ = self.stop.cancelled() => return Err(WorkerError::Stopped),
            _ = self.cancel.cancelled() => {
                return Ok(AnswerOutcome::Cancelled { reason: self.registration.reason(), pieces: 0 });
            }
            opened = tokio::time::timeout(first_token_timeout, self.context.provider.stream_completion(self.envelope)) => opened,
        };
        let mut upstream = match opened {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(error)) => return Ok(AnswerOutcome::Failed { error, text_started: false, pieces: 0 }),
            Err(_) => {
                let error = ProviderError::Timeout("no first token in time");
                return Ok(AnswerOutcome::Failed { error, text_started: false, pieces: 0 });
            }
        };
        let mut commit = GroupCommit::new(self.context.settings.worker.batch_max_tokens);
        let mut last_event_at = call_started;
        let mut text_started = false;
        let mut pieces = 0u64;
        let mut finish_reason = None;
        let mut reported_usage = None;
        // Made once per answer, not once per token: each `cancelled()` future registers a waiter, and each new
        // timer is an insertion into the timer wheel.
        let (stop, cancel) = (self.stop, self.cancel.clone());
        let stopped = stop.cancelled();
        let cancelled = cancel.cancelled();
        // The silence timer is armed for the deadline of the last event seen when it was set, and re-armed
        // only when it fires early (events came meanwhile): once per silence period rather than once per token.
        let silence = tokio::time::sleep_until(call_started + first_token_timeout);
        tokio::pin!(stopped, cancelled, silence);
        let answer = loop {
            tokio::select! {
                biased;
                _ = &mut stopped => return Err(WorkerError::Stopped),
                _ = &mut cancelled => {
                    break AnswerOutcome::Cancelled { reason: self.registration.reason(), pieces };
                }
                written = async { self.write_in_flight.as_mut().expect("polled only while a write is in flight").await },
                    if self.write_in_flight.is_some() =>
                {
                    self.write_in_flight = None;
                    written?;
                    if let Some(batch) = commit.write_returned() {
                        self.start_write(batch);
                    }
                }
                _ = &mut silence => {
                    let silence_limit =
                        if text_started { last_event_at + gap_timeout } else { call_started + first_token_timeout };
                    if Instant::now() < silence_limit {
                        silence.as_mut().reset(silence_limit);
                        continue;
                    }
                    let error = ProviderError::Timeout(if text_started { "the answer stalled" } else { "no first token in time" });
                    break AnswerOutcome::Failed { error, text_started, pieces };
                }
                next = upstream.next(), if commit.accepts_more() => {
                    last_event_at = Instant::now();
                    match next {
                        Some(Ok(ProviderEvent::Text(text))) => {
                            if !text_started {
                                text_started = true;
                                // From the first token on, the limit is the gap between tokens.
                                silence.as_mut().reset(last_event_at + gap_timeout);
                            }
                            pieces += 1;
                            if let Some(batch) = commit.push(&text) {
                                self.start_write(batch);
                            }
                        }
                        Some(Ok(ProviderEvent::Finished { finish_reason: reason })) => finish_reason = Some(reason),
                        Some(Ok(ProviderEvent::Usage(usage))) => reported_usage = Some(usage),
                        Some(Err(error)) => break AnswerOutcome::Failed { error, text_started, pieces },
                        None => {
                            let usage = reported_usage.unwrap_or_else(|| self.estimated_usage(pieces));
                            let finish_reason = finish_reason.take().unwrap_or_else(|| "stop".to_owned());
                            break AnswerOutcome::Completed { usage, finish_reason };
                        }
                    }
                }
            }
        };
        // Dropping the upstream stream closes the connection, which stops generation (and its cost) at once.
        drop(upstream);
        self.wait_for_write_in_flight().await?;
        // Text the last write did not take goes out with the ending; a cancelled answer's rest is not needed.
        if let Some(rest) = commit.take_rest().filter(|_| !matches!(answer, AnswerOutcome::Cancelled { .. }))
        {
            let token = self.writer.token(rest);
            self.start_write_of(vec![token]);
            self.wait_for_write_in_flight().await?;
        }
        Ok(answer)
    }

    /// Numbers `batch` as the next token event and starts writing it.
    fn start_write(&mut self, batch: String) {
        let token = self.writer.token(batch);
        self.start_write_of(vec![token]);
    }

    fn start_write_of(&mut self, events: Vec<StreamEvent>) {
        self.write_in_flight = Some(Box::pin(self.writer.append(events)));
    }

    async fn wait_for_write_in_flight(&mut self) -> Result<(), WorkerError> {
        match self.write_in_flight.take() {
            Some(write) => write.await,
            None => Ok(()),
        }
    }

    /// Ends the job with its terminal event, once any write in flight has landed.
    async fn finish(&mut self, terminal: StreamEvent, ending: JobEnding<'_>) -> Result<(), WorkerError> {
        self.wait_for_write_in_flight().await?;
        self.writer.finish(&[terminal], ending).await
    }

    async fn end_expired(&mut self) -> Result<JobOutcome, WorkerError> {
        let expired =
            self.writer.error("expired", "the chat waited longer than its deadline and was not started");
        self.finish(expired, JobEnding { status: JobStatus::Expired, tokens_used: 0, dead_letter: None })
            .await?;
        Ok(JobOutcome::Expired)
    }

    async fn end_cancelled(&mut self, reason: &str, pieces: u64) -> Result<JobOutcome, WorkerError> {
        let cancelled = self.writer.error("cancelled", reason);
        let tokens_used = if pieces > 0 { self.estimated_usage(pieces).total_tokens } else { 0 };
        let ending = JobEnding { status: JobStatus::Cancelled, tokens_used, dead_letter: None };
        self.finish(cancelled, ending).await?;
        metrics::counter!("dam_worker_cancellations_total").increment(1);
        Ok(JobOutcome::Cancelled)
    }

    async fn end_failed(
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

    /// A job that waited longer than the grace period may have lost its client meanwhile: it is not started
    /// before somebody is known to listen. One sample now; when it finds nobody, the job waits for the worker's
    /// abandonment check, which judges over several samples (see `abandonment`): a listener heard (a client that
    /// reconnected) starts it, a confirmed silence cancels it before it reaches the LLM. Without evidence (Redis
    /// not answering) it starts after a bounded wait: a chat is never dropped on a guess.
    async fn wait_for_a_listener_after_a_long_wait(&mut self) -> Result<(), WorkerError> {
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

    fn estimated_usage(&self, completion_pieces: u64) -> Usage {
        estimated_usage(self.envelope, completion_pieces)
    }
}

/// Usage when the provider reported none: each streamed piece counts as one token, the prompt as admission
/// estimated it (`protocol::token_estimate`), so a reservation and its settlement agree.
fn estimated_usage(envelope: &JobEnvelope, completion_pieces: u64) -> Usage {
    let prompt_tokens = protocol::token_estimate::estimated_prompt_tokens(&envelope.messages);
    Usage {
        prompt_tokens,
        completion_tokens: completion_pieces,
        total_tokens: prompt_tokens + completion_pieces,
    }
}

/// Removes a job that needs no work from the processing list.
pub async fn remove_from_processing(context: &JobContext, raw_envelope: &str) -> Result<(), WorkerError> {
    let processing = context.keys.worker_processing_list(&context.worker_id);
    context
        .redis
        .run(|mut connection| async move {
            redis::cmd("LREM")
                .arg(&processing)
                .arg(1)
                .arg(raw_envelope)
                .query_async::<()>(&mut connection)
                .await
        })
        .await?;
    Ok(())
}
