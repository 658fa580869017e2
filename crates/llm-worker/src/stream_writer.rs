//! Numbers one attempt's stream events (`seq` = place in the replay log) and writes them: batches through
//! `append_stream_events` (fenced by the log length they must produce, no read), the ending through `finish_job`
//! (fenced by owner, done once). A write whose reply does not come is tried again: both scripts recognise a
//! write that already landed, so a retry never duplicates an event or an ending.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use protocol::dead_letter::DeadLetterCaps;
use protocol::job_lifecycle::{
    AppendOutcome, FinishOutcome, JobEnding, JobFence, JobStreamKeys, append_stream_events, finish_job,
};
use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};
use protocol::{StreamEvent, Usage, unix_time_ms};

use crate::error::WorkerError;
use crate::job_runner::JobContext;

/// Tries of one stream write before the attempt gives up and hands the job back (see `worker_loop`).
const STREAM_WRITE_TRIES: u32 = 3;
/// Pauses between the tries of one stream write: at most 50 ms before the second, 100 ms before the third, and
/// at least half of that, so the workers whose writes failed together (a Redis stall) do not try again together.
const STREAM_WRITE_RETRY: RetryPolicy =
    RetryPolicy::doubling(Duration::from_millis(50), Duration::from_millis(100), Jitter::Equal);

/// One attempt's writer: the fence, the next seq, and whether the log still needs its TTL.
#[derive(Debug)]
pub struct StreamWriter<'a> {
    context: &'a JobContext,
    pub fence: JobFence<'a>,
    stream_keys: Arc<JobStreamKeys>,
    next_seq: u64,
    /// The TTL the replay log gets with this attempt's first write, when start found no log (0 otherwise).
    new_log_ttl_s: u64,
}

impl<'a> StreamWriter<'a> {
    /// A writer whose first event follows the `replay_log_length` events start found (or appended).
    pub fn new(context: &'a JobContext, fence: JobFence<'a>, replay_log_length: u64) -> Self {
        let new_log_ttl_s =
            if replay_log_length == 0 { context.settings.job_state_ttl_s().max(1) } else { 0 };
        Self {
            context,
            fence,
            stream_keys: Arc::new(JobStreamKeys::new(&context.keys, fence.job_id)),
            next_seq: replay_log_length + 1,
            new_log_ttl_s,
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub fn token(&mut self, text: String) -> StreamEvent {
        StreamEvent::Token { seq: self.take_seq(), text }
    }

    pub fn done(&mut self, usage: Usage, finish_reason: String) -> StreamEvent {
        StreamEvent::Done { seq: self.take_seq(), usage, finish_reason }
    }

    pub fn error(&mut self, code: &str, message: &str) -> StreamEvent {
        StreamEvent::Error { seq: self.take_seq(), code: code.to_owned(), message: message.to_owned() }
    }

    /// The write of a batch of events just numbered by this writer, as a future that borrows nothing of the
    /// writer: the job keeps reading its upstream (and numbering) while it runs. Writes must run one at a time,
    /// in seq order.
    pub fn append(
        &mut self,
        events: Vec<StreamEvent>,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send + use<'a> {
        let context = self.context;
        let stream_keys = self.stream_keys.clone();
        let new_log_ttl_s = std::mem::take(&mut self.new_log_ttl_s);
        async move {
            let mut tries = 0;
            let mut backoff = RetryBackoff::new(STREAM_WRITE_RETRY);
            loop {
                tries += 1;
                let (stream_keys, events) = (&stream_keys, &events);
                let write_started = std::time::Instant::now();
                let outcome = context
                    .redis
                    .run(|mut connection| async move {
                        append_stream_events(&mut connection, stream_keys, events, new_log_ttl_s).await
                    })
                    .await;
                match outcome {
                    Ok(AppendOutcome::Appended { .. }) => {
                        context.metrics.record_write_latency(write_started.elapsed());
                        context.metrics.stream_batches_written.increment(1);
                        return Ok(());
                    }
                    Ok(AppendOutcome::Fenced) => return Err(WorkerError::Fenced),
                    Err(error) if tries >= STREAM_WRITE_TRIES => return Err(error.into()),
                    Err(error) => {
                        tracing::warn!(%error, tries, "stream write failed; trying again");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    }

    /// Writes the job's last `events` (numbered by this writer) and ends it with `ending`. Call only once no
    /// append is in flight. Ok also when the job had already ended with this very ending (a lost reply).
    pub async fn finish(&mut self, events: &[StreamEvent], ending: JobEnding<'_>) -> Result<(), WorkerError> {
        let replay_log_length_after = self.next_seq - 1;
        let new_log_ttl_s = std::mem::take(&mut self.new_log_ttl_s);
        let replay_ttl_s = self.context.settings.chat.replay_ttl_s;
        let dead_letter_caps = DeadLetterCaps::from_settings(&self.context.settings);
        let mut tries = 0;
        let mut backoff = RetryBackoff::new(STREAM_WRITE_RETRY);
        loop {
            tries += 1;
            let (keys, fence) = (&self.context.keys, self.fence);
            let write_started = std::time::Instant::now();
            let outcome = self
                .context
                .redis
                .run(|mut connection| async move {
                    finish_job(
                        &mut connection,
                        keys,
                        fence,
                        events,
                        ending,
                        replay_log_length_after,
                        new_log_ttl_s,
                        replay_ttl_s,
                        unix_time_ms(),
                        dead_letter_caps,
                    )
                    .await
                })
                .await;
            match outcome {
                Ok(FinishOutcome::Finished { .. }) => {
                    self.context.metrics.record_write_latency(write_started.elapsed());
                    return Ok(());
                }
                Ok(FinishOutcome::AlreadyFinished) if tries > 1 => return Ok(()),
                Ok(FinishOutcome::AlreadyFinished) | Ok(FinishOutcome::Fenced) => {
                    return Err(WorkerError::Fenced);
                }
                Err(error) if tries >= STREAM_WRITE_TRIES => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(%error, tries, "final stream write failed; trying again");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}
