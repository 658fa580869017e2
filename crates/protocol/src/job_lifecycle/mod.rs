//! The atomic steps of a job's life in Redis (admit, claim, start, append, finish, recover, cancel, dead-letter),
//! each one Lua script in `lua/` run in one round trip, each wrapped in a file of its own here. Services call
//! these instead of touching the queue keys themselves, so every service moves jobs the same way.

mod admit_chat;
mod append_stream_events;
mod cancel_job;
mod claim_job;
mod dead_letter_job;
mod finish_job;
mod recover_job;
mod start_job;

use redis::{ErrorKind, RedisError};

pub use admit_chat::{
    AdmissionDecision, AdmissionRequest, DuplicateCheck, EnqueuedJob, RateStanding, RejectionReason,
    admit_chat, budget_reservation, chat_content_digest, enqueue_job,
};
pub use append_stream_events::{AppendOutcome, JobStreamKeys, append_stream_events};
pub use cancel_job::{CancelOutcome, cancel_job};
pub use claim_job::{
    ClaimedJob, claim_jobs, claim_next_job, lanes_in_claim_order, wait_for_doorbell_then_claim,
};
pub use dead_letter_job::dead_letter_job;
pub use finish_job::{FinishOutcome, JobEnding, JobFence, finish_job};
pub use recover_job::{JobRecovery, RecoveryOutcome, recover_job};
pub use start_job::{JobStart, start_job, start_job_with_permit_request};

/// Most items the worker doorbell holds: enough to wake every idle worker of a large deployment at once.
pub const DOORBELL_CAPACITY: u64 = 1_024;

/// A UTC day: daily token budgets are keyed by `ms since the epoch / DAY_MS`.
const DAY_MS: u64 = 86_400_000;

/// Whether Redis refused a pipelined script because it does not know it yet (its first use, or after a
/// restart): nothing ran, and the ordinary call loads it.
fn is_unknown_script(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript)
}
