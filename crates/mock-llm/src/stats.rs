//! What the mock LLM saw: request counts, concurrency peaks, token totals, and the peak start rate. Tests and
//! benchmarks read these to check what reached the "upstream". Counting only; no HTTP here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The width of the sliding window behind `max_starts_in_one_second`.
const START_RATE_WINDOW: Duration = Duration::from_secs(1);

/// A snapshot of the counters, served by `GET /stats`. All counts are since start or the last `POST /stats/reset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockLlmStats {
    /// Chat completion requests received, including the ones refused or failed.
    pub requests: u64,
    /// Chat completion requests not finished yet; never reset, since it describes the present.
    pub in_flight: u64,
    /// The highest `in_flight` seen.
    pub max_in_flight: u64,
    /// Requests whose whole answer was sent (for streams: up to `[DONE]`).
    pub completed: u64,
    /// Requests answered with an error status, or cut on purpose by `fail_after_tokens`.
    pub failed: u64,
    /// Requests that were held open without an answer (`hang`, `hang_rate`).
    pub hung: u64,
    /// Requests whose client went away before the answer finished, hung ones included.
    pub cancelled_by_client: u64,
    /// Prompt tokens of the requests that got an answer (see `count_prompt_tokens`).
    pub prompt_tokens_total: u64,
    /// Answer tokens actually sent.
    pub completion_tokens_total: u64,
    /// The most request starts seen within any one-second window (sliding, exact).
    pub max_starts_in_one_second: u64,
}

/// The live counters behind [`MockLlmStats`], shared by every request.
#[derive(Debug, Default)]
pub(crate) struct StatsRecorder {
    counters: Mutex<StatsCounters>,
}

#[derive(Debug, Default)]
struct StatsCounters {
    stats: MockLlmStats,
    start_rate: StartRateWindow,
}

impl StatsRecorder {
    /// Counts a chat request as started; the returned guard counts how it ends, even when it is dropped early.
    pub(crate) fn start_chat_request(self: &Arc<Self>) -> ChatRequestGuard {
        let mut counters = self.lock_counters();
        let starts_in_window = counters.start_rate.record_start(Instant::now());
        let stats = &mut counters.stats;
        stats.requests += 1;
        stats.in_flight += 1;
        stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        stats.max_starts_in_one_second = stats.max_starts_in_one_second.max(starts_in_window as u64);
        ChatRequestGuard { recorder: Arc::clone(self), outcome: None, completion_tokens: 0 }
    }

    pub(crate) fn snapshot(&self) -> MockLlmStats {
        self.lock_counters().stats
    }

    /// Zeroes every counter except `in_flight`, which keeps describing the requests still running.
    pub(crate) fn reset(&self) {
        let mut counters = self.lock_counters();
        let in_flight = counters.stats.in_flight;
        *counters = StatsCounters::default();
        counters.stats.in_flight = in_flight;
        counters.stats.max_in_flight = in_flight;
    }

    /// A panicking request cannot leave the counters half-updated in a way that matters, so poison is ignored.
    fn lock_counters(&self) -> MutexGuard<'_, StatsCounters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a request ended, once it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestOutcome {
    Completed,
    Failed,
}

/// Lives as long as one chat request (inside the response stream for streams). Dropped without an outcome means
/// the client went away first: hyper drops the handler future or the response body when the connection closes.
#[derive(Debug)]
pub(crate) struct ChatRequestGuard {
    recorder: Arc<StatsRecorder>,
    outcome: Option<RequestOutcome>,
    /// Added to the shared total on drop, so sending a token does not take the lock.
    completion_tokens: u64,
}

impl ChatRequestGuard {
    pub(crate) fn record_prompt_tokens(&self, prompt_tokens: u32) {
        self.recorder.lock_counters().stats.prompt_tokens_total += u64::from(prompt_tokens);
    }

    /// Counted at once, not on drop, so a test can see the hang while the request is still open.
    pub(crate) fn mark_hung(&self) {
        self.recorder.lock_counters().stats.hung += 1;
    }

    pub(crate) fn count_completion_token(&mut self) {
        self.completion_tokens += 1;
    }

    pub(crate) fn mark_completed(&mut self) {
        self.outcome = Some(RequestOutcome::Completed);
    }

    pub(crate) fn mark_failed(&mut self) {
        self.outcome = Some(RequestOutcome::Failed);
    }
}

impl Drop for ChatRequestGuard {
    fn drop(&mut self) {
        let mut counters = self.recorder.lock_counters();
        let stats = &mut counters.stats;
        stats.in_flight = stats.in_flight.saturating_sub(1);
        stats.completion_tokens_total += self.completion_tokens;
        match self.outcome {
            Some(RequestOutcome::Completed) => stats.completed += 1,
            Some(RequestOutcome::Failed) => stats.failed += 1,
            None => stats.cancelled_by_client += 1,
        }
    }
}

/// The start instants of the last second. The busiest one-second window always ends at some start, so checking
/// the window at every start gives the exact maximum without buckets.
#[derive(Debug, Default)]
pub(crate) struct StartRateWindow {
    recent_starts: VecDeque<Instant>,
}

impl StartRateWindow {
    /// Records a start (instants must not go backwards) and returns the starts in the second ending at it.
    pub(crate) fn record_start(&mut self, started_at: Instant) -> usize {
        while let Some(&oldest) = self.recent_starts.front() {
            if started_at.duration_since(oldest) >= START_RATE_WINDOW {
                self.recent_starts.pop_front();
            } else {
                break;
            }
        }
        self.recent_starts.push_back(started_at);
        self.recent_starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_within_one_second_are_counted_together() {
        let base = Instant::now();
        let mut window = StartRateWindow::default();
        assert_eq!(window.record_start(base), 1);
        assert_eq!(window.record_start(base + Duration::from_millis(300)), 2);
        assert_eq!(window.record_start(base + Duration::from_millis(999)), 3);
        // Exactly one second after the first start, the first start has left the window.
        assert_eq!(window.record_start(base + Duration::from_millis(1_000)), 3);
        assert_eq!(window.record_start(base + Duration::from_millis(2_500)), 1);
    }

    #[test]
    fn guards_count_outcomes_and_cancellations() {
        let recorder = Arc::new(StatsRecorder::default());
        let mut completed = recorder.start_chat_request();
        let mut failed = recorder.start_chat_request();
        let abandoned = recorder.start_chat_request();
        assert_eq!(recorder.snapshot().in_flight, 3);
        completed.record_prompt_tokens(4);
        completed.count_completion_token();
        completed.count_completion_token();
        completed.mark_completed();
        failed.mark_failed();
        abandoned.mark_hung();
        drop((completed, failed, abandoned));

        let stats = recorder.snapshot();
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.in_flight, 0);
        assert_eq!(stats.max_in_flight, 3);
        assert_eq!((stats.completed, stats.failed, stats.hung, stats.cancelled_by_client), (1, 1, 1, 1));
        assert_eq!((stats.prompt_tokens_total, stats.completion_tokens_total), (4, 2));
        assert_eq!(stats.max_starts_in_one_second, 3);
    }

    #[test]
    fn reset_keeps_the_requests_still_in_flight() {
        let recorder = Arc::new(StatsRecorder::default());
        let still_running = recorder.start_chat_request();
        drop(recorder.start_chat_request());
        recorder.reset();
        let stats = recorder.snapshot();
        assert_eq!(stats, MockLlmStats { in_flight: 1, max_in_flight: 1, ..MockLlmStats::default() });
        drop(still_running);
        assert_eq!(recorder.snapshot().in_flight, 0);
    }
}
