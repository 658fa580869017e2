//! One claimed job on its own task: decodes its envelope (an undecodable one goes to the dead-letter list), opens
//! its `chat.run` span in the chat's trace, runs the attempt (`job_runner`), and accounts for how it ended: metrics,
//! the slow-path log line, or the hand-back of an attempt that lost Redis or its ownership.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use protocol::dead_letter::{DeadLetter, DeadLetterCaps};
use protocol::job_lifecycle::{ClaimedJob, dead_letter_job};
use protocol::telemetry::trace_context::{continue_trace, hashed_identity, record_queue_wait_span};
use protocol::{JobEnvelope, unix_time_ms};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::WorkerError;
use crate::hand_back::{hand_back_lost_attempt, until_it_lands};
use crate::job_runner::{AttemptReport, JobContext, JobOutcome, run_claimed_job};
use crate::slow_path::{SlowPathReasons, log_slow_path};
use crate::upstream_permits::PermitLineSeat;

/// Runs one claimed job on its task, from decoding its envelope to accounting for how the attempt ended.
pub async fn run_one_job(
    context: &JobContext,
    claimed: ClaimedJob,
    stop: &CancellationToken,
    seat: PermitLineSeat,
) {
    // The claim's reply has just arrived: this task is spawned for it at once.
    let (claimed_at, claimed_at_ms) = (tokio::time::Instant::now(), unix_time_ms());
    let envelope = match JobEnvelope::decode(&claimed.raw_envelope) {
        Ok(envelope) => envelope,
        Err(error) => {
            dead_letter_undecodable(context, claimed, error.to_string(), stop).await;
            return;
        }
    };
    let run_span = job_run_span(context, &envelope);
    // Measured by this worker's clock against the gateway's: hosts keep their clocks in step (NTP).
    let queue_wait = Duration::from_millis(claimed_at_ms.saturating_sub(envelope.created_at_ms));
    // A later attempt's wait since creation includes the earlier attempts: it is not a queue wait.
    if envelope.attempt <= 1 {
        context.metrics.record_queue_wait(envelope.lane, queue_wait);
    }
    context.metrics.jobs_running.increment(1.0);
    let mut report = AttemptReport::default();
    let outcome =
        run_claimed_job(context, &envelope, &claimed.raw_envelope, stop, seat, claimed_at, &mut report)
            .instrument(run_span)
            .await;
    context.metrics.jobs_running.decrement(1.0);
    match outcome {
        Ok(outcome) => {
            metrics::counter!("dam_worker_jobs_total", "outcome" => outcome.as_str()).increment(1);
            tracing::debug!(job_id = %envelope.id, outcome = outcome.as_str(), "job ended");
            // A job that ended here (a skipped one had ended before) gets its one slow-path line.
            if outcome != JobOutcome::Skipped {
                let dead_lettered = outcome == JobOutcome::Failed;
                let reasons = SlowPathReasons::of_attempt(
                    &envelope,
                    queue_wait,
                    report.upstream_retries,
                    dead_lettered,
                );
                log_slow_path(envelope.id, envelope.lane, outcome.as_str(), &reasons);
            }
        }
        // The stopping worker puts its whole processing list back once its jobs returned.
        Err(WorkerError::Stopped) => {
            metrics::counter!("dam_worker_jobs_total", "outcome" => "stopped").increment(1);
        }
        Err(error) => {
            // Lost Redis (a start, a write or the ending did not land) or ownership (another attempt has the
            // job): the job is handed back, and `recover_job` decides by its state whether it is requeued (the
            // next start appends a `reset`), released (it ended, or runs elsewhere) or ended.
            metrics::counter!("dam_worker_jobs_total", "outcome" => "handed_back").increment(1);
            tracing::warn!(job_id = %envelope.id, %error, "job attempt lost; handing the job back");
            hand_back_lost_attempt(context, &claimed.raw_envelope, stop).await;
        }
    }
}

/// The span of one attempt at a job, `chat.run`, in the chat's trace (a child of its admission). A first attempt
/// also records its wait in the lane, `chat.queue_wait`, ending now.
fn job_run_span(context: &JobContext, envelope: &JobEnvelope) -> tracing::Span {
    let identity_hash = hashed_identity(&envelope.identity);
    if envelope.attempt <= 1 && envelope.recoveries == 0 {
        let attributes = vec![
            KeyValue::new("job_id", envelope.id.to_string()),
            KeyValue::new("lane", envelope.lane.as_str()),
            KeyValue::new("identity_hash", identity_hash.clone()),
        ];
        record_queue_wait_span(
            &envelope.trace_context,
            envelope.created_at_ms,
            SystemTime::now(),
            attributes,
        );
    }
    let span = tracing::info_span!(
        "chat.run",
        job_id = %envelope.id,
        lane = envelope.lane.as_str(),
        identity_hash = %identity_hash,
        attempt = envelope.attempt,
        worker_id = %context.worker_id,
    );
    continue_trace(&span, &envelope.trace_context);
    span
}

async fn dead_letter_undecodable(
    context: &JobContext,
    claimed: ClaimedJob,
    error: String,
    stop: &CancellationToken,
) {
    tracing::error!(%error, "undecodable job envelope sent to the dead-letter list");
    let dead_letter = DeadLetter {
        job_id: None,
        reason: "undecodable_envelope".to_owned(),
        last_error: error,
        attempts: 0,
        worker_id: context.worker_id.to_string(),
        dead_at_ms: unix_time_ms(),
        raw_envelope: claimed.raw_envelope,
    };
    let (keys, caps, dead_letter) =
        (&context.keys, DeadLetterCaps::from_settings(&context.settings), &dead_letter);
    let moved = until_it_lands(stop, "dead-letter an undecodable envelope", || {
        context.redis.run(|mut connection| async move {
            dead_letter_job(&mut connection, keys, dead_letter, caps).await
        })
    })
    .await;
    if moved.is_some() {
        metrics::counter!("dam_worker_jobs_total", "outcome" => "dead_lettered").increment(1);
    }
}
