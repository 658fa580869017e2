//! Runs one claimed job from start to end: takes ownership (the fence), refuses it if it expired or was
//! abandoned, waits for upstream capacity (global rate, token budget, circuit breaker), streams the answer in
//! batches to the replay log and channel, retries what is safe to retry, and ends the job with `done`, or with
//! an `error` the client sees (and a dead-letter record when it failed for good). Every write is fenced, so an
//! attempt that lost its job stops instead of mixing its text into another's.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use protocol::dead_letter::DeadLetter;
use protocol::job_lifecycle::{
    JobEnding, JobFence, JobStart, PublishOutcome, publish_stream_events, start_job,
};
use protocol::upstream_capacity::{
    CallOutcome, PermitDecision, UpstreamPermit, UpstreamPolicy, acquire_upstream_permit,
    settle_upstream_call,
};
use protocol::{
    JobEnvelope, JobStatus, RedisConnections, RedisKeys, Settings, StreamEvent, Usage, unix_time_ms,
};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel_listener::{ABANDONED, CancelRegistration, CancelRegistry};
use crate::error::WorkerError;
use crate::provider::openai::OpenAiProvider;
use crate::provider::{ProviderError, ProviderEvent};
use crate::token_batcher::TokenBatcher;

/// Attempts at one stream write before the attempt gives up and leaves the job for recovery.
const STREAM_WRITE_ATTEMPTS: u32 = 3;
/// Longest single pause while waiting for upstream capacity, so shutdown and deadlines are noticed.
const LONGEST_CAPACITY_PAUSE: Duration = Duration::from_millis(1_000);

/// What every job of this worker shares.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub redis: RedisConnections,
    pub keys: RedisKeys,
    pub settings: Arc<Settings>,
    pub worker_id: Arc<str>,
    pub provider: OpenAiProvider,
    /// The limits in force, kept current from Redis.
    pub limits: tokio::sync::watch::Receiver<Arc<protocol::limits::Limits>>,
    pub cancels: CancelRegistry,
    /// Jobs of this worker ask for upstream permits one at a time, in arrival order: without this queue every
    /// waiting job would ask Redis again each time a place frees, a storm that grows with the backlog.
    pub permit_queue: Arc<tokio::sync::Mutex<()>>,
}

impl JobContext {
    fn upstream_policy(&self) -> UpstreamPolicy {
        let llm = &self.settings.llm;
        UpstreamPolicy {
            window_s: llm.circuit_window_s,
            min_calls: llm.circuit_min_calls,
            failure_ratio: llm.circuit_failure_ratio,
            cool_down_ms: llm.circuit_cool_down_ms,
            probes: llm.circuit_probes,
            probe_timeout_ms: llm.first_token_timeout_ms + 1_000,
            start_margin_ms: llm.start_window_margin_ms,
        }
    }
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

/// Runs `envelope` (claimed as `raw_envelope`) to its end, or until `stop` is cancelled (then the job stays in
/// the processing list, to be put back).
pub async fn run_claimed_job(
    context: &JobContext,
    envelope: &JobEnvelope,
    raw_envelope: &str,
    stop: &CancellationToken,
) -> Result<JobOutcome, WorkerError> {
    let (job_id, worker_id, attempt) = (envelope.id, context.worker_id.clone(), envelope.attempt);
    let keys = context.keys.clone();
    let start = context
        .redis
        .run(|mut connection| async move {
            start_job(&mut connection, &keys, &job_id, &worker_id, attempt, unix_time_ms()).await
        })
        .await?;
    let replay_log_length = match start {
        JobStart::Started { replay_log_length } => replay_log_length,
        JobStart::AlreadyFinal { .. } | JobStart::Missing => {
            remove_from_processing(context, raw_envelope).await?;
            return Ok(JobOutcome::Skipped);
        }
    };
    // An unattended job (an operator's replay) is never cancelled for want of listeners.
    let listened_channel = (!envelope.unattended).then(|| context.keys.job_event_channel(&envelope.id));
    let registration = context.cancels.register(envelope.id, listened_channel);
    let mut job = RunningJob {
        context,
        envelope,
        stop,
        cancel: registration.token.clone(),
        registration: &registration,
        writer: StreamWriter {
            context,
            fence: JobFence {
                job_id: &envelope.id,
                identity: &envelope.identity,
                worker_id: &context.worker_id,
                attempt,
                raw_envelope,
            },
            next_seq: replay_log_length + 1,
        },
        pending: Vec::new(),
    };
    let outcome = job.run(replay_log_length).await;
    match outcome {
        Err(WorkerError::CancelRequested) => job.end_cancelled(registration.reason(), 0).await,
        other => other,
    }
}

/// One job in progress: its stream writer, the events not yet written, and what can interrupt it.
struct RunningJob<'a> {
    context: &'a JobContext,
    envelope: &'a JobEnvelope,
    stop: &'a CancellationToken,
    cancel: CancellationToken,
    registration: &'a CancelRegistration,
    writer: StreamWriter<'a>,
    pending: Vec<StreamEvent>,
}

impl RunningJob<'_> {
    async fn run(&mut self, replay_log_length: u64) -> Result<JobOutcome, WorkerError> {
        if unix_time_ms() > self.envelope.deadline_ms {
            return self.end_expired().await;
        }
        if self.abandoned_before_start().await {
            return self.end_cancelled(ABANDONED, 0).await;
        }
        // Events of an earlier attempt are already in the log: tell clients to discard them.
        if replay_log_length > 0 {
            let reset = self.writer.reset();
            self.pending.push(reset);
        }
        let max_attempts = self.context.settings.llm.max_attempts.max(1);
        for upstream_attempt in 1..=max_attempts {
            let Some(permit) = self.wait_for_permit().await? else {
                return self.end_expired().await;
            };
            let answer = self.stream_one_answer().await;
            let (tokens_used, call_outcome) = match &answer {
                Ok(AnswerOutcome::Completed { usage, .. }) => (usage.total_tokens, CallOutcome::Ok),
                Ok(AnswerOutcome::Failed { error, pieces, .. }) => (
                    self.estimated_usage(*pieces).total_tokens,
                    if error.is_upstream_fault() { CallOutcome::Failed } else { CallOutcome::Neutral },
                ),
                Ok(AnswerOutcome::Cancelled { pieces, .. }) => {
                    (self.estimated_usage(*pieces).total_tokens, CallOutcome::Neutral)
                }
                Err(_) => (permit.reserved_tokens, CallOutcome::Neutral),
            };
            self.settle(&permit, tokens_used, call_outcome).await;
            match answer? {
                AnswerOutcome::Completed { usage, finish_reason } => {
                    let done = self.writer.done(usage, finish_reason);
                    self.pending.push(done);
                    let ending = JobEnding {
                        status: JobStatus::Done,
                        tokens_used: usage.total_tokens,
                        dead_letter: None,
                    };
                    self.write_final(ending).await?;
                    metrics::counter!("dam_worker_tokens_total").increment(usage.total_tokens);
                    return Ok(JobOutcome::Completed);
                }
                AnswerOutcome::Cancelled { reason, pieces } => {
                    return self.end_cancelled(reason, pieces).await;
                }
                AnswerOutcome::Failed { error, text_started: false, .. }
                    if error.is_retryable() && upstream_attempt < max_attempts =>
                {
                    tracing::info!(job_id = %self.envelope.id, %error, upstream_attempt, "upstream failed; retrying");
                    metrics::counter!("dam_worker_upstream_retries_total").increment(1);
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

    /// Waits until the shared upstream capacity lets this job call. `None` when the job's deadline passed first.
    async fn wait_for_permit(&mut self) -> Result<Option<UpstreamPermit>, WorkerError> {
        let reserve = self.estimated_usage(u64::from(self.envelope.parameters.max_tokens)).total_tokens;
        let circuit = self.context.upstream_policy();
        let deadline_in = Duration::from_millis(self.envelope.deadline_ms.saturating_sub(unix_time_ms()));
        let _turn = tokio::select! {
            _ = self.stop.cancelled() => return Err(WorkerError::Stopped),
            _ = self.cancel.cancelled() => return Err(WorkerError::CancelRequested),
            _ = tokio::time::sleep(deadline_in) => return Ok(None),
            turn = self.context.permit_queue.lock() => turn,
        };
        loop {
            if unix_time_ms() > self.envelope.deadline_ms {
                return Ok(None);
            }
            let limits = self.context.limits.borrow().llm;
            let keys = self.context.keys.clone();
            let permit_id = format!("{}:{}", self.envelope.id, uuid::Uuid::new_v4().simple());
            let decision = self
                .context
                .redis
                .run(|mut connection| async move {
                    acquire_upstream_permit(&mut connection, &keys, &permit_id, &limits, &circuit, reserve)
                        .await
                })
                .await;
            let pause = match decision {
                Ok(PermitDecision::Granted(permit)) => return Ok(Some(permit)),
                Ok(PermitDecision::Wait { ms }) => {
                    metrics::counter!("dam_worker_capacity_waits_total", "reason" => "rate").increment(1);
                    Duration::from_millis(ms)
                }
                Ok(PermitDecision::CircuitOpen { ms }) => {
                    metrics::counter!("dam_worker_capacity_waits_total", "reason" => "circuit_open")
                        .increment(1);
                    Duration::from_millis(ms)
                }
                Err(error) => {
                    tracing::warn!(%error, "could not ask for upstream capacity");
                    Duration::from_millis(500)
                }
            };
            // A little jitter keeps waiting workers from asking again all at the same instant.
            let pause =
                pause.min(LONGEST_CAPACITY_PAUSE) + Duration::from_millis(rand::rng().random_range(0..20));
            tokio::select! {
                _ = self.stop.cancelled() => return Err(WorkerError::Stopped),
                _ = self.cancel.cancelled() => return Err(WorkerError::CancelRequested),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn settle(&self, permit: &UpstreamPermit, tokens_used: u64, outcome: CallOutcome) {
        let keys = self.context.keys.clone();
        let circuit = self.context.upstream_policy();
        let settled = self
            .context
            .redis
            .run(|mut connection| async move {
                settle_upstream_call(
                    &mut connection,
                    &keys,
                    permit,
                    tokens_used,
                    outcome,
                    &circuit,
                    unix_time_ms(),
                )
                .await
            })
            .await;
        match settled {
            Ok(state) if state == "open" && outcome == CallOutcome::Failed => {
                tracing::warn!("the upstream circuit breaker is open");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not settle an upstream call"),
        }
    }

    /// Sleeps before a retry: exponential backoff with full jitter, at least what the upstream asked for.
    /// Returns false when the job was cancelled meanwhile.
    async fn back_off(
        &self,
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

    /// Calls upstream once and relays the answer in batches.
    async fn stream_one_answer(&mut self) -> Result<AnswerOutcome, WorkerError> {
        let llm = &self.context.settings.llm;
        let first_token_timeout = Duration::from_millis(llm.first_token_timeout_ms);
        let gap_timeout = Duration::from_millis(llm.token_gap_timeout_ms);
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
        let worker_settings = &self.context.settings.worker;
        let mut batcher = TokenBatcher::new(
            worker_settings.batch_max_tokens,
            Duration::from_millis(worker_settings.batch_max_delay_ms),
        );
        let mut last_event_at = call_started;
        let mut text_started = false;
        let mut pieces = 0u64;
        let mut finish_reason = None;
        let mut reported_usage = None;
        loop {
            let silence_limit =
                if text_started { last_event_at + gap_timeout } else { call_started + first_token_timeout };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Err(WorkerError::Stopped),
                _ = self.cancel.cancelled() => {
                    return Ok(AnswerOutcome::Cancelled { reason: self.registration.reason(), pieces });
                }
                _ = sleep_until_or_forever(batcher.flush_deadline()) => {
                    if let Some(text) = batcher.take() {
                        let token = self.writer.token(text);
                        self.pending.push(token);
                    }
                    self.write_pending().await?;
                }
                _ = tokio::time::sleep_until(silence_limit) => {
                    let error = ProviderError::Timeout(if text_started { "the answer stalled" } else { "no first token in time" });
                    self.flush_batch(&mut batcher);
                    return Ok(AnswerOutcome::Failed { error, text_started, pieces });
                }
                next = upstream.next() => {
                    last_event_at = Instant::now();
                    match next {
                        Some(Ok(ProviderEvent::Text(text))) => {
                            text_started = true;
                            pieces += 1;
                            if batcher.push(&text, last_event_at) {
                                self.flush_batch(&mut batcher);
                                self.write_pending().await?;
                            }
                        }
                        Some(Ok(ProviderEvent::Finished { finish_reason: reason })) => finish_reason = Some(reason),
                        Some(Ok(ProviderEvent::Usage(usage))) => reported_usage = Some(usage),
                        Some(Err(error)) => {
                            self.flush_batch(&mut batcher);
                            return Ok(AnswerOutcome::Failed { error, text_started, pieces });
                        }
                        None => break,
                    }
                }
            }
        }
        self.flush_batch(&mut batcher);
        let usage = reported_usage.unwrap_or_else(|| self.estimated_usage(pieces));
        Ok(AnswerOutcome::Completed {
            usage,
            finish_reason: finish_reason.unwrap_or_else(|| "stop".to_owned()),
        })
    }

    fn flush_batch(&mut self, batcher: &mut TokenBatcher) {
        if let Some(text) = batcher.take() {
            let token = self.writer.token(text);
            self.pending.push(token);
        }
    }

    async fn write_pending(&mut self) -> Result<(), WorkerError> {
        let events = std::mem::take(&mut self.pending);
        self.writer.write(&events, None).await
    }

    async fn write_final(&mut self, ending: JobEnding<'_>) -> Result<(), WorkerError> {
        let events = std::mem::take(&mut self.pending);
        self.writer.write(&events, Some(ending)).await
    }

    async fn end_expired(&mut self) -> Result<JobOutcome, WorkerError> {
        let expired =
            self.writer.error("expired", "the chat waited longer than its deadline and was not started");
        self.pending = vec![expired];
        self.write_final(JobEnding { status: JobStatus::Expired, tokens_used: 0, dead_letter: None }).await?;
        Ok(JobOutcome::Expired)
    }

    async fn end_cancelled(&mut self, reason: &str, pieces: u64) -> Result<JobOutcome, WorkerError> {
        let cancelled = self.writer.error("cancelled", reason);
        self.pending.push(cancelled);
        let tokens_used = if pieces > 0 { self.estimated_usage(pieces).total_tokens } else { 0 };
        self.write_final(JobEnding { status: JobStatus::Cancelled, tokens_used, dead_letter: None }).await?;
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
        self.pending.push(failure);
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
        self.write_final(ending).await?;
        Ok(JobOutcome::Failed)
    }

    /// A job queued longer than the grace period whose client is not listening is not worth starting (while it
    /// runs, the worker's abandonment check watches it).
    async fn abandoned_before_start(&self) -> bool {
        let grace = Duration::from_millis(self.context.settings.worker.abandon_grace_ms);
        let waited = Duration::from_millis(unix_time_ms().saturating_sub(self.envelope.created_at_ms));
        if self.envelope.unattended || waited <= grace {
            return false;
        }
        let channel = self.context.keys.job_event_channel(&self.envelope.id);
        let counted: redis::RedisResult<(String, u64)> = self
            .context
            .redis
            .run(|mut connection| async move {
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut connection).await
            })
            .await;
        matches!(counted, Ok((_, 0)))
    }

    /// Usage when the provider reported none: each streamed piece counts as one token, the prompt as 4 characters
    /// a token (the usual rule of thumb for English text).
    fn estimated_usage(&self, completion_pieces: u64) -> Usage {
        let characters: usize =
            self.envelope.messages.iter().map(|message| message.content.chars().count()).sum();
        let prompt_tokens = characters.div_ceil(4) as u64;
        Usage {
            prompt_tokens,
            completion_tokens: completion_pieces,
            total_tokens: prompt_tokens + completion_pieces,
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Removes a job that needs no work from the processing list.
pub async fn remove_from_processing(context: &JobContext, raw_envelope: &str) -> Result<(), WorkerError> {
    let processing = context.keys.worker_processing_list(&context.worker_id);
    let raw_envelope = raw_envelope.to_owned();
    context
        .redis
        .run(|mut connection| async move {
            redis::cmd("LREM")
                .arg(&processing)
                .arg(1)
                .arg(&raw_envelope)
                .query_async::<()>(&mut connection)
                .await
        })
        .await?;
    Ok(())
}

/// Numbers this attempt's events and writes them under the job's fence.
struct StreamWriter<'a> {
    context: &'a JobContext,
    fence: JobFence<'a>,
    next_seq: u64,
}

impl StreamWriter<'_> {
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn token(&mut self, text: String) -> StreamEvent {
        StreamEvent::Token { seq: self.take_seq(), text }
    }

    fn reset(&mut self) -> StreamEvent {
        StreamEvent::Reset { seq: self.take_seq() }
    }

    fn done(&mut self, usage: Usage, finish_reason: String) -> StreamEvent {
        StreamEvent::Done { seq: self.take_seq(), usage, finish_reason }
    }

    fn error(&mut self, code: &str, message: &str) -> StreamEvent {
        StreamEvent::Error { seq: self.take_seq(), code: code.to_owned(), message: message.to_owned() }
    }

    /// One round trip: append and publish `events`, ending the job when `ending` is given. Retries a failed
    /// write briefly; a fenced write stops the attempt, a cancelled job's non-final write reports the cancel.
    async fn write(
        &mut self,
        events: &[StreamEvent],
        ending: Option<JobEnding<'_>>,
    ) -> Result<(), WorkerError> {
        if events.is_empty() && ending.is_none() {
            return Ok(());
        }
        let replay_ttl_s = self.context.settings.chat.replay_ttl_s;
        let mut write_attempt = 0;
        loop {
            write_attempt += 1;
            let keys = self.context.keys.clone();
            let fence = self.fence;
            let outcome = self
                .context
                .redis
                .run(|mut connection| async move {
                    publish_stream_events(
                        &mut connection,
                        &keys,
                        fence,
                        events,
                        ending,
                        replay_ttl_s,
                        unix_time_ms(),
                    )
                    .await
                })
                .await;
            match outcome {
                Ok(PublishOutcome::Appended { .. }) => {
                    metrics::counter!("dam_worker_stream_batches_written_total").increment(1);
                    return Ok(());
                }
                Ok(PublishOutcome::Fenced) => return Err(WorkerError::Fenced),
                Ok(PublishOutcome::CancelRequested) => {
                    // Nothing was written: the refused events' numbers are free again, so seq stays the log index.
                    if let Some(first_seq) = events.first().and_then(StreamEvent::seq) {
                        self.next_seq = first_seq;
                    }
                    return Err(WorkerError::CancelRequested);
                }
                Err(error) if write_attempt >= STREAM_WRITE_ATTEMPTS => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(%error, write_attempt, "stream write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(write_attempt))).await;
                }
            }
        }
    }
}
