//! Putting dead letters back on their lanes: one by its handle, or every replayable record of the list. Each
//! record moves in one atomic step (`replay_dead_letter.lua`), refused while its job is queued or running.

use protocol::dead_letter::{ReplayOutcome, replay_dead_letter};
use protocol::{JobEnvelope, unix_time_ms};

use super::stored_record::{DeadLetterHandle, StoredDeadLetter};
use super::{
    NotReplayableRecord, ReplayAllJob, ReplayAllReport, ReplayedJob, SCAN_PAGE_SIZE, find_dead_letter,
    not_found,
};
use crate::app_state::AdminState;
use crate::error::AdminError;

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
