//! Inspecting, replaying and dropping dead letters. A dead letter is named by its job id, or, when it has none
//! (its envelope was unreadable), by `record-<16 hex>`: the start of the SHA-256 of the record as stored. Every
//! change is one atomic step on one exact record (`replay_dead_letter.lua`, `LREM`), so no job is ever lost or
//! queued twice, even with several operators at work.

use protocol::dead_letter::{
    DeadLetter, ReplayOutcome, drop_dead_letter as drop_dead_letter_record, replay_dead_letter,
};
use protocol::{JobEnvelope, JobId, Lane, Settings, unix_time_ms};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app_state::AdminState;
use crate::error::AdminError;

/// Records read per round trip while searching or replaying the list.
const SCAN_PAGE_SIZE: u64 = 200;

/// Hex digits of the record digest in a `record-...` id.
const RECORD_DIGEST_HEX_DIGITS: usize = 16;

/// One page of the dead-letter list, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterPage {
    /// Records in the whole list.
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
    pub items: Vec<DeadLetterSummary>,
}

/// What an operator needs to decide on one dead letter. The conversation itself is not shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterSummary {
    /// The id the replay and drop routes take.
    pub id: String,
    pub job_id: Option<JobId>,
    pub reason: String,
    pub last_error: String,
    pub attempts: u32,
    pub worker_id: String,
    pub dead_at_ms: u64,
    pub replayable: bool,
    /// Why it cannot be replayed, when it cannot.
    pub not_replayable_reason: Option<String>,
    pub lane: Option<Lane>,
    pub identity: Option<String>,
    pub model: Option<String>,
    pub created_at_ms: Option<u64>,
}

/// A dead letter back on its lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayedJob {
    pub job_id: JobId,
    pub lane: Lane,
    /// 1 = next in its lane.
    pub position: u64,
    pub deadline_ms: u64,
    /// Where a client can follow the replayed chat on any gateway.
    pub events_url: String,
}

/// What a replay of the whole list did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayAllReport {
    pub dry_run: bool,
    /// Replayed (or replayable, in a dry run), oldest first.
    pub jobs: Vec<ReplayAllJob>,
    /// Left in the list.
    pub not_replayable: Vec<NotReplayableRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayAllJob {
    pub job_id: JobId,
    pub lane: Lane,
    /// Its place in its lane once replayed; `None` in a dry run.
    pub position: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotReplayableRecord {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedDeadLetter {
    pub id: String,
    pub job_id: Option<JobId>,
}

/// How the routes name one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterHandle {
    Job(JobId),
    /// The first hex digits of the SHA-256 of the record as stored.
    Record(String),
}

impl DeadLetterHandle {
    pub fn parse(text: &str) -> Result<Self, AdminError> {
        if let Ok(job_id) = text.parse::<JobId>() {
            return Ok(DeadLetterHandle::Job(job_id));
        }
        match text.strip_prefix("record-") {
            Some(digest)
                if digest.len() == RECORD_DIGEST_HEX_DIGITS
                    && digest.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(DeadLetterHandle::Record(digest.to_owned()))
            }
            _ => Err(AdminError::invalid_field(
                "id",
                "must be a job id (lowercase hyphenated UUID) or record-<16 hex digits>, as listed",
            )),
        }
    }

    fn matches(&self, record: &StoredDeadLetter) -> bool {
        match self {
            DeadLetterHandle::Job(job_id) => {
                record.decoded.as_ref().and_then(|letter| letter.job_id) == Some(*job_id)
            }
            DeadLetterHandle::Record(digest) => record_digest(&record.stored) == *digest,
        }
    }
}

/// One record as it sits in the list, and what it says when it can be read.
#[derive(Debug, Clone)]
struct StoredDeadLetter {
    stored: String,
    decoded: Option<DeadLetter>,
}

impl StoredDeadLetter {
    fn new(stored: String) -> Self {
        let decoded = DeadLetter::decode(&stored).ok();
        Self { stored, decoded }
    }

    /// The id shown in listings: the job id when there is one.
    fn id(&self) -> String {
        match self.decoded.as_ref().and_then(|letter| letter.job_id) {
            Some(job_id) => job_id.to_string(),
            None => format!("record-{}", record_digest(&self.stored)),
        }
    }

    /// The envelope a replay would queue now, or why there is none.
    fn replayable_envelope(&self, settings: &Settings, now_ms: u64) -> Result<JobEnvelope, String> {
        let letter = self.decoded.as_ref().ok_or("the record itself is not a readable dead letter")?;
        letter.replayable_envelope(now_ms, settings.chat.queue_deadline_s).map_err(|error| error.to_string())
    }

    fn summary(&self, settings: &Settings, now_ms: u64) -> DeadLetterSummary {
        let replayable = self.replayable_envelope(settings, now_ms);
        let envelope =
            self.decoded.as_ref().and_then(|letter| JobEnvelope::decode(&letter.raw_envelope).ok());
        let letter = self.decoded.clone().unwrap_or_else(|| DeadLetter {
            job_id: None,
            reason: "undecodable_record".to_owned(),
            last_error: "the dead-letter record is not valid JSON for this build".to_owned(),
            attempts: 0,
            worker_id: String::new(),
            dead_at_ms: 0,
            raw_envelope: String::new(),
        });
        DeadLetterSummary {
            id: self.id(),
            job_id: letter.job_id,
            reason: letter.reason,
            last_error: letter.last_error,
            attempts: letter.attempts,
            worker_id: letter.worker_id,
            dead_at_ms: letter.dead_at_ms,
            replayable: replayable.is_ok(),
            not_replayable_reason: replayable.err(),
            lane: envelope.as_ref().map(|envelope| envelope.lane),
            identity: envelope.as_ref().map(|envelope| envelope.identity.clone()),
            model: envelope.as_ref().map(|envelope| envelope.model.clone()),
            created_at_ms: envelope.as_ref().map(|envelope| envelope.created_at_ms),
        }
    }
}

fn record_digest(stored: &str) -> String {
    let mut digest = hex::encode(Sha256::digest(stored.as_bytes()));
    digest.truncate(RECORD_DIGEST_HEX_DIGITS);
    digest
}

pub async fn list_dead_letters(
    state: &AdminState,
    offset: u64,
    limit: u64,
) -> Result<DeadLetterPage, AdminError> {
    let mut page = redis::pipe();
    page.cmd("LLEN")
        .arg(state.keys.dead_letters())
        .cmd("LRANGE")
        .arg(state.keys.dead_letters())
        .arg(offset)
        .arg(offset + limit.max(1) - 1);
    let (total, records): (u64, Vec<String>) =
        state.redis.run(|mut connection| async move { page.query_async(&mut connection).await }).await?;
    let now_ms = unix_time_ms();
    let items = records
        .into_iter()
        .map(|stored| StoredDeadLetter::new(stored).summary(&state.settings, now_ms))
        .collect();
    Ok(DeadLetterPage { total, offset, limit, items })
}

pub async fn replay_one_dead_letter(
    state: &AdminState,
    handle: &DeadLetterHandle,
) -> Result<ReplayedJob, AdminError> {
    let record = find_dead_letter(state, handle).await?;
    let envelope = record
        .replayable_envelope(&state.settings, unix_time_ms())
        .map_err(|reason| AdminError::NotReplayable { id: record.id(), reason })?;
    let position = match requeue(state, &record.stored, &envelope).await? {
        Requeued::Queued(position) => position,
        Requeued::NotInList => return Err(not_found(handle)),
        Requeued::JobActive => return Err(AdminError::DeadLetterJobActive(record.id())),
    };
    Ok(ReplayedJob {
        job_id: envelope.id,
        lane: envelope.lane,
        position,
        deadline_ms: envelope.deadline_ms,
        events_url: format!("/api/chats/{}/events", envelope.id),
    })
}

/// Replays every replayable record that was in the list when the call began (records that die again meanwhile
/// wait for the next call, so a job that keeps failing cannot loop). With `dry_run`, only reports.
pub async fn replay_all_dead_letters(
    state: &AdminState,
    dry_run: bool,
) -> Result<ReplayAllReport, AdminError> {
    let list = state.keys.dead_letters();
    let length_key = list.clone();
    let mut unexamined: u64 =
        state
            .redis
            .run(|mut connection| async move {
                redis::cmd("LLEN").arg(length_key).query_async(&mut connection).await
            })
            .await?;
    let mut report = ReplayAllReport { dry_run, jobs: Vec::new(), not_replayable: Vec::new() };
    // Replayed records leave the list, so the next unexamined one is at `kept`, the number of records left behind.
    let mut kept: u64 = 0;
    while unexamined > 0 {
        let page_key = list.clone();
        let page: Vec<String> = state
            .redis
            .run(|mut connection| async move {
                let last = kept + SCAN_PAGE_SIZE.min(unexamined) - 1;
                redis::cmd("LRANGE").arg(page_key).arg(kept).arg(last).query_async(&mut connection).await
            })
            .await?;
        if page.is_empty() {
            break;
        }
        for stored in page {
            unexamined -= 1;
            let record = StoredDeadLetter::new(stored);
            match record.replayable_envelope(&state.settings, unix_time_ms()) {
                Err(reason) => {
                    kept += 1;
                    report.not_replayable.push(NotReplayableRecord { id: record.id(), reason });
                }
                Ok(envelope) if dry_run => {
                    kept += 1;
                    report.jobs.push(ReplayAllJob {
                        job_id: envelope.id,
                        lane: envelope.lane,
                        position: None,
                    });
                }
                Ok(envelope) => match requeue(state, &record.stored, &envelope).await? {
                    Requeued::Queued(position) => report.jobs.push(ReplayAllJob {
                        job_id: envelope.id,
                        lane: envelope.lane,
                        position: Some(position),
                    }),
                    // Another operator took this record meanwhile; either way it left the list.
                    Requeued::NotInList => {}
                    // Its job is alive (queued or running): the record stays, and is reported.
                    Requeued::JobActive => {
                        kept += 1;
                        report.not_replayable.push(NotReplayableRecord {
                            id: record.id(),
                            reason: "its job is queued or running".to_owned(),
                        });
                    }
                },
            }
        }
    }
    Ok(report)
}

pub async fn drop_dead_letter(
    state: &AdminState,
    handle: &DeadLetterHandle,
) -> Result<DroppedDeadLetter, AdminError> {
    let record = find_dead_letter(state, handle).await?;
    let (keys, stored) = (&state.keys, record.stored.as_str());
    let removed = state
        .redis
        .run(|mut connection| async move { drop_dead_letter_record(&mut connection, keys, stored).await })
        .await?;
    if !removed {
        return Err(not_found(handle));
    }
    tracing::info!(id = %record.id(), "dead letter dropped");
    metrics::counter!("dam_admin_dead_letters_dropped_total").increment(1);
    Ok(DroppedDeadLetter { id: record.id(), job_id: record.decoded.and_then(|letter| letter.job_id) })
}

/// What `requeue` did with one record.
enum Requeued {
    /// Back on its lane at this position.
    Queued(u64),
    /// It was no longer in the list.
    NotInList,
    /// Its job is queued or running: replaying would replace a live copy's state, so it was left alone.
    JobActive,
}

/// Moves one exact record back onto its lane.
async fn requeue(state: &AdminState, stored: &str, envelope: &JobEnvelope) -> Result<Requeued, AdminError> {
    let (keys, stored, envelope_to_queue) = (state.keys.clone(), stored.to_owned(), envelope.clone());
    let ttl_s = state.settings.job_state_ttl_s();
    let queued = state
        .redis
        .run(|mut connection| async move {
            replay_dead_letter(&mut connection, &keys, &stored, &envelope_to_queue, ttl_s).await
        })
        .await?;
    Ok(match queued {
        ReplayOutcome::Queued(job) => {
            // Counted in Redis by the script itself; `/metrics` shows that total as
            // `dam_dead_letters_replayed_total`.
            tracing::info!(job_id = %envelope.id, lane = envelope.lane.as_str(), position = job.position, "dead letter replayed");
            Requeued::Queued(job.position)
        }
        ReplayOutcome::NotInList => Requeued::NotInList,
        ReplayOutcome::JobActive => Requeued::JobActive,
    })
}

/// The first record `handle` names, searched page by page from the oldest.
async fn find_dead_letter(
    state: &AdminState,
    handle: &DeadLetterHandle,
) -> Result<StoredDeadLetter, AdminError> {
    let mut start: u64 = 0;
    loop {
        let list = state.keys.dead_letters();
        let page: Vec<String> = state
            .redis
            .run(|mut connection| async move {
                redis::cmd("LRANGE")
                    .arg(list)
                    .arg(start)
                    .arg(start + SCAN_PAGE_SIZE - 1)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        if page.is_empty() {
            return Err(not_found(handle));
        }
        start += page.len() as u64;
        if let Some(record) =
            page.into_iter().map(StoredDeadLetter::new).find(|record| handle.matches(record))
        {
            return Ok(record);
        }
    }
}

fn not_found(handle: &DeadLetterHandle) -> AdminError {
    AdminError::DeadLetterNotFound(match handle {
        DeadLetterHandle::Job(job_id) => job_id.to_string(),
        DeadLetterHandle::Record(digest) => format!("record-{digest}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_job_ids_or_record_digests_and_nothing_else() {
        let job_id = JobId::new_random();
        assert_eq!(DeadLetterHandle::parse(&job_id.to_string()).expect("job"), DeadLetterHandle::Job(job_id));
        assert_eq!(
            DeadLetterHandle::parse("record-0123456789abcdef").expect("record"),
            DeadLetterHandle::Record("0123456789abcdef".to_owned())
        );
        for bad in ["", "record-", "record-0123456789ABCDEF", "record-0123", "42", "../etc"] {
            assert_eq!(DeadLetterHandle::parse(bad).expect_err(bad).code(), "invalid_field");
        }
    }

    #[test]
    fn a_record_without_a_job_id_is_listed_under_its_digest_and_matched_by_it() {
        let record = StoredDeadLetter::new("{not a dead letter".to_owned());
        let id = record.id();
        assert!(id.starts_with("record-"), "{id}");
        let handle = DeadLetterHandle::parse(&id).expect("its own id parses");
        assert!(handle.matches(&record));
        let summary = record.summary(&Settings::default(), 0);
        assert!(!summary.replayable);
        assert_eq!(summary.reason, "undecodable_record");
    }
}
