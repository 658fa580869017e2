//! Taking a job out of a processing list, for the reaper and a worker's hand-back: `recover_job`
//! (`lua/recover_job.lua`) releases, cancels, dead-letters or requeues it, by the job's state.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

use super::{DAY_MS, DOORBELL_CAPACITY};
use crate::dead_letter::{DeadLetter, DeadLetterCaps, count_dropped_dead_letters};
use crate::job::JobEnvelope;
use crate::keys::{ADMISSION_STATS_BUCKET_S, RedisKeys};
use crate::script_runner::run_script;

static RECOVER_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/recover_job.lua")));

/// What became of a job taken out of a processing list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// Back at the head of its lane, and the doorbell rung.
    Requeued,
    /// Ended for good: dead-letter record, `failed`, and an error event for its client.
    DeadLettered,
    /// Its client had cancelled it: ended as `cancelled` rather than run again.
    Cancelled,
    /// It had already ended, or another attempt owns it now: only the processing entry was removed.
    Released,
    /// Its state had expired: nobody could see it any more, so it was dropped.
    Dropped,
    /// It was not in the processing list (someone else recovered or finished it); nothing changed.
    Absent,
}

impl RecoveryOutcome {
    /// The outcome's name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryOutcome::Requeued => "requeued",
            RecoveryOutcome::DeadLettered => "dead_lettered",
            RecoveryOutcome::Cancelled => "cancelled",
            RecoveryOutcome::Released => "released",
            RecoveryOutcome::Dropped => "dropped",
            RecoveryOutcome::Absent => "absent",
        }
    }
}

/// One job to take out of a processing list (see `recover_job.lua`).
#[derive(Debug, Clone, Copy)]
pub struct JobRecovery<'a> {
    /// The worker whose processing list holds the entry.
    pub worker_id: &'a str,
    /// The entry exactly as it sits there.
    pub raw_envelope: &'a str,
    /// The envelope to put back (its attempt raised) when the job is requeued.
    pub requeued: &'a JobEnvelope,
    /// Given when the job is to end for good (a poison job).
    pub dead_letter: Option<&'a DeadLetter>,
    /// What the client sees when the job is dead-lettered.
    pub dead_lettered_message: &'a str,
    /// What the client sees when the job ends because its client had cancelled it.
    pub cancelled_message: &'a str,
    pub replay_ttl_s: u64,
    pub now_ms: u64,
    pub dead_letter_caps: DeadLetterCaps,
}

/// Takes one entry out of a processing list and, looking at the job's state, releases it (ended, or owned by
/// another attempt), ends it as cancelled (its client cancelled it), dead-letters it (given a dead letter) or
/// requeues it at the head of its lane. One round trip.
pub async fn recover_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    recovery: JobRecovery<'_>,
) -> RedisResult<RecoveryOutcome> {
    let requeued = recovery.requeued;
    let (outcome, dropped): (String, u64) = run_script(
        "recover_job",
        RECOVER_JOB
            .key(keys.worker_processing_list(recovery.worker_id))
            .key(keys.lane_queue(requeued.lane))
            .key(keys.lane_served_tickets(requeued.lane))
            .key(keys.job_state(&requeued.id))
            .key(keys.job_replay_log(&requeued.id))
            .key(keys.job_event_channel(&requeued.id))
            .key(keys.dead_letters())
            .key(keys.active_chats(&requeued.identity))
            .key(keys.job_outcome_counts(recovery.now_ms / 1000 / ADMISSION_STATS_BUCKET_S))
            .key(keys.queue_doorbell())
            .key(keys.token_budget(&requeued.identity, requeued.created_at_ms / DAY_MS))
            .key(keys.dead_letter_bytes())
            .key(keys.dead_letters_dropped())
            .arg(recovery.raw_envelope)
            .arg(requeued.encode())
            .arg(recovery.dead_letter.map(DeadLetter::encode).unwrap_or_default())
            .arg(requeued.id.to_string())
            .arg(recovery.now_ms)
            .arg(recovery.replay_ttl_s.max(1))
            .arg(recovery.dead_lettered_message)
            .arg(recovery.worker_id)
            .arg(recovery.cancelled_message)
            .arg(DOORBELL_CAPACITY)
            .arg(recovery.dead_letter_caps.max_records)
            .arg(recovery.dead_letter_caps.max_bytes),
        connection,
    )
    .await?;
    count_dropped_dead_letters(dropped);
    Ok(match outcome.as_str() {
        "requeued" => RecoveryOutcome::Requeued,
        "dead_lettered" => RecoveryOutcome::DeadLettered,
        "cancelled" => RecoveryOutcome::Cancelled,
        "released" => RecoveryOutcome::Released,
        "dropped" => RecoveryOutcome::Dropped,
        _ => RecoveryOutcome::Absent,
    })
}
