//! The admission decision every chat passes before any work is queued. The connection gate is checked in this
//! process (no Redis work); everything else (blocks, paused intake, open circuit, the caller's rate, duplicates,
//! the caller's active chats and budget, the global queue bound) is decided by one Lua script in one round trip,
//! so the limits hold exactly across any number of gateways. A rejected chat leaves nothing queued.

use std::time::Instant;

use protocol::job_lifecycle::{
    AdmissionDecision, AdmissionRequest, DuplicateCheck, admit_chat, chat_content_digest,
};
use protocol::telemetry::trace_context::{hashed_identity, trace_context_of};
use protocol::{JobEnvelope, JobId, Lane, unix_time_ms};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::app_state::{AppState, OpenStreamGuard};
use crate::caller_identity::Caller;
use crate::chat_request::ValidatedChat;
use crate::error::{GatewayError, RatePolicy, Rejection};
use crate::gateway_metrics::{NO_REASON, count_admission_decision};
use crate::server_timing::ChatTiming;

/// A chat that passed the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmittedChat {
    /// Newly queued: `position` 1 is next in its lane; `created_at_ms` is the envelope's creation time.
    Queued { job_id: JobId, lane: Lane, ticket: u64, position: u64, created_at_ms: u64 },
    /// A duplicate of a chat already queued, running or done: the caller follows that chat.
    Joined { job_id: JobId },
}

impl AdmittedChat {
    pub fn job_id(&self) -> JobId {
        match self {
            AdmittedChat::Queued { job_id, .. } | AdmittedChat::Joined { job_id } => *job_id,
        }
    }
}

/// The per-process connection gate: a streaming response may open only while this gateway holds fewer than
/// `max_open_streams`. Costs no Redis work, so it sheds load even when Redis is the bottleneck. `flow` labels the
/// refusal's count.
pub fn open_stream_slot(state: &AppState, flow: &'static str) -> Result<OpenStreamGuard, GatewayError> {
    let limit = state.limits.borrow().max_open_streams;
    state.open_streams.try_enter(limit as usize).ok_or_else(|| {
        count_admission_decision("too_many_connections", "too_many_connections", flow);
        GatewayError::TooManyConnections { limit }
    })
}

/// Runs the gate for a validated chat and queues it when admitted; the round trip goes into `timing`.
pub async fn admit_chat_request(
    state: &AppState,
    chat: ValidatedChat,
    caller: &Caller,
    idempotency_key: Option<&str>,
    flow: &'static str,
    timing: &mut ChatTiming,
) -> Result<AdmittedChat, GatewayError> {
    let started = Instant::now();
    let settings = &state.settings;
    let limits = state.limits.borrow().clone();
    let caller_limits = caller.limits(&limits);
    let duplicate =
        duplicate_check(&chat, idempotency_key, limits.duplicate_window_s, settings.chat.replay_ttl_s);
    let (envelope, admission_span) = chat_envelope(state, chat, caller, flow);
    let longest_life_s = settings.longest_job_life_s();
    let drain_per_second = state.queue_watch.borrow().total_drain_per_second();
    let request = AdmissionRequest {
        envelope: &envelope,
        now_ms: envelope.created_at_ms,
        // Redis's clock times the limits, so every gateway host measures the same windows.
        fixed_clock_ms: None,
        caller_limits,
        max_queue_depth: limits.max_queue_depth,
        duplicate,
        state_ttl_s: settings.job_state_ttl_s(),
        active_ttl_ms: longest_life_s * 1000,
        drain_per_second,
    };
    let keys = &state.keys;
    let decision = state
        .redis
        .run(|mut connection| async move { admit_chat(&mut connection, keys, &request).await })
        .instrument(admission_span)
        .await;
    let round_trip = started.elapsed();
    metrics::histogram!("dam_gateway_admission_seconds").record(round_trip.as_secs_f64());
    timing.record_admission(round_trip);
    let policy = RatePolicy {
        burst: caller_limits.burst,
        window_s: (f64::from(caller_limits.burst) / caller_limits.rate_per_second).ceil() as u64,
    };
    let decision = match decision {
        Ok(decision) => decision,
        Err(error) => {
            // Redis did not decide: counted, so that a wave of 503s shows up next to the gate's refusals.
            count_admission_decision("error", "backend_unavailable", flow);
            return Err(error.into());
        }
    };
    let (decision_label, reason_label, outcome) = admission_outcome(decision, &envelope, policy);
    count_admission_decision(decision_label, reason_label, flow);
    outcome
}

/// The chat's job envelope, and the admission's span: the parent of every later step of the chat, whose
/// context travels in the envelope.
fn chat_envelope(
    state: &AppState,
    chat: ValidatedChat,
    caller: &Caller,
    flow: &'static str,
) -> (JobEnvelope, tracing::Span) {
    // One instant for the envelope's `created_at_ms` and the request's `now_ms`: both name the budget's day, at
    // admission (the reservation) and at the job's end (the settlement).
    let now_ms = unix_time_ms();
    let lane = caller.tier.lane();
    let mut envelope = JobEnvelope::new_chat(
        caller.identity.as_str().to_owned(),
        lane,
        chat.messages,
        chat.model,
        chat.parameters,
        now_ms,
        now_ms + state.settings.chat.queue_deadline_s * 1000,
    );
    let admission_span = tracing::info_span!(
        "chat.admission",
        job_id = %envelope.id,
        lane = lane.as_str(),
        identity_hash = %hashed_identity(caller.identity.as_str()),
        flow,
    );
    envelope.trace_context = trace_context_of(&admission_span);
    (envelope, admission_span)
}

/// The gate's verdict as the admission's count labels and the caller's outcome: `decision` is the verdict,
/// `reason` the code a refused client sees.
fn admission_outcome(
    decision: AdmissionDecision,
    envelope: &JobEnvelope,
    policy: RatePolicy,
) -> (&'static str, &'static str, Result<AdmittedChat, GatewayError>) {
    match decision {
        AdmissionDecision::Admitted { ticket, position, .. } => (
            "admitted",
            NO_REASON,
            Ok(AdmittedChat::Queued {
                job_id: envelope.id,
                lane: envelope.lane,
                ticket,
                position,
                created_at_ms: envelope.created_at_ms,
            }),
        ),
        AdmissionDecision::Joined { job_id, .. } => {
            ("joined", NO_REASON, Ok(AdmittedChat::Joined { job_id }))
        }
        AdmissionDecision::Rejected { reason, retry_after_ms, rate } => (
            "rejected",
            reason.code(),
            Err(GatewayError::Rejected {
                rejection: Rejection {
                    reason,
                    retry_after_ms,
                    rate: rate.map(|standing| (policy, standing)),
                },
            }),
        ),
        AdmissionDecision::IdempotencyKeyReused { .. } => {
            ("rejected", "idempotency_key_reused", Err(GatewayError::IdempotencyKeyReused))
        }
        AdmissionDecision::IdTaken => (
            "error",
            "id_taken",
            Err(GatewayError::Internal("a freshly generated job id already existed".to_owned())),
        ),
    }
}

/// What makes a request a duplicate: its `Idempotency-Key` (for as long as the chat can be replayed), or else its
/// content (model, messages, parameters) within the short duplicate window.
fn duplicate_check(
    chat: &ValidatedChat,
    idempotency_key: Option<&str>,
    duplicate_window_s: u64,
    replay_ttl_s: u64,
) -> Option<DuplicateCheck> {
    if idempotency_key.is_none() && duplicate_window_s == 0 {
        return None;
    }
    // Computed once: it is the content fingerprint, and the gate keeps it with an idempotency key.
    let content_digest = chat_content_digest(&chat.model, &chat.messages, &chat.parameters);
    let (fingerprint, window_s) = match idempotency_key {
        Some(key) => (format!("idem-{}", digest(key.as_bytes())), replay_ttl_s),
        None => (format!("body-{content_digest}"), duplicate_window_s),
    };
    Some(DuplicateCheck { fingerprint, window_ms: window_s * 1000, content_digest })
}

/// A short, collision-safe digest for key names.
fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..16])
}
