//! The gate: `admit_chat` (`lua/admit_chat.lua`) decides on one chat (blocks, maintenance, the circuit, the
//! caller's rate, active chats and daily budget, the queue's depth, duplicates) and queues it when admitted, in one
//! round trip; `enqueue_job` queues with no limit applied, for tools and tests.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, Script, ScriptInvocation};
use sha2::{Digest, Sha256};

use super::{DAY_MS, DOORBELL_CAPACITY};
use crate::job::{ChatMessage, GenerationParameters, JobEnvelope, JobId, Lane};
use crate::keys::{ADMISSION_STATS_BUCKET_S, RedisKeys};
use crate::limits::TierLimits;
use crate::script_runner::run_script;
use crate::token_estimate::estimated_prompt_tokens;

static ADMIT_CHAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/admit_chat.lua")));

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
    let reply: AdmissionReply =
        run_script("admit_chat", &admission_invocation(keys, request), connection).await?;
    admission_decision(reply)
}

/// The reply of `admit_chat.lua`: decision, job id, ticket, position, retry after (ms), and the caller's rate
/// standing (remaining, reset in ms; remaining is negative when the decision carries no standing).
type AdmissionReply = (String, String, i64, i64, i64, i64, i64);

/// `admit_chat.lua` with its KEYS and ARGV (listed at the script's top).
fn admission_invocation<'a>(keys: &RedisKeys, request: &AdmissionRequest<'_>) -> ScriptInvocation<'a> {
    let envelope = request.envelope;
    let identity = envelope.identity.as_str();
    let duplicate_key = request
        .duplicate
        .as_ref()
        .map(|duplicate| keys.duplicate_chat(identity, &duplicate.fingerprint))
        .unwrap_or_default();
    let mut invocation = ADMIT_CHAT.prepare_invoke();
    invocation
        .key(keys.intake_paused())
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
    invocation
}

fn admission_decision(
    (decision, job_id, ticket, position, retry_after_ms, remaining, reset_ms): AdmissionReply,
) -> RedisResult<AdmissionDecision> {
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
