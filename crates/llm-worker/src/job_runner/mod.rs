//! Runs one claimed job from start to end: takes ownership (the fence), refuses it if it expired or was
//! abandoned, waits for an upstream permit, streams the answer to the replay log and channel, retries what is safe
//! to retry, and ends the job with `done`, or with an `error` the client sees (and a dead-letter record when it
//! failed for good). This file starts the job; each later step has its own file below it. Permits live in
//! `upstream_permits`, the fenced writes in `stream_writer`, the batching of text in `group_commit`.

mod answer_stream;
mod job_endings;
mod listener_wait;
mod running_job;
mod upstream_retry;

use std::sync::Arc;
use std::time::Duration;

use protocol::job_lifecycle::{JobFence, JobStart, start_job, start_job_with_permit_request};
use protocol::upstream_capacity::{CallOutcome, PermitDecision};
use protocol::{JobEnvelope, RedisConnections, RedisKeys, Settings, Usage, unix_time_ms};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel_listener::{CANCELLED_BY_CLIENT, CancelRegistration, CancelRegistry, ListenedChannel};
use crate::error::WorkerError;
use crate::provider::openai::OpenAiProvider;
use crate::reaper::Reaper;
use crate::stream_writer::StreamWriter;
use crate::upstream_permits::{PermitLine, PermitLineSeat, permit_request, settle_upstream_permit};
use crate::worker_metrics::WorkerMetrics;
use running_job::RunningJob;

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
    // Registered before the start, so a cancellation sent once the job runs here always finds it.
    let registration = register_for_cancellation(context, envelope);
    let reserve_tokens = estimated_usage(envelope, u64::from(envelope.parameters.max_tokens)).total_tokens;
    let (start, early_permit) = start_with_early_permit(context, envelope, reserve_tokens).await?;
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
        upstream_backoff: upstream_retry::upstream_backoff(&context.settings),
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

/// Registers the job's cancellation token, with its event channel unless nobody attends it (an operator's
/// replay is never cancelled for want of listeners). Its client was there when it asked for the chat: the grace
/// for a silent channel counts from then.
fn register_for_cancellation(context: &JobContext, envelope: &JobEnvelope) -> CancelRegistration {
    let waited = Duration::from_millis(unix_time_ms().saturating_sub(envelope.created_at_ms));
    let listened_channel = (!envelope.unattended).then(|| ListenedChannel {
        channel: context.keys.job_event_channel(&envelope.id),
        last_heard: Instant::now().checked_sub(waited).unwrap_or_else(Instant::now),
    });
    context.cancels.register(envelope.id, listened_channel)
}

/// Takes ownership of the job. The fast path asks for the upstream permit in the same round trip (a job already
/// late will not call upstream, so it does not ask).
async fn start_with_early_permit(
    context: &JobContext,
    envelope: &JobEnvelope,
    reserve_tokens: u64,
) -> Result<(JobStart, Option<PermitDecision>), WorkerError> {
    let (job_id, worker_id, keys) = (envelope.id, &context.worker_id, &context.keys);
    let new_log_ttl_s = context.settings.job_state_ttl_s();
    let permit = (unix_time_ms() <= envelope.deadline_ms).then(|| permit_request(context, reserve_tokens));
    let started = context
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
    Ok(started)
}

/// Settles a permit that was granted but never used, so its tokens count no longer.
async fn give_back_unused_permit(context: &JobContext, permit: Option<PermitDecision>) {
    if let Some(PermitDecision::Granted(permit)) = permit {
        settle_upstream_permit(context, &permit, 0, CallOutcome::Neutral).await;
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
