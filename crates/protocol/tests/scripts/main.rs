//! Every Lua script of the job lifecycle, run against a real redis-server.

mod admission;
mod admission_joins_and_reservations;
mod dead_letter_replay;
mod job_endings;
mod job_lifecycle;
mod upstream_backpressure;
mod upstream_capacity;

use protocol::job_lifecycle::JobFence;
use protocol::{JobEnvelope, Lane};

/// A small valid envelope in `lane`, charged to `ip:127.0.0.1`.
pub fn envelope(lane: Lane) -> JobEnvelope {
    let mut envelope = test_support::sample_envelope("hi", lane);
    envelope.parameters.max_tokens = 8;
    envelope.created_at_ms = 1;
    envelope.deadline_ms = u64::MAX;
    envelope
}

/// The fence of `job`'s first attempt, run by worker `w1`.
pub fn first_attempt_fence<'a>(job: &'a JobEnvelope, raw_envelope: &'a str) -> JobFence<'a> {
    JobFence {
        job_id: &job.id,
        identity: &job.identity,
        worker_id: "w1",
        attempt: 1,
        raw_envelope,
        created_at_ms: job.created_at_ms,
    }
}
