//! The one log line of a job that ended after a slow path (a long queue wait, upstream retries, earlier attempts,
//! a dead letter), with its reasons, so an operator can tell why a chat was slow without dashboards. Only
//! timings and counts: never message contents.

use std::time::Duration;

use protocol::{JobEnvelope, JobId, Lane};

/// A queue wait longer than this is worth a line of its own (at `info`): users notice it.
pub const LONG_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// What made one job's path slow; empty when nothing did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlowPathReasons {
    /// The first attempt's wait from admission to the claim, when longer than [`LONG_QUEUE_WAIT`].
    pub long_queue_wait: Option<Duration>,
    pub upstream_retries: u32,
    /// Attempts before this one that a dead worker lost.
    pub recoveries: u32,
    /// Attempts before this one that were handed back or put back on a shutdown.
    pub hand_backs: u32,
    pub dead_lettered: bool,
}

impl SlowPathReasons {
    /// The reasons of an attempt of `envelope` that waited `queue_wait` in line (first attempts only count) and
    /// retried upstream `upstream_retries` times.
    pub fn of_attempt(
        envelope: &JobEnvelope,
        queue_wait: Duration,
        upstream_retries: u32,
        dead_lettered: bool,
    ) -> Self {
        let earlier_attempts = envelope.attempt.saturating_sub(1);
        Self {
            long_queue_wait: (envelope.attempt <= 1 && queue_wait > LONG_QUEUE_WAIT).then_some(queue_wait),
            upstream_retries,
            recoveries: envelope.recoveries.min(earlier_attempts),
            hand_backs: earlier_attempts.saturating_sub(envelope.recoveries),
            dead_lettered,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Only a long queue wait: the system worked as designed, so `info` rather than `warn`.
    pub fn only_waited_in_line(&self) -> bool {
        self.long_queue_wait.is_some() && Self { long_queue_wait: None, ..self.clone() }.is_empty()
    }

    /// The reasons as one stable, human-readable string, e.g. `queued 12.3 s; 2 upstream retries`.
    pub fn describe(&self) -> String {
        let mut reasons = Vec::new();
        if let Some(waited) = self.long_queue_wait {
            reasons.push(format!("queued {:.1} s", waited.as_secs_f64()));
        }
        if self.upstream_retries > 0 {
            reasons.push(counted(self.upstream_retries, "upstream retry", "upstream retries"));
        }
        if self.recoveries > 0 {
            reasons.push(counted(
                self.recoveries,
                "recovery from a dead worker",
                "recoveries from dead workers",
            ));
        }
        if self.hand_backs > 0 {
            reasons.push(counted(self.hand_backs, "hand-back", "hand-backs"));
        }
        if self.dead_lettered {
            reasons.push("dead-lettered".to_owned());
        }
        reasons.join("; ")
    }
}

fn counted(count: u32, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Logs the slow path of the job `job_id` once, when it had one: `warn`, or `info` when it only waited long in
/// line.
pub fn log_slow_path(job_id: JobId, lane: Lane, outcome: &str, reasons: &SlowPathReasons) {
    if reasons.is_empty() {
        return;
    }
    let (lane, reasons_text) = (lane.as_str(), reasons.describe());
    if reasons.only_waited_in_line() {
        tracing::info!(%job_id, lane, outcome, reasons = reasons_text.as_str(), "job ended after a slow path");
    } else {
        tracing::warn!(%job_id, lane, outcome, reasons = reasons_text.as_str(), "job ended after a slow path");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(attempt: u32, recoveries: u32) -> JobEnvelope {
        let now_ms = protocol::unix_time_ms();
        let mut envelope = JobEnvelope::new_chat(
            "ip:127.0.0.1".to_owned(),
            protocol::Lane::Standard,
            Vec::new(),
            "mock-1".to_owned(),
            protocol::GenerationParameters::with_max_tokens(16),
            now_ms,
            now_ms + 60_000,
        );
        envelope.attempt = attempt;
        envelope.recoveries = recoveries;
        envelope
    }

    #[test]
    fn a_fast_first_attempt_has_no_reasons() {
        let reasons = SlowPathReasons::of_attempt(&envelope(1, 0), Duration::from_millis(300), 0, false);
        assert!(reasons.is_empty());
        assert_eq!(reasons.describe(), "");
    }

    #[test]
    fn a_long_wait_alone_is_only_waiting_in_line() {
        let reasons = SlowPathReasons::of_attempt(&envelope(1, 0), Duration::from_millis(12_340), 0, false);
        assert!(reasons.only_waited_in_line());
        assert_eq!(reasons.describe(), "queued 12.3 s");
    }

    #[test]
    fn every_reason_is_named_in_a_stable_order() {
        let reasons = SlowPathReasons::of_attempt(&envelope(4, 1), Duration::from_secs(30), 2, true);
        assert!(!reasons.only_waited_in_line());
        // A later attempt's wait includes the earlier attempts: it is not a queue wait.
        assert_eq!(
            reasons.describe(),
            "2 upstream retries; 1 recovery from a dead worker; 2 hand-backs; dead-lettered"
        );
    }

    #[test]
    fn a_first_attempt_that_retried_once_is_worth_a_warning() {
        let reasons = SlowPathReasons::of_attempt(&envelope(1, 0), Duration::from_secs(11), 1, false);
        assert!(!reasons.only_waited_in_line());
        assert_eq!(reasons.describe(), "queued 11.0 s; 1 upstream retry");
    }
}
