//! The upstream LLM's shared capacity: the circuit breaker and the global request and token rates, kept in Redis
//! so that they hold across every worker. A worker asks for a permit before each upstream request and settles
//! it afterwards; each is one Lua script and one round trip.

use std::sync::LazyLock;

use crate::script_runner::run_script;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script, ScriptInvocation};

use crate::keys::RedisKeys;
use crate::limits::LlmLimits;

static ACQUIRE_UPSTREAM_PERMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/acquire_upstream_permit.lua")));
static SETTLE_UPSTREAM_CALL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/settle_upstream_call.lua")));

/// How the upstream is protected: the circuit breaker's judgement, and how request starts are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamPolicy {
    /// The sliding window of outcomes, in seconds.
    pub window_s: u64,
    /// Fewest calls in the window before the circuit may open.
    pub min_calls: u32,
    /// Failed share (0..1) that opens the circuit.
    pub failure_ratio: f64,
    /// How long the circuit stays open before probing.
    pub cool_down_ms: u64,
    /// Probes at once while half-open.
    pub probes: u32,
    /// How long a probe may take before its place is freed.
    pub probe_timeout_ms: u64,
    /// Added to the spacing of starts, spread over one second: room for the jitter between a start slot and its
    /// request reaching the upstream (timers, scheduling), so the upstream never sees more than the limit in any
    /// one-second window. The drain is then `1000 / (1000 + allowance)` of the limit.
    pub start_jitter_allowance_ms: u64,
    /// How far ahead a start slot may be reserved: a job sleeps until its slot, so a short horizon wastes few
    /// slots when reserving jobs are cancelled, and a longer one asks Redis less often.
    pub start_horizon_ms: u64,
}

impl UpstreamPolicy {
    /// The time between two request starts for a limit of `max_requests_per_second`, in ms.
    pub fn start_spacing_ms(&self, max_requests_per_second: f64) -> f64 {
        (1_000.0 + self.start_jitter_allowance_ms as f64) / max_requests_per_second.max(f64::MIN_POSITIVE)
    }
}

/// Leave to call upstream once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPermit {
    /// The second the tokens were reserved in (ms since the epoch / 1000).
    pub reserved_second: u64,
    pub reserved_tokens: u64,
    /// A half-open probe: its outcome closes or reopens the circuit.
    pub is_probe: bool,
    /// The reserved start slot is this far ahead: sleep this long, then call.
    pub start_in_ms: u64,
}

/// The answer to a permit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermitDecision {
    Granted(UpstreamPermit),
    /// The global request or token rate is used up; try again after this long.
    Wait {
        ms: u64,
    },
    /// The circuit is open (or its probes are taken); try again after this long.
    CircuitOpen {
        ms: u64,
    },
}

/// One permit request: what the upstream is asked for, and under which limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PermitRequest {
    pub limits: LlmLimits,
    pub policy: UpstreamPolicy,
    /// The most tokens the request may use (its prompt estimate plus `max_tokens`).
    pub reserve_tokens: u64,
}

/// The reply of `acquire_upstream_permit.lua`.
pub(crate) type PermitReply = (String, i64, i64, u64, u64);

/// The script call behind [`acquire_upstream_permit`], for callers that send it in a pipeline.
pub(crate) fn permit_invocation<'a>(keys: &RedisKeys, request: &PermitRequest) -> ScriptInvocation<'a> {
    let (limits, policy) = (&request.limits, &request.policy);
    let mut invocation = ACQUIRE_UPSTREAM_PERMIT.prepare_invoke();
    invocation
        .key(keys.circuit_breaker())
        .key(keys.llm_next_start_slot())
        .key(keys.llm_token_use())
        .arg(policy.start_spacing_ms(limits.max_requests_per_second))
        .arg(policy.start_horizon_ms)
        .arg(limits.max_tokens_per_minute.max(1))
        .arg(request.reserve_tokens)
        .arg(policy.probes.max(1))
        .arg(policy.probe_timeout_ms.max(1));
    invocation
}

pub(crate) fn permit_decision(reply: PermitReply) -> PermitDecision {
    let (decision, first, second, reserved_second, start_in_ms) = reply;
    match decision.as_str() {
        "granted" => PermitDecision::Granted(UpstreamPermit {
            reserved_second,
            reserved_tokens: second.max(0) as u64,
            is_probe: first == 1,
            start_in_ms,
        }),
        "wait" => PermitDecision::Wait { ms: first.max(1) as u64 },
        _ => PermitDecision::CircuitOpen { ms: first.max(1) as u64 },
    }
}

/// Asks for leave to start one upstream request.
pub async fn acquire_upstream_permit(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    request: &PermitRequest,
) -> RedisResult<PermitDecision> {
    let reply: PermitReply =
        run_script("acquire_upstream_permit", &permit_invocation(keys, request), connection).await?;
    Ok(permit_decision(reply))
}

/// How long every start waits after a 429 that gave no `Retry-After`: one second, the window of a per-second
/// rate limit (the finest grain providers limit by), so the provider's count has turned over once.
pub const THROTTLED_HOLD_BACK_WITHOUT_RETRY_AFTER_MS: u64 = 1_000;

/// What an upstream call says about the upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    /// A 5xx, a timeout or a broken connection: counts toward opening the circuit.
    Failed,
    /// The provider answered 429: backpressure, not failure. It never counts toward the circuit; it holds back
    /// every worker's next start by the provider's `Retry-After` (in full, however long), or by
    /// [`THROTTLED_HOLD_BACK_WITHOUT_RETRY_AFTER_MS`] when it gave none.
    Throttled {
        retry_after_ms: Option<u64>,
    },
    /// A client error or a cancellation: says nothing about the upstream.
    Neutral,
}

impl CallOutcome {
    fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Failed => "failed",
            CallOutcome::Throttled { .. } => "throttled",
            CallOutcome::Neutral => "neutral",
        }
    }

    /// How long no request may start after this outcome, in ms.
    fn hold_back_ms(self) -> u64 {
        match self {
            CallOutcome::Throttled { retry_after_ms } => {
                retry_after_ms.unwrap_or(THROTTLED_HOLD_BACK_WITHOUT_RETRY_AFTER_MS)
            }
            _ => 0,
        }
    }
}

/// Settles a permit: refunds unused tokens, records the outcome and, for a throttled call, holds back every
/// worker's next start. Returns the circuit state afterwards.
///
/// `now_ms` is `None` in production: the script then reads Redis's clock, so workers whose clocks disagree share
/// one breaker window. A fixed `Some(ms)` (or a plain `u64`) is for tests that need a fixed clock.
pub async fn settle_upstream_call(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    permit: &UpstreamPermit,
    tokens_used: u64,
    outcome: CallOutcome,
    circuit: &UpstreamPolicy,
    now_ms: impl Into<Option<u64>>,
) -> RedisResult<String> {
    let now_argument = now_ms.into().map(|ms| ms.to_string()).unwrap_or_default();
    run_script(
        "settle_upstream_call",
        SETTLE_UPSTREAM_CALL
            .key(keys.circuit_breaker())
            .key(keys.circuit_outcomes())
            .key(keys.llm_token_use())
            .key(keys.llm_next_start_slot())
            .arg(now_argument)
            .arg(permit.reserved_second)
            .arg(permit.reserved_tokens)
            .arg(tokens_used)
            .arg(outcome.as_str())
            .arg(u8::from(permit.is_probe))
            .arg(circuit.window_s.max(1))
            .arg(circuit.min_calls.max(1))
            .arg(circuit.failure_ratio)
            .arg(circuit.cool_down_ms.max(1))
            .arg(outcome.hold_back_ms()),
        connection,
    )
    .await
}
