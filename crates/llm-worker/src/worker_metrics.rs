//! The worker's metric handles (names and labels as in `docs/observability.md`), resolved once at start so the
//! hot path records without looking a series up, and every fixed-label counter registered at zero so dashboards
//! and alerts see a 0 rather than no data. What is measured where stays in the modules that measure it.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use protocol::Lane;
use protocol::job_lifecycle::RecoveryOutcome;

use crate::job_runner::JobOutcome;
use crate::provider::ProviderError;

/// The outcomes of `dam_worker_jobs_total` that are not a [`JobOutcome`]: set where the attempt ended otherwise.
const OTHER_JOB_OUTCOMES: [&str; 3] = ["stopped", "handed_back", "dead_lettered"];

/// How one upstream request ended, as `dam_worker_llm_requests_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmRequestOutcome {
    Ok,
    Error,
    /// The upstream answered 429.
    Throttled,
    /// No first token, or no next token, in time.
    Timeout,
    /// Cut by the worker: the client cancelled, or the worker stopped or lost Redis meanwhile.
    Cancelled,
}

impl LlmRequestOutcome {
    pub const ALL: [LlmRequestOutcome; 5] = [
        LlmRequestOutcome::Ok,
        LlmRequestOutcome::Error,
        LlmRequestOutcome::Throttled,
        LlmRequestOutcome::Timeout,
        LlmRequestOutcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LlmRequestOutcome::Ok => "ok",
            LlmRequestOutcome::Error => "error",
            LlmRequestOutcome::Throttled => "throttled",
            LlmRequestOutcome::Timeout => "timeout",
            LlmRequestOutcome::Cancelled => "cancelled",
        }
    }

    /// The outcome of a request that failed with `error`.
    pub fn of_failure(error: &ProviderError) -> Self {
        match error {
            ProviderError::Status { status: 429, .. } => LlmRequestOutcome::Throttled,
            ProviderError::Timeout(_) => LlmRequestOutcome::Timeout,
            ProviderError::Status { .. } | ProviderError::Transport(_) => LlmRequestOutcome::Error,
        }
    }
}

/// Every handle the worker records into, made once per process (see [`WorkerMetrics::register`]).
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// By lane, in [`Lane::ALL`]'s order.
    queue_wait_by_lane: [Histogram; 2],
    permit_wait: Histogram,
    added_latency_start: Histogram,
    added_latency_write: Histogram,
    /// By outcome, in [`LlmRequestOutcome::ALL`]'s order.
    llm_requests_by_outcome: [Counter; 5],
    llm_tokens_in: Counter,
    llm_tokens_out: Counter,
    pub upstream_retries: Counter,
    pub stream_batches_written: Counter,
    pub jobs_running: Gauge,
}

impl WorkerMetrics {
    /// Resolves every handle in the process's recorder (install it first: `protocol::telemetry::prometheus_handle`)
    /// and registers the fixed-label counter series at zero.
    pub fn register() -> Self {
        for outcome in [
            JobOutcome::Completed,
            JobOutcome::Failed,
            JobOutcome::Expired,
            JobOutcome::Cancelled,
            JobOutcome::Skipped,
        ]
        .map(JobOutcome::as_str)
        .into_iter()
        .chain(OTHER_JOB_OUTCOMES)
        {
            metrics::counter!("dam_worker_jobs_total", "outcome" => outcome).increment(0);
        }
        for outcome in [
            RecoveryOutcome::Requeued,
            RecoveryOutcome::DeadLettered,
            RecoveryOutcome::Cancelled,
            RecoveryOutcome::Released,
            RecoveryOutcome::Dropped,
            RecoveryOutcome::Absent,
        ] {
            metrics::counter!("dam_worker_jobs_recovered_total", "outcome" => outcome.as_str()).increment(0);
        }
        metrics::counter!("dam_dead_letters_dropped_total").increment(0);
        let worker_metrics = Self {
            queue_wait_by_lane: Lane::ALL
                .map(|lane| metrics::histogram!("dam_worker_queue_wait_seconds", "lane" => lane.as_str())),
            permit_wait: metrics::histogram!("dam_worker_permit_wait_seconds"),
            added_latency_start: metrics::histogram!("dam_worker_added_latency_seconds", "stage" => "start"),
            added_latency_write: metrics::histogram!("dam_worker_added_latency_seconds", "stage" => "write"),
            llm_requests_by_outcome: LlmRequestOutcome::ALL.map(
                |outcome| metrics::counter!("dam_worker_llm_requests_total", "outcome" => outcome.as_str()),
            ),
            llm_tokens_in: metrics::counter!("dam_worker_llm_tokens_total", "direction" => "in"),
            llm_tokens_out: metrics::counter!("dam_worker_llm_tokens_total", "direction" => "out"),
            upstream_retries: metrics::counter!("dam_worker_upstream_retries_total"),
            stream_batches_written: metrics::counter!("dam_worker_stream_batches_written_total"),
            jobs_running: metrics::gauge!("dam_worker_jobs_running"),
        };
        for counter in worker_metrics.llm_requests_by_outcome.iter().chain([
            &worker_metrics.llm_tokens_in,
            &worker_metrics.llm_tokens_out,
            &worker_metrics.upstream_retries,
        ]) {
            counter.increment(0);
        }
        worker_metrics.jobs_running.increment(0.0);
        worker_metrics
    }

    /// A first attempt's wait from admission to this worker's claim.
    pub fn record_queue_wait(&self, lane: Lane, waited: Duration) {
        let index = Lane::ALL.iter().position(|known| *known == lane).unwrap_or(0);
        self.queue_wait_by_lane[index].record(waited.as_secs_f64());
    }

    /// A job's wait for an upstream start slot (one per upstream request).
    pub fn record_permit_wait(&self, waited: Duration) {
        self.permit_wait.record(waited.as_secs_f64());
    }

    /// The worker's own time from the claim to the first upstream request, waits excluded.
    pub fn record_start_latency(&self, took: Duration) {
        self.added_latency_start.record(took.as_secs_f64());
    }

    /// One batch's write to Redis, from the call to the reply.
    pub fn record_write_latency(&self, took: Duration) {
        self.added_latency_write.record(took.as_secs_f64());
    }

    pub fn count_llm_request(&self, outcome: LlmRequestOutcome) {
        let index = LlmRequestOutcome::ALL.iter().position(|known| *known == outcome).unwrap_or(0);
        self.llm_requests_by_outcome[index].increment(1);
    }

    /// Tokens the upstream counted for one answer: the prompt in, the completion out.
    pub fn count_llm_tokens(&self, prompt_tokens: u64, completion_tokens: u64) {
        self.llm_tokens_in.increment(prompt_tokens);
        self.llm_tokens_out.increment(completion_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_what_went_wrong() {
        let throttled = ProviderError::Status { status: 429, message: String::new(), retry_after: None };
        let server = ProviderError::Status { status: 503, message: String::new(), retry_after: None };
        assert_eq!(LlmRequestOutcome::of_failure(&throttled), LlmRequestOutcome::Throttled);
        assert_eq!(LlmRequestOutcome::of_failure(&server), LlmRequestOutcome::Error);
        assert_eq!(LlmRequestOutcome::of_failure(&ProviderError::Timeout("x")), LlmRequestOutcome::Timeout);
        assert_eq!(
            LlmRequestOutcome::of_failure(&ProviderError::Transport("reset".to_owned())),
            LlmRequestOutcome::Error
        );
    }
}
