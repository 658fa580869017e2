//! Runs one claimed job from start to end: takes ownership (the fence), refuses it if it expired while queued,
//! streams the upstream answer in batches to the replay log and channel, and ends it with `done` or `error`.
//! Every write is fenced, so an attempt that lost its job stops instead of mixing its text into another's.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use protocol::job_lifecycle::{JobFence, JobStart, PublishOutcome, publish_stream_events, start_job};
use protocol::{
    JobEnvelope, JobStatus, RedisConnections, RedisKeys, Settings, StreamEvent, Usage, unix_time_ms,
};
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::provider::openai::OpenAiProvider;
use crate::provider::{ProviderError, ProviderEvent};
use crate::token_batcher::TokenBatcher;

/// Attempts at one stream write before the attempt gives up and leaves the job for recovery.
const STREAM_WRITE_ATTEMPTS: u32 = 3;

/// What every job of this worker shares.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub redis: RedisConnections,
    pub keys: RedisKeys,
    pub settings: Arc<Settings>,
    pub worker_id: Arc<str>,
    pub provider: OpenAiProvider,
}

/// How a job attempt ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Completed,
    Failed,
    Expired,
    /// Already final or gone when claimed; it was only removed from the processing list.
    Skipped,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Failed => "failed",
            JobOutcome::Expired => "expired",
            JobOutcome::Skipped => "skipped",
        }
    }
}

/// Runs `envelope` (claimed as `raw_envelope`) to its end, or until `stop` is cancelled (then the job stays in
/// the processing list for recovery).
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
    let mut writer = StreamWriter {
        context,
        fence: JobFence { job_id: &envelope.id, worker_id: &context.worker_id, attempt, raw_envelope },
        next_seq: replay_log_length + 1,
    };

    if unix_time_ms() > envelope.deadline_ms {
        let expired = writer.error("expired", "the chat waited longer than its deadline and was not started");
        writer.write(vec![expired], Some(JobStatus::Expired)).await?;
        return Ok(JobOutcome::Expired);
    }
    // Events of an earlier attempt are already in the log: tell clients to discard them.
    let mut pending = Vec::new();
    if replay_log_length > 0 {
        pending.push(writer.reset());
    }

    let upstream = tokio::select! {
        _ = stop.cancelled() => return Err(WorkerError::Stopped),
        upstream = context.provider.stream_completion(envelope) => upstream,
    };
    let mut upstream = match upstream {
        Ok(upstream) => upstream,
        Err(error) => return fail_job(&mut writer, pending, &error).await,
    };

    let worker_settings = &context.settings.worker;
    let mut batcher = TokenBatcher::new(
        worker_settings.batch_max_tokens,
        Duration::from_millis(worker_settings.batch_max_delay_ms),
    );
    let mut finish_reason = None;
    let mut reported_usage = None;
    let mut completion_pieces = 0u64;
    loop {
        let flush_deadline = batcher.flush_deadline();
        let next = tokio::select! {
            _ = stop.cancelled() => return Err(WorkerError::Stopped),
            _ = sleep_until_or_forever(flush_deadline) => {
                if let Some(text) = batcher.take() {
                    pending.push(writer.token(text));
                }
                writer.write(std::mem::take(&mut pending), None).await?;
                continue;
            }
            next = upstream.next() => next,
        };
        match next {
            Some(Ok(ProviderEvent::Text(text))) => {
                completion_pieces += 1;
                if batcher.push(&text, tokio::time::Instant::now()) {
                    let batch = batcher.take().unwrap_or_default();
                    pending.push(writer.token(batch));
                    writer.write(std::mem::take(&mut pending), None).await?;
                }
            }
            Some(Ok(ProviderEvent::Finished { finish_reason: reason })) => finish_reason = Some(reason),
            Some(Ok(ProviderEvent::Usage(usage))) => reported_usage = Some(usage),
            Some(Err(error)) => {
                if let Some(text) = batcher.take() {
                    pending.push(writer.token(text));
                }
                return fail_job(&mut writer, pending, &error).await;
            }
            None => break,
        }
    }
    if let Some(text) = batcher.take() {
        pending.push(writer.token(text));
    }
    let usage = reported_usage.unwrap_or_else(|| estimated_usage(envelope, completion_pieces));
    let done = writer.done(usage, finish_reason.unwrap_or_else(|| "stop".to_owned()));
    pending.push(done);
    writer.write(pending, Some(JobStatus::Done)).await?;
    metrics::counter!("dam_worker_completion_tokens_total").increment(usage.completion_tokens);
    Ok(JobOutcome::Completed)
}

async fn fail_job(
    writer: &mut StreamWriter<'_>,
    mut pending: Vec<StreamEvent>,
    error: &ProviderError,
) -> Result<JobOutcome, WorkerError> {
    tracing::warn!(job_id = %writer.fence.job_id, %error, "upstream failed");
    pending.push(writer.error("upstream_error", &format!("the model provider failed: {error}")));
    writer.write(pending, Some(JobStatus::Failed)).await?;
    Ok(JobOutcome::Failed)
}

/// Usage when the provider reported none: each streamed piece counts as one token, the prompt as 4 characters
/// a token (the usual rule of thumb for English text).
fn estimated_usage(envelope: &JobEnvelope, completion_pieces: u64) -> Usage {
    let prompt_characters: usize =
        envelope.messages.iter().map(|message| message.content.chars().count()).sum();
    let prompt_tokens = prompt_characters.div_ceil(4) as u64;
    Usage {
        prompt_tokens,
        completion_tokens: completion_pieces,
        total_tokens: prompt_tokens + completion_pieces,
    }
}

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
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

    /// One round trip: append and publish `events`, ending the job when `final_status` is given. Retries a
    /// failed write briefly; a fenced write stops the attempt.
    async fn write(
        &mut self,
        events: Vec<StreamEvent>,
        final_status: Option<JobStatus>,
    ) -> Result<(), WorkerError> {
        if events.is_empty() && final_status.is_none() {
            return Ok(());
        }
        let replay_ttl_s = self.context.settings.chat.replay_ttl_s;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let keys = self.context.keys.clone();
            let (fence, events_ref) = (self.fence, &events);
            let outcome = self
                .context
                .redis
                .run(|mut connection| async move {
                    publish_stream_events(
                        &mut connection,
                        &keys,
                        fence,
                        events_ref,
                        final_status,
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
                Err(error) if attempt >= STREAM_WRITE_ATTEMPTS => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(%error, attempt, "stream write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
            }
        }
    }
}
