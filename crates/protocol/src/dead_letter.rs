//! The dead-letter record: a job that could not be completed, kept with why, so an operator can inspect it and
//! replay it. Jobs are never dropped silently: the list is capped by count and bytes (`DeadLetterCaps`), and the
//! oldest records dropped to keep it so are counted. Also the replay itself: `lua/replay_dead_letter.lua` moves
//! one record back onto its lane atomically, and the operator's drop. Listing, paging and choosing what to replay
//! belong to the dam.

use std::sync::LazyLock;

use crate::script_runner::run_script;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde::{Deserialize, Serialize};

use crate::job::{JobEnvelope, JobId};
use crate::job_lifecycle::{DOORBELL_CAPACITY, EnqueuedJob};
use crate::keys::RedisKeys;
use crate::settings::Settings;

static REPLAY_DEAD_LETTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/replay_dead_letter.lua")));
static DROP_DEAD_LETTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/drop_dead_letter.lua")));

/// How large the dead-letter list may grow: every script that adds a record drops the oldest ones while the list
/// holds more than `max_records` records or more than `max_bytes` bytes of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterCaps {
    pub max_records: u64,
    pub max_bytes: u64,
}

impl DeadLetterCaps {
    /// The configured caps (`worker.dead_letters_max_count`, `worker.dead_letters_max_bytes`).
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_records: settings.worker.dead_letters_max_count.max(1),
            max_bytes: settings.worker.dead_letters_max_bytes.max(1),
        }
    }
}

/// Counts the records a script dropped to keep the list within its caps, in this process's metrics (Redis keeps
/// the fleet's total beside the list).
pub(crate) fn count_dropped_dead_letters(dropped: u64) {
    if dropped > 0 {
        tracing::warn!(dropped, "the dead-letter list is full: its oldest records were dropped");
        metrics::counter!("dam_dead_letters_dropped_total").increment(dropped);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Absent when the envelope could not even be decoded.
    pub job_id: Option<JobId>,
    /// Machine-readable: `undecodable_envelope`, `poison_job`, `upstream_failed`, ...
    pub reason: String,
    /// The last error, for a human.
    pub last_error: String,
    pub attempts: u32,
    pub worker_id: String,
    pub dead_at_ms: u64,
    /// The envelope exactly as it sat in the queue, so a replay loses nothing.
    pub raw_envelope: String,
}

/// Why a dead letter cannot be put back on a lane (it can still be dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReplayable {
    #[error("the record has no job id: its envelope could not be decoded when it died")]
    NoJobId,
    #[error("the stored envelope cannot be read by this build: {0}")]
    UndecodableEnvelope(String),
    #[error("the stored envelope is job {envelope_job_id}, but the record names job {record_job_id}")]
    MismatchedJobId { record_job_id: JobId, envelope_job_id: JobId },
}

impl DeadLetter {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a dead letter always serializes")
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The envelope a replay queues: the stored one, unchanged but for what makes it a fresh job: created now
    /// (so its queue wait, and the worker's check for a client that went away, count from the replay), a fresh
    /// deadline (`now_ms` plus the queue deadline), `attempt` 1 and no recoveries (an operator replaying a poison
    /// job gives it its full chances again).
    pub fn replayable_envelope(
        &self,
        now_ms: u64,
        queue_deadline_s: u64,
    ) -> Result<JobEnvelope, NotReplayable> {
        let record_job_id = self.job_id.ok_or(NotReplayable::NoJobId)?;
        let mut envelope = JobEnvelope::decode(&self.raw_envelope)
            .map_err(|error| NotReplayable::UndecodableEnvelope(error.to_string()))?;
        if envelope.id != record_job_id {
            return Err(NotReplayable::MismatchedJobId { record_job_id, envelope_job_id: envelope.id });
        }
        envelope.created_at_ms = now_ms;
        envelope.deadline_ms = now_ms.saturating_add(queue_deadline_s.saturating_mul(1_000));
        envelope.attempt = 1;
        envelope.recoveries = 0;
        // Nobody listens to a replay when it starts; the operator reads its outcome later.
        envelope.unattended = true;
        Ok(envelope)
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The record left the list and its job is queued again.
    Queued(EnqueuedJob),
    /// The record was no longer in the list; nothing changed.
    NotInList,
    /// The record's job is queued or running (a live copy: its state must not be replaced); nothing changed.
    JobActive,
}

/// Removes `stored_record` (the dead-letter record exactly as it sits in the list) and, only if it was there and
/// its job is neither queued nor running, queues `envelope` at the tail of its lane as a fresh job (old state and
/// replay log replaced) and counts the replay.
pub async fn replay_dead_letter(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    stored_record: &str,
    envelope: &JobEnvelope,
    state_ttl_s: u64,
) -> RedisResult<ReplayOutcome> {
    let (ticket, position): (i64, i64) = run_script(
        "replay_dead_letter",
        REPLAY_DEAD_LETTER
            .key(keys.dead_letters())
            .key(keys.lane_queue(envelope.lane))
            .key(keys.job_state(&envelope.id))
            .key(keys.lane_enqueued_tickets(envelope.lane))
            .key(keys.lane_served_tickets(envelope.lane))
            .key(keys.queue_doorbell())
            .key(keys.job_replay_log(&envelope.id))
            .key(keys.dead_letter_replays())
            .key(keys.dead_letter_bytes())
            .arg(stored_record)
            .arg(envelope.encode())
            .arg(&envelope.identity)
            .arg(envelope.lane.as_str())
            .arg(envelope.created_at_ms)
            .arg(state_ttl_s.max(1))
            .arg(DOORBELL_CAPACITY),
        connection,
    )
    .await?;
    Ok(match ticket {
        -2 => ReplayOutcome::JobActive,
        ticket if ticket < 0 => ReplayOutcome::NotInList,
        ticket => {
            ReplayOutcome::Queued(EnqueuedJob { ticket: ticket as u64, position: position.max(1) as u64 })
        }
    })
}

/// Removes `stored_record` (exactly as stored) from the dead-letter list, and its bytes from the list's size.
/// Returns false, changing nothing, when it was no longer there.
pub async fn drop_dead_letter(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    stored_record: &str,
) -> RedisResult<bool> {
    let removed: i64 = run_script(
        "drop_dead_letter",
        DROP_DEAD_LETTER.key(keys.dead_letters()).key(keys.dead_letter_bytes()).arg(stored_record),
        connection,
    )
    .await?;
    Ok(removed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ChatMessage, ChatRole, GenerationParameters, Lane};

    fn dead_envelope() -> JobEnvelope {
        let mut envelope = JobEnvelope::new_chat(
            "ip:127.0.0.1".to_owned(),
            Lane::Premium,
            vec![ChatMessage { role: ChatRole::User, content: "hi".to_owned() }],
            "mock-1".to_owned(),
            GenerationParameters::with_max_tokens(8),
            1_000,
            2_000,
        );
        envelope.attempt = 3;
        envelope.recoveries = 2;
        envelope
    }

    fn letter_for(envelope: &JobEnvelope) -> DeadLetter {
        DeadLetter {
            job_id: Some(envelope.id),
            reason: "poison_job".to_owned(),
            last_error: "boom".to_owned(),
            attempts: 3,
            worker_id: "w1".to_owned(),
            dead_at_ms: 3_000,
            raw_envelope: envelope.encode(),
        }
    }

    #[test]
    fn a_replayed_envelope_is_created_anew_with_a_fresh_deadline_and_its_first_attempt_and_nothing_else_changes()
     {
        let envelope = dead_envelope();
        let replayed = letter_for(&envelope).replayable_envelope(10_000, 120).expect("replayable");
        let fresh = (replayed.created_at_ms, replayed.deadline_ms, replayed.attempt, replayed.recoveries);
        assert_eq!(fresh, (10_000, 130_000, 1, 0));
        assert!(replayed.unattended, "nobody is expected to listen to a replay");
        let unchanged = JobEnvelope {
            created_at_ms: envelope.created_at_ms,
            deadline_ms: envelope.deadline_ms,
            attempt: envelope.attempt,
            recoveries: envelope.recoveries,
            unattended: envelope.unattended,
            ..replayed
        };
        assert_eq!(unchanged, envelope);
    }

    #[test]
    fn records_without_a_readable_matching_envelope_are_not_replayable() {
        let envelope = dead_envelope();
        let no_id = DeadLetter { job_id: None, ..letter_for(&envelope) };
        assert_eq!(no_id.replayable_envelope(0, 1), Err(NotReplayable::NoJobId));
        let garbage = DeadLetter { raw_envelope: "{not json".to_owned(), ..letter_for(&envelope) };
        assert!(matches!(garbage.replayable_envelope(0, 1), Err(NotReplayable::UndecodableEnvelope(_))));
        let other = DeadLetter { job_id: Some(JobId::new_random()), ..letter_for(&envelope) };
        assert!(matches!(other.replayable_envelope(0, 1), Err(NotReplayable::MismatchedJobId { .. })));
    }
}
