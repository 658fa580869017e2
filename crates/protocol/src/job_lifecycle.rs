//! The atomic steps of a job's life in Redis (enqueue, claim, start, publish and finish), each one Lua script in
//! `lua/` run in one round trip. Services call these instead of touching the queue keys themselves, so every
//! service moves jobs the same way.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

use crate::dead_letter::DeadLetter;
use crate::job::{JobEnvelope, JobId, JobStatus, Lane};
use crate::keys::RedisKeys;
use crate::stream_event::StreamEvent;

static ENQUEUE_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/enqueue_job.lua")));
static CLAIM_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim_job.lua")));
static START_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/start_job.lua")));
static PUBLISH_STREAM_EVENTS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/publish_stream_events.lua")));

/// Most items the worker doorbell holds: enough to wake every idle worker of a large deployment at once.
pub const DOORBELL_CAPACITY: u64 = 1_024;

/// Where a freshly enqueued job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueuedJob {
    /// The job's ticket in its lane.
    pub ticket: u64,
    /// 1 means next in its lane.
    pub position: u64,
}

/// Puts a job at the tail of its lane. Returns `None`, changing nothing, if a job with this id already exists.
pub async fn enqueue_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    envelope: &JobEnvelope,
    state_ttl_s: u64,
) -> RedisResult<Option<EnqueuedJob>> {
    let (ticket, position): (i64, i64) = ENQUEUE_JOB
        .key(keys.lane_queue(envelope.lane))
        .key(keys.job_state(&envelope.id))
        .key(keys.lane_enqueued_tickets(envelope.lane))
        .key(keys.lane_served_tickets(envelope.lane))
        .key(keys.queue_doorbell())
        .arg(envelope.encode())
        .arg(&envelope.identity)
        .arg(envelope.lane.as_str())
        .arg(envelope.created_at_ms)
        .arg(state_ttl_s.max(1))
        .arg(DOORBELL_CAPACITY)
        .invoke_async(connection)
        .await?;
    if ticket < 0 {
        return Ok(None);
    }
    Ok(Some(EnqueuedJob { ticket: ticket as u64, position: position.max(1) as u64 }))
}

/// A job moved into a worker's processing list, as the exact text that sits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub lane: Lane,
    /// The envelope exactly as stored; needed verbatim to remove it from the processing list later.
    pub raw_envelope: String,
}

/// Moves the oldest job of the first non-empty lane (tried in `lanes_in_order`) into the worker's processing list.
pub async fn claim_next_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
) -> RedisResult<Option<ClaimedJob>> {
    let mut invocation = CLAIM_JOB.key(keys.worker_processing_list(worker_id));
    invocation.key(keys.queue_doorbell());
    for lane in lanes_in_order {
        invocation.key(keys.lane_queue(*lane)).key(keys.lane_served_tickets(*lane));
    }
    let claimed: Option<(String, usize)> = invocation.invoke_async(connection).await?;
    Ok(claimed.map(|(raw_envelope, pair)| ClaimedJob { lane: lanes_in_order[pair - 1], raw_envelope }))
}

/// What a worker found when it took ownership of a claimed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStart {
    /// The job is this worker's; the replay log already holds this many events (from earlier attempts).
    Started { replay_log_length: u64 },
    /// The job had already ended (for example cancelled while queued); nothing was changed.
    AlreadyFinal { status: JobStatus, replay_log_length: u64 },
    /// The job's state expired; the envelope is an orphan.
    Missing,
}

/// Records `worker_id` and `attempt` as the job's owner, unless it already ended.
pub async fn start_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    job_id: &JobId,
    worker_id: &str,
    attempt: u32,
    now_ms: u64,
) -> RedisResult<JobStart> {
    let (status, replay_log_length): (String, u64) = START_JOB
        .key(keys.job_state(job_id))
        .key(keys.job_replay_log(job_id))
        .arg(worker_id)
        .arg(attempt)
        .arg(now_ms)
        .invoke_async(connection)
        .await?;
    Ok(match status.as_str() {
        "running" => JobStart::Started { replay_log_length },
        "missing" => JobStart::Missing,
        other => match other.parse::<JobStatus>() {
            Ok(status) => JobStart::AlreadyFinal { status, replay_log_length },
            Err(_) => JobStart::Missing,
        },
    })
}

/// Who may write a job's stream: the worker and attempt recorded by [`start_job`].
#[derive(Debug, Clone, Copy)]
pub struct JobFence<'a> {
    pub job_id: &'a JobId,
    pub worker_id: &'a str,
    pub attempt: u32,
    /// The envelope exactly as claimed.
    pub raw_envelope: &'a str,
}

/// Whether a stream write went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    Appended {
        replay_log_length: u64,
    },
    /// The job belongs to another worker or attempt now; this writer must stop.
    Fenced,
}

/// Appends `events` to the replay log and publishes them, ending the job when `final_status` is given.
pub async fn publish_stream_events(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    fence: JobFence<'_>,
    events: &[StreamEvent],
    final_status: Option<JobStatus>,
    replay_ttl_s: u64,
    now_ms: u64,
) -> RedisResult<PublishOutcome> {
    let mut invocation = PUBLISH_STREAM_EVENTS.key(keys.job_state(fence.job_id));
    invocation
        .key(keys.job_replay_log(fence.job_id))
        .key(keys.job_event_channel(fence.job_id))
        .key(keys.worker_processing_list(fence.worker_id))
        .arg(fence.worker_id)
        .arg(fence.attempt)
        .arg(replay_ttl_s.max(1))
        .arg(final_status.map(JobStatus::as_str).unwrap_or(""))
        .arg(fence.raw_envelope)
        .arg(now_ms);
    for event in events {
        invocation.arg(event.encode());
    }
    let length: i64 = invocation.invoke_async(connection).await?;
    Ok(if length < 0 {
        PublishOutcome::Fenced
    } else {
        PublishOutcome::Appended { replay_log_length: length as u64 }
    })
}

static DEAD_LETTER_JOB: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/dead_letter_job.lua")));

/// Moves a claimed job from the worker's processing list to the dead-letter list. Returns false, changing
/// nothing, when the job was no longer in the processing list.
pub async fn dead_letter_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    dead_letter: &DeadLetter,
) -> RedisResult<bool> {
    let moved: i64 = DEAD_LETTER_JOB
        .key(keys.worker_processing_list(&dead_letter.worker_id))
        .key(keys.dead_letters())
        .arg(&dead_letter.raw_envelope)
        .arg(dead_letter.encode())
        .invoke_async(connection)
        .await?;
    Ok(moved == 1)
}
