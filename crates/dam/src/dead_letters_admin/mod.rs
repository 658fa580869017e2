//! Inspecting, replaying and dropping dead letters. A dead letter is named by its job id, or, when it has none
//! (its envelope was unreadable), by `record-<16 hex>`: the start of the SHA-256 of the record as stored. Every
//! change is one atomic step on one exact record (`replay_dead_letter.lua`, `LREM`), so no job is ever lost or
//! queued twice, even with several operators at work.
//!
//! Here: the answers' shapes, the listing and the drop. `replay.rs` replays; `stored_record.rs` names and reads
//! one record.

mod replay;
mod stored_record;

use protocol::dead_letter::drop_dead_letter as drop_dead_letter_record;
use protocol::{JobId, Lane, unix_time_ms};
use serde::{Deserialize, Serialize};

pub use replay::{replay_all_dead_letters, replay_one_dead_letter};
pub use stored_record::DeadLetterHandle;
use stored_record::StoredDeadLetter;

use crate::app_state::AdminState;
use crate::error::AdminError;

/// Records read per round trip while searching or replaying the list.
const SCAN_PAGE_SIZE: u64 = 200;

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
