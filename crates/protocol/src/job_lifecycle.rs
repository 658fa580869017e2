//! The atomic steps of a job's life in Redis (enqueue, claim, start, publish and finish), each one Lua script in
//! `lua/` run in one round trip. Services call these instead of touching the queue keys themselves, so every
//! service moves jobs the same way.

use std::sync::LazyLock;

use crate::script_runner::run_script;
use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, Script, ScriptInvocation};
use sha2::{Digest, Sha256};

use crate::dead_letter::{DeadLetter, DeadLetterCaps, count_dropped_dead_letters};
use crate::job::{ChatMessage, GenerationParameters, JobEnvelope, JobId, JobStatus, Lane};
use crate::keys::{ADMISSION_STATS_BUCKET_S, RedisKeys};
use crate::limits::TierLimits;
use crate::stream_event::StreamEvent;
use crate::token_estimate::estimated_prompt_tokens;
use crate::upstream_capacity::{
    PermitDecision, PermitReply, PermitRequest, permit_decision, permit_invocation,
};

static ADMIT_CHAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/admit_chat.lua")));
static CLAIM_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim_job.lua")));
static START_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/start_job.lua")));
static APPEND_STREAM_EVENTS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/append_stream_events.lua")));
static FINISH_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/finish_job.lua")));

/// Most items the worker doorbell holds: enough to wake every idle worker of a large deployment at once.
pub const DOORBELL_CAPACITY: u64 = 1_024;

const DAY_MS: u64 = 86_400_000;

/// Everything the gate needs to decide on one chat.
#[derive(Debug, Clone)]
pub struct AdmissionRequest<'a> {
    pub envelope: &'a JobEnvelope,
    /// When the chat arrived, by the caller's clock: services pass the envelope's `created_at_ms`, the instant
    /// the worker also names the budget's day by, so a chat is reserved and settled on the same day's key. It
    /// names the statistics bucket too. Limits are timed by Redis's clock, not by this.
    pub now_ms: u64,
    /// A fixed clock for the rate, active-chat and circuit windows, for tests only; `None` (what services pass)
    /// times them by Redis's own clock, so gateways on several hosts need no synchronised clocks to be exact.
    pub fixed_clock_ms: Option<u64>,
    /// The caller's limits (its tier's, with any per-key overrides applied).
    pub caller_limits: TierLimits,
    pub max_queue_depth: u64,
    /// A duplicate of an earlier request joins its job instead of creating one.
    pub duplicate: Option<DuplicateCheck>,
    /// How long the job state lives: the longest wait plus run, then the replay time.
    pub state_ttl_s: u64,
    /// The longest a job may count against the caller's active chats (its deadline plus the longest run).
    pub active_ttl_ms: u64,
    /// The measured drain rate, for the `Retry-After` of a full queue (0 when unknown).
    pub drain_per_second: f64,
}

/// What makes two requests the same chat. The gate also keeps the digest of the chat's content
/// ([`chat_content_digest`]) with the key, so one `Idempotency-Key` sent with another content is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateCheck {
    /// A digest of the `Idempotency-Key` or of the request's content.
    pub fingerprint: String,
    pub window_ms: u64,
    /// [`chat_content_digest`] of the chat, computed once by the caller (a content fingerprint is made of it).
    pub content_digest: String,
}

/// The caller's rate-limit standing after a decision, for the `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStanding {
    /// Chats the caller may still send at once.
    pub remaining: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
}

/// Why the gate refused a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionReason {
    Blocked,
    Maintenance,
    UpstreamUnavailable,
    RateLimited,
    TooManyActiveChats,
    BudgetExhausted,
    QueueFull,
}

impl RejectionReason {
    /// Every refusal the gate can decide.
    pub const ALL: [RejectionReason; 7] = [
        RejectionReason::Blocked,
        RejectionReason::Maintenance,
        RejectionReason::UpstreamUnavailable,
        RejectionReason::RateLimited,
        RejectionReason::TooManyActiveChats,
        RejectionReason::BudgetExhausted,
        RejectionReason::QueueFull,
    ];

    /// The machine-readable code clients see.
    pub fn code(self) -> &'static str {
        match self {
            RejectionReason::Blocked => "blocked",
            RejectionReason::Maintenance => "maintenance",
            RejectionReason::UpstreamUnavailable => "upstream_unavailable",
            RejectionReason::RateLimited => "rate_limited",
            RejectionReason::TooManyActiveChats => "too_many_active_chats",
            RejectionReason::BudgetExhausted => "budget_exhausted",
            RejectionReason::QueueFull => "queue_full",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.code() == code)
    }
}

/// The gate's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionDecision {
    /// Queued: `position` 1 is next in its lane.
    Admitted { ticket: u64, position: u64, rate: RateStanding },
    /// A duplicate: the caller joins the existing job.
    Joined { job_id: JobId, rate: RateStanding },
    /// Refused; nothing was queued.
    Rejected { reason: RejectionReason, retry_after_ms: u64, rate: Option<RateStanding> },
    /// A job with this id already exists (ids are random UUIDs, so only a caller reusing one sees this).
    IdTaken,
    /// The `Idempotency-Key` was first used for a different content: nothing was queued or joined.
    IdempotencyKeyReused { rate: RateStanding },
}

/// The digest that tells two chats' contents apart (model, messages and generation parameters): stored with a
/// duplicate key, and the content fingerprint of requests without an `Idempotency-Key`.
pub fn chat_content_digest(
    model: &str,
    messages: &[ChatMessage],
    parameters: &GenerationParameters,
) -> String {
    let content =
        serde_json::to_vec(&(model, messages, parameters)).expect("a chat's content always serializes");
    hex::encode(&Sha256::digest(&content)[..16])
}

/// The most tokens a chat can cost: its prompt's estimate plus every token it may generate. Admission reserves
/// this much of the caller's daily budget.
pub fn budget_reservation(envelope: &JobEnvelope) -> u64 {
    estimated_prompt_tokens(&envelope.messages) + u64::from(envelope.parameters.max_tokens)
}

/// Runs the gate for one chat, queueing it when admitted. One round trip.
pub async fn admit_chat(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    request: &AdmissionRequest<'_>,
) -> RedisResult<AdmissionDecision> {
    let envelope = request.envelope;
    let identity = envelope.identity.as_str();
    let duplicate_key = request
        .duplicate
        .as_ref()
        .map(|duplicate| keys.duplicate_chat(identity, &duplicate.fingerprint))
        .unwrap_or_default();
    let mut invocation = ADMIT_CHAT.key(keys.intake_paused());
    invocation
        .key(keys.circuit_breaker())
        .key(keys.identity_block(identity))
        .key(keys.rate_bucket(identity))
        .key(keys.active_chats(identity))
        .key(duplicate_key)
        .key(keys.token_budget(identity, request.now_ms / DAY_MS))
        .key(keys.admission_counts(request.now_ms / 1000 / ADMISSION_STATS_BUCKET_S))
        .key(keys.job_state(&envelope.id))
        .key(keys.lane_queue(envelope.lane))
        .key(keys.lane_enqueued_tickets(envelope.lane))
        .key(keys.lane_served_tickets(envelope.lane))
        .key(keys.queue_doorbell());
    for lane in Lane::ALL {
        invocation.key(keys.lane_queue(lane));
    }
    let limits = &request.caller_limits;
    invocation
        .arg(request.now_ms)
        .arg(envelope.id.to_string())
        .arg(envelope.encode())
        .arg(identity)
        .arg(envelope.lane.as_str())
        .arg(limits.rate_per_second)
        .arg(limits.burst.max(1))
        .arg(limits.max_active_chats)
        .arg(request.max_queue_depth)
        .arg(request.duplicate.as_ref().map(|duplicate| duplicate.window_ms.max(1)).unwrap_or(0))
        .arg(limits.daily_token_budget)
        .arg(request.state_ttl_s.max(1))
        .arg(DOORBELL_CAPACITY)
        .arg(request.active_ttl_ms.max(1))
        .arg(request.drain_per_second)
        .arg(DAY_MS - request.now_ms % DAY_MS)
        .arg(request.fixed_clock_ms.map(|now_ms| now_ms.to_string()).unwrap_or_default())
        .arg(request.duplicate.as_ref().map(|duplicate| duplicate.content_digest.as_str()).unwrap_or(""))
        // Estimated only when there is a budget to reserve from.
        .arg(if limits.daily_token_budget > 0 { budget_reservation(envelope) } else { 0 })
        .arg(
            envelope
                .trace_context
                .get(crate::telemetry::trace_context::TRACEPARENT)
                .map(String::as_str)
                .unwrap_or(""),
        );
    let (decision, job_id, ticket, position, retry_after_ms, remaining, reset_ms): (
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = run_script("admit_chat", &invocation, connection).await?;
    let rate = (remaining >= 0)
        .then(|| RateStanding { remaining: remaining as u64, reset_ms: reset_ms.max(0) as u64 });
    let unexpected =
        |what: String| RedisError::from((ErrorKind::Client, "unexpected admission answer", what));
    Ok(match decision.as_str() {
        "admitted" => AdmissionDecision::Admitted {
            ticket: ticket as u64,
            position: position.max(1) as u64,
            rate: rate.ok_or_else(|| unexpected(decision.clone()))?,
        },
        "duplicate_id" => AdmissionDecision::IdTaken,
        "idempotency_key_reused" => AdmissionDecision::IdempotencyKeyReused {
            rate: rate.ok_or_else(|| unexpected(decision.clone()))?,
        },
        "joined" => AdmissionDecision::Joined {
            job_id: job_id.parse().map_err(|_| unexpected(job_id.clone()))?,
            rate: rate.ok_or_else(|| unexpected(decision.clone()))?,
        },
        code => AdmissionDecision::Rejected {
            reason: RejectionReason::from_code(code).ok_or_else(|| unexpected(code.to_owned()))?,
            retry_after_ms: retry_after_ms.max(0) as u64,
            rate,
        },
    })
}

/// Where a freshly enqueued job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueuedJob {
    /// The job's ticket in its lane.
    pub ticket: u64,
    /// 1 means next in its lane.
    pub position: u64,
}

/// Queues a job with no limit applied (for tools and tests that place work directly). Returns `None`,
/// changing nothing, if a job with this id already exists.
pub async fn enqueue_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    envelope: &JobEnvelope,
    state_ttl_s: u64,
) -> RedisResult<Option<EnqueuedJob>> {
    let request = AdmissionRequest {
        envelope,
        now_ms: crate::unix_time_ms(),
        fixed_clock_ms: None,
        caller_limits: TierLimits {
            rate_per_second: 1e9,
            burst: u32::MAX,
            max_active_chats: u32::MAX,
            daily_token_budget: 0,
        },
        max_queue_depth: u64::MAX / 2,
        duplicate: None,
        state_ttl_s,
        active_ttl_ms: state_ttl_s * 1000,
        drain_per_second: 0.0,
    };
    match admit_chat(connection, keys, &request).await? {
        AdmissionDecision::Admitted { ticket, position, .. } => Ok(Some(EnqueuedJob { ticket, position })),
        _ => Ok(None),
    }
}

/// A job moved into a worker's processing list, as the exact text that sits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub lane: Lane,
    /// The envelope exactly as stored; needed verbatim to remove it from the processing list later.
    pub raw_envelope: String,
}

/// The lanes in the order one claim tries them: out of every `sum of weights` consecutive turns, a lane comes
/// first `weight` times (weighted round robin over the turn number); the others follow in priority order.
/// `lanes_by_priority` pairs each lane with its weight (at least 1 is used). Each worker keeps its own turn count,
/// so the shares hold across the fleet without a shared counter.
pub fn lanes_in_claim_order(turn: u64, lanes_by_priority: &[(Lane, u32)]) -> Vec<Lane> {
    if lanes_by_priority.is_empty() {
        return Vec::new();
    }
    let total: u64 = lanes_by_priority.iter().map(|(_, weight)| u64::from((*weight).max(1))).sum();
    let slot = turn % total.max(1);
    let mut cumulative = 0;
    let first = lanes_by_priority
        .iter()
        .position(|(_, weight)| {
            cumulative += u64::from((*weight).max(1));
            slot < cumulative
        })
        .unwrap_or(0);
    let first_lane = lanes_by_priority[first].0;
    std::iter::once(first_lane)
        .chain(lanes_by_priority.iter().map(|(lane, _)| *lane).filter(|lane| *lane != first_lane))
        .collect()
}

/// Moves the oldest job of the first non-empty lane of `lanes_in_order` into the worker's processing list.
pub async fn claim_next_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
) -> RedisResult<Option<ClaimedJob>> {
    Ok(claim_jobs(connection, keys, worker_id, lanes_in_order, 1).await?.pop())
}

/// Moves up to `most` of the oldest waiting jobs into the worker's processing list, taking from the lanes in the
/// order given (the first lane until it is empty, then the next). Oldest first; empty when every lane is.
pub async fn claim_jobs(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
    most: usize,
) -> RedisResult<Vec<ClaimedJob>> {
    let reply: ClaimReply =
        run_script("claim_job", &claim_invocation(keys, worker_id, lanes_in_order, most), connection).await?;
    Ok(claimed_jobs(reply, lanes_in_order))
}

/// Blocks on the worker doorbell for up to `limit`, then claims as [`claim_jobs`] does, in one round trip: the
/// claim is pipelined behind the BLPOP, so Redis runs it the moment the doorbell rings (or the wait ends), with no
/// trip back to the worker in between. For the worker's dedicated blocking connection only.
pub async fn wait_for_doorbell_then_claim(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
    most: usize,
    limit: std::time::Duration,
) -> RedisResult<Vec<ClaimedJob>> {
    let claim = claim_invocation(keys, worker_id, lanes_in_order, most);
    let mut pipeline = redis::pipe();
    pipeline.cmd("BLPOP").arg(keys.queue_doorbell()).arg(limit.as_secs_f64()).ignore();
    pipeline.invoke_script(&claim).ignore_errors();
    let (claimed,): (RedisResult<ClaimReply>,) = pipeline.query_async(connection).await?;
    match claimed {
        Ok(reply) => Ok(claimed_jobs(reply, lanes_in_order)),
        // Redis does not know the script (first use, or after a restart): the ordinary call loads it and claims.
        Err(error) if is_unknown_script(&error) => {
            claim_jobs(connection, keys, worker_id, lanes_in_order, most).await
        }
        Err(error) => Err(error),
    }
}

/// The reply of `claim_job.lua`: for each job, the index of its lane in the order given and its envelope.
type ClaimReply = Vec<(usize, String)>;

fn claim_invocation<'a>(
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
    most: usize,
) -> ScriptInvocation<'a> {
    let mut invocation = CLAIM_JOB.prepare_invoke();
    invocation.key(keys.worker_processing_list(worker_id)).key(keys.queue_doorbell());
    for lane in lanes_in_order {
        invocation.key(keys.lane_queue(*lane)).key(keys.lane_served_tickets(*lane));
    }
    invocation.arg(most.max(1));
    invocation
}

fn claimed_jobs(reply: ClaimReply, lanes_in_order: &[Lane]) -> Vec<ClaimedJob> {
    reply
        .into_iter()
        .map(|(lane, raw_envelope)| ClaimedJob { lane: lanes_in_order[lane - 1], raw_envelope })
        .collect()
}

/// What a worker found when it took ownership of a claimed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStart {
    /// The job is this worker's under `attempt` (the fence its writes carry); the replay log holds this many
    /// events (a restarted job's earlier events and the `reset` that start appended after them).
    Started { replay_log_length: u64, attempt: u32, cancel_requested: bool },
    /// The job had already ended (for example cancelled while queued); nothing was changed.
    AlreadyFinal { status: JobStatus, replay_log_length: u64 },
    /// The job's state expired; the envelope is an orphan.
    Missing,
}

/// Records `worker_id` and a fresh attempt as the job's owner, unless it already ended. A job that ran before
/// gets a `reset` event at once (see `start_job.lua`); `new_log_ttl_s` is the TTL of a replay log that creates.
pub async fn start_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    job_id: &JobId,
    worker_id: &str,
    now_ms: u64,
    new_log_ttl_s: u64,
) -> RedisResult<JobStart> {
    let reply: StartReply = run_script(
        "start_job",
        &start_invocation(keys, job_id, worker_id, now_ms, new_log_ttl_s),
        connection,
    )
    .await?;
    Ok(job_start(reply))
}

/// Starts the job as [`start_job`] does and, in the same round trip, asks for an upstream permit for it: on the
/// fast path a job reaches its upstream call one round trip after its claim. The permit answer is `None` when
/// that part of the pipeline failed (the caller asks again the usual way). A permit granted to a job that did
/// not start is the caller's to settle.
pub async fn start_job_with_permit_request(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    job_id: &JobId,
    worker_id: &str,
    now_ms: u64,
    new_log_ttl_s: u64,
    permit: &PermitRequest,
) -> RedisResult<(JobStart, Option<PermitDecision>)> {
    let start = start_invocation(keys, job_id, worker_id, now_ms, new_log_ttl_s);
    let ask = permit_invocation(keys, permit);
    let mut both = redis::pipe();
    both.invoke_script(&start).invoke_script(&ask).ignore_errors();
    let (started, asked): (RedisResult<StartReply>, RedisResult<PermitReply>) =
        both.query_async(connection).await?;
    let started = match started {
        Ok(reply) => job_start(reply),
        // Redis does not know the script (first use, or after a restart): nothing ran; the ordinary call loads
        // it and starts.
        Err(error) if is_unknown_script(&error) => {
            start_job(connection, keys, job_id, worker_id, now_ms, new_log_ttl_s).await?
        }
        Err(error) => return Err(error),
    };
    let asked = match asked {
        Ok(reply) => Some(permit_decision(reply)),
        Err(error) => {
            // Loaded for next time; this job asks again the usual way.
            if is_unknown_script(&error) {
                ask.load_async(connection).await?;
            }
            None
        }
    };
    Ok((started, asked))
}

fn is_unknown_script(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// The reply of `start_job.lua`.
type StartReply = (String, u64, u32, u8);

fn start_invocation<'a>(
    keys: &RedisKeys,
    job_id: &JobId,
    worker_id: &str,
    now_ms: u64,
    new_log_ttl_s: u64,
) -> ScriptInvocation<'a> {
    let mut invocation = START_JOB.prepare_invoke();
    invocation
        .key(keys.job_state(job_id))
        .key(keys.job_replay_log(job_id))
        .key(keys.job_event_channel(job_id))
        .arg(worker_id)
        .arg(now_ms)
        .arg(new_log_ttl_s.max(1));
    invocation
}

fn job_start((status, replay_log_length, attempt, cancel_requested): StartReply) -> JobStart {
    match status.as_str() {
        "running" => {
            JobStart::Started { replay_log_length, attempt, cancel_requested: cancel_requested == 1 }
        }
        "missing" => JobStart::Missing,
        other => match other.parse::<JobStatus>() {
            Ok(status) => JobStart::AlreadyFinal { status, replay_log_length },
            Err(_) => JobStart::Missing,
        },
    }
}

/// The names of one job's stream keys, built once per job rather than once per write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStreamKeys {
    pub replay_log: String,
    pub event_channel: String,
}

impl JobStreamKeys {
    pub fn new(keys: &RedisKeys, job_id: &JobId) -> Self {
        Self { replay_log: keys.job_replay_log(job_id), event_channel: keys.job_event_channel(job_id) }
    }
}

/// Whether a non-final stream write went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        replay_log_length: u64,
    },
    /// The log is not at the length this writer expects: another attempt owns the job now; this writer must stop.
    Fenced,
}

/// Appends a batch of a running job's events (`seq` = log index, consecutive) to its replay log and publishes
/// them as one message. One round trip and no read: the fence is the log length the batch must produce (the
/// last event's seq). `new_log_ttl_s` is given with the attempt's first write only (0 otherwise).
pub async fn append_stream_events(
    connection: &mut impl ConnectionLike,
    stream: &JobStreamKeys,
    events: &[StreamEvent],
    new_log_ttl_s: u64,
) -> RedisResult<AppendOutcome> {
    let Some(last_seq) = events.last().and_then(StreamEvent::seq) else {
        return Err(RedisError::from((ErrorKind::Client, "a stream write needs numbered events")));
    };
    let mut invocation = APPEND_STREAM_EVENTS.key(&stream.replay_log);
    invocation.key(&stream.event_channel).arg(last_seq).arg(new_log_ttl_s);
    for event in events {
        invocation.arg(event.encode());
    }
    let length: i64 = run_script("append_stream_events", &invocation, connection).await?;
    Ok(match length {
        -1 => AppendOutcome::Fenced,
        length => AppendOutcome::Appended { replay_log_length: length.max(0) as u64 },
    })
}

/// Who may end a job: the worker and attempt recorded by [`start_job`].
#[derive(Debug, Clone, Copy)]
pub struct JobFence<'a> {
    pub job_id: &'a JobId,
    /// The caller the job is charged to; a finished job leaves its active chats.
    pub identity: &'a str,
    pub worker_id: &'a str,
    /// The attempt [`start_job`] returned.
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

static RECOVER_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/recover_job.lua")));
static CANCEL_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/cancel_job.lua")));

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

/// What a cancellation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued; it is cancelled and will never start.
    Cancelled,
    /// It runs on `worker_id`, which must be told to abort it.
    Cancelling {
        worker_id: String,
    },
    /// It had already ended with this status.
    AlreadyFinal {
        status: String,
    },
    Missing,
}

/// Cancels a job for its client. `identity` is the caller the job is charged to and `created_at_ms` when it was
/// created (both from its state): a queued job gives back what admission reserved on that day's budget.
#[allow(clippy::too_many_arguments)]
pub async fn cancel_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    job_id: &JobId,
    identity: &str,
    created_at_ms: u64,
    client_message: &str,
    replay_ttl_s: u64,
    now_ms: u64,
) -> RedisResult<CancelOutcome> {
    let (outcome, detail): (String, String) = run_script(
        "cancel_job",
        CANCEL_JOB
            .key(keys.job_state(job_id))
            .key(keys.job_replay_log(job_id))
            .key(keys.job_event_channel(job_id))
            .key(keys.active_chats(identity))
            .key(keys.job_outcome_counts(now_ms / 1000 / ADMISSION_STATS_BUCKET_S))
            .key(keys.token_budget(identity, created_at_ms / DAY_MS))
            .arg(job_id.to_string())
            .arg(now_ms)
            .arg(replay_ttl_s.max(1))
            .arg(client_message),
        connection,
    )
    .await?;
    Ok(match outcome.as_str() {
        "cancelled" => CancelOutcome::Cancelled,
        "cancelling" => CancelOutcome::Cancelling { worker_id: detail },
        "final" => CancelOutcome::AlreadyFinal { status: detail },
        _ => CancelOutcome::Missing,
    })
}

static DEAD_LETTER_JOB: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/dead_letter_job.lua")));

/// Moves a claimed job from the worker's processing list to the dead-letter list, kept within
/// `dead_letter_caps`. Returns false, changing nothing, when the job was no longer in the processing list.
pub async fn dead_letter_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    dead_letter: &DeadLetter,
    dead_letter_caps: DeadLetterCaps,
) -> RedisResult<bool> {
    let (moved, dropped): (i64, u64) = run_script(
        "dead_letter_job",
        DEAD_LETTER_JOB
            .key(keys.worker_processing_list(&dead_letter.worker_id))
            .key(keys.dead_letters())
            .key(keys.dead_letter_bytes())
            .key(keys.dead_letters_dropped())
            .arg(&dead_letter.raw_envelope)
            .arg(dead_letter.encode())
            .arg(dead_letter_caps.max_records)
            .arg(dead_letter_caps.max_bytes),
        connection,
    )
    .await?;
    count_dropped_dead_letters(dropped);
    Ok(moved == 1)
}
