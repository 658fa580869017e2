//! The job lifecycle's scripts: a job enqueued and claimed, then started, streamed and ended by one attempt.

mod attempts_and_fences;
mod queue_and_claims;

use protocol::Lane;
use protocol::dead_letter::DeadLetterCaps;

/// Premium first, then standard (for tests that are not about weights).
const PREMIUM_FIRST: [Lane; 2] = [Lane::Premium, Lane::Standard];
/// Roomy enough that no test here reaches a cap of the dead-letter list.
const CAPS: DeadLetterCaps = DeadLetterCaps { max_records: 100, max_bytes: 1 << 20 };
