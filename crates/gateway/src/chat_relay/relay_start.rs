//! Where a relay starts: `RelayStart` (the chat, the resume point, its place in the queue, its trace and times),
//! and `locate_chat`, which builds one from the chat's state in Redis for a client that (re)connects by id.

use std::time::Duration;

use protocol::{JobId, Lane};

use crate::app_state::AppState;
use crate::error::GatewayError;

/// Where a relay starts.
#[derive(Debug, Clone)]
pub struct RelayStart {
    pub job_id: JobId,
    /// Relay only events after this `seq` (0 for all; a reconnecting client's `Last-Event-ID`).
    pub resume_after_seq: u64,
    /// Set while the job waits: its lane, ticket and current position.
    pub queued: Option<QueuedJob>,
    /// The chat's admission `traceparent` when the relay starts in a request of its own (a browser's event
    /// stream), so the relay's span joins the chat's trace; `None` inside the admitting request.
    pub traceparent: Option<String>,
    /// When the chat was created (ms since the epoch), where its time to first token starts; `None` if unknown.
    pub created_at_ms: Option<u64>,
    /// When a worker last started the chat (ms since the epoch); `None` while it waits.
    pub started_at_ms: Option<u64>,
}

impl RelayStart {
    /// How long the chat waited in its queue, once a worker has started it.
    pub fn queue_wait(&self) -> Option<Duration> {
        queue_wait(self.created_at_ms, self.started_at_ms)
    }
}

/// A start after a creation: the queue wait (0 when the two hosts' clocks disagree that far).
fn queue_wait(created_at_ms: Option<u64>, started_at_ms: Option<u64>) -> Option<Duration> {
    Some(Duration::from_millis(started_at_ms?.saturating_sub(created_at_ms?)))
}

/// A waiting chat's place: its lane, its ticket in that lane, and its position (1 is next).
#[derive(Debug, Clone, Copy)]
pub struct QueuedJob {
    pub lane: Lane,
    pub ticket: u64,
    pub position: u64,
}

/// Finds a chat by id for a client that (re)connects to its events: 404 when unknown, its queue position when
/// it still waits, its creation and start times. One command (HMGET); the position comes from this process's queue snapshot, which is at
/// most one update interval old, so it may start a little high and is corrected by the next update. Only before
/// the first snapshot does it read the lane's served counter too.
pub async fn locate_chat(
    state: &AppState,
    job_id: JobId,
    resume_after_seq: u64,
) -> Result<RelayStart, GatewayError> {
    use protocol::keys::job_state_field;

    let state_key = state.keys.job_state(&job_id);
    let fields: Vec<Option<String>> = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("HMGET")
                .arg(&state_key)
                .arg(&[
                    job_state_field::STATUS,
                    job_state_field::LANE,
                    job_state_field::TICKET,
                    job_state_field::TRACEPARENT,
                    job_state_field::CREATED_AT_MS,
                    job_state_field::STARTED_AT_MS,
                ])
                .query_async(&mut connection)
                .await
        })
        .await?;
    let [status, lane, ticket, traceparent, created_at_ms, started_at_ms] =
        <[Option<String>; 6]>::try_from(fields).unwrap_or_default();
    let Some(status) = status else {
        return Err(GatewayError::ChatNotFound(job_id.to_string()));
    };
    let lane = lane.and_then(|lane| lane.parse::<Lane>().ok());
    let ticket = ticket.and_then(|ticket| ticket.parse::<u64>().ok());
    let queued = match (status.as_str(), lane, ticket) {
        ("queued", Some(lane), Some(ticket)) => {
            let served = served_tickets(state, lane).await?;
            (ticket > served).then(|| QueuedJob { lane, ticket, position: ticket - served })
        }
        _ => None,
    };
    Ok(RelayStart {
        job_id,
        resume_after_seq,
        queued,
        created_at_ms: created_at_ms.and_then(|ms| ms.parse().ok()),
        started_at_ms: started_at_ms.and_then(|ms| ms.parse().ok()),
        traceparent,
    })
}

/// A chat's queue wait from its state (one HMGET), for an answer whose head waits for the whole answer; `None`
/// when the state cannot be read, which costs the answer nothing but this figure.
pub async fn read_queue_wait(state: &AppState, job_id: JobId) -> Option<Duration> {
    use protocol::keys::job_state_field;

    let state_key = state.keys.job_state(&job_id);
    let times: (Option<u64>, Option<u64>) = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("HMGET")
                .arg(&state_key)
                .arg(&[job_state_field::CREATED_AT_MS, job_state_field::STARTED_AT_MS])
                .query_async(&mut connection)
                .await
        })
        .await
        .inspect_err(|error| tracing::debug!(%error, "the queue wait of a finished chat could not be read"))
        .ok()?;
    queue_wait(times.0, times.1)
}

/// The lane's served-ticket counter: from the queue snapshot once there is one, else from Redis.
async fn served_tickets(state: &AppState, lane: Lane) -> Result<u64, GatewayError> {
    let snapshot_served = {
        let snapshot = state.queue_watch.borrow();
        (snapshot.reading > 0).then(|| snapshot.lane(lane).served_tickets)
    };
    if let Some(served) = snapshot_served {
        return Ok(served);
    }
    let counter_key = state.keys.lane_served_tickets(lane);
    let served: Option<u64> = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("GET").arg(&counter_key).query_async(&mut connection).await
        })
        .await?;
    Ok(served.unwrap_or(0))
}
