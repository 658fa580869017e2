//! A job's ending: `finish_job` (`lua/finish_job.lua`) writes the last events and the final status, once, fenced
//! by owner and attempt, and settles everything the job held (processing entry, active chat, budget, dead letter).

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

use super::DAY_MS;
use crate::dead_letter::{DeadLetter, DeadLetterCaps, count_dropped_dead_letters};
use crate::job::{JobId, JobStatus};
use crate::keys::{ADMISSION_STATS_BUCKET_S, RedisKeys};
use crate::script_runner::run_script;
use crate::stream_event::StreamEvent;

static FINISH_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/finish_job.lua")));

/// Who may end a job: the worker and attempt recorded by [`start_job`](super::start_job).
#[derive(Debug, Clone, Copy)]
pub struct JobFence<'a> {
    pub job_id: &'a JobId,
    /// The caller the job is charged to; a finished job leaves its active chats.
    pub identity: &'a str,
    pub worker_id: &'a str,
    /// The attempt [`start_job`](super::start_job) returned.
    pub attempt: u32,
    /// The envelope exactly as claimed.
    pub raw_envelope: &'a str,
    /// The envelope's `created_at_ms`: the ending settles the budget of that UTC day, the one admission reserved
    /// on, whatever the clock says when the job ends.
    pub created_at_ms: u64,
}

/// How a job ends, written together with its last events.
#[derive(Debug, Clone, Copy)]
pub struct JobEnding<'a> {
    pub status: JobStatus,
    /// Charged to the caller's daily token budget, against what admission reserved for the job.
    pub tokens_used: u64,
    /// Kept when the job failed for good.
    pub dead_letter: Option<&'a DeadLetter>,
}

/// Whether a job's ending went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    Finished {
        replay_log_length: u64,
    },
    /// The job already reached a final status (this very ending, when an earlier try's reply was lost).
    AlreadyFinished,
    /// The job belongs to another worker or attempt now; nothing was written.
    Fenced,
}

/// Appends and publishes a job's last `events` and ends it with `ending`, once (see `finish_job.lua`).
/// `new_log_ttl_s` is given when this is the attempt's first write (0 otherwise); a dead letter is kept within
/// `dead_letter_caps`.
#[allow(clippy::too_many_arguments)]
pub async fn finish_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    fence: JobFence<'_>,
    events: &[StreamEvent],
    ending: JobEnding<'_>,
    replay_log_length_after: u64,
    new_log_ttl_s: u64,
    replay_ttl_s: u64,
    now_ms: u64,
    dead_letter_caps: DeadLetterCaps,
) -> RedisResult<FinishOutcome> {
    let mut invocation = FINISH_JOB.key(keys.job_state(fence.job_id));
    invocation
        .key(keys.job_replay_log(fence.job_id))
        .key(keys.job_event_channel(fence.job_id))
        .key(keys.worker_processing_list(fence.worker_id))
        .key(keys.active_chats(fence.identity))
        .key(keys.dead_letters())
        .key(keys.token_budget(fence.identity, fence.created_at_ms / DAY_MS))
        .key(keys.job_outcome_counts(now_ms / 1000 / ADMISSION_STATS_BUCKET_S))
        .key(keys.dead_letter_bytes())
        .key(keys.dead_letters_dropped())
        .arg(fence.worker_id)
        .arg(fence.attempt)
        .arg(replay_ttl_s.max(1))
        .arg(ending.status.as_str())
        .arg(fence.raw_envelope)
        .arg(now_ms)
        .arg(fence.job_id.to_string())
        .arg(ending.dead_letter.map(DeadLetter::encode).unwrap_or_default())
        .arg(ending.tokens_used)
        .arg(replay_log_length_after)
        .arg(new_log_ttl_s)
        .arg(dead_letter_caps.max_records)
        .arg(dead_letter_caps.max_bytes);
    for event in events {
        invocation.arg(event.encode());
    }
    let (length, dropped): (i64, u64) = run_script("finish_job", &invocation, connection).await?;
    count_dropped_dead_letters(dropped);
    Ok(match length {
        -1 => FinishOutcome::Fenced,
        -2 => FinishOutcome::AlreadyFinished,
        length => FinishOutcome::Finished { replay_log_length: length.max(0) as u64 },
    })
}
