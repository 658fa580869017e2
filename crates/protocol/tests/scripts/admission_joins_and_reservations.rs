//! admit_chat.lua: which chats a duplicate may join, an `Idempotency-Key` reused with another content, the budget
//! reserved at admission, and limits timed by Redis's own clock.

use protocol::job_lifecycle::{
    AdmissionDecision, AdmissionRequest, DuplicateCheck, RejectionReason, admit_chat, budget_reservation,
    cancel_job, chat_content_digest,
};
use protocol::keys::job_state_field;
use protocol::limits::TierLimits;
use protocol::{ChatMessage, ChatRole, JobEnvelope, Lane, RedisKeys};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use test_support::{RedisServer, unique_key_prefix};

use crate::envelope;

const NOW_MS: u64 = 1_800_000_000_000;
const DAY_MS: u64 = 86_400_000;

fn generous() -> TierLimits {
    TierLimits { rate_per_second: 1000.0, burst: 1000, max_active_chats: 1000, daily_token_budget: 0 }
}

fn retried(fingerprint: &str, envelope: &JobEnvelope) -> Option<DuplicateCheck> {
    let content_digest = chat_content_digest(&envelope.model, &envelope.messages, &envelope.parameters);
    Some(DuplicateCheck { fingerprint: fingerprint.to_owned(), window_ms: 60_000, content_digest })
}

fn request<'a>(
    envelope: &'a JobEnvelope,
    caller_limits: TierLimits,
    duplicate: Option<DuplicateCheck>,
) -> AdmissionRequest<'a> {
    AdmissionRequest {
        envelope,
        now_ms: NOW_MS,
        fixed_clock_ms: Some(NOW_MS),
        caller_limits,
        max_queue_depth: 1000,
        duplicate,
        state_ttl_s: 600,
        active_ttl_ms: 600_000,
        drain_per_second: 0.0,
    }
}

async fn admit(
    connection: &mut MultiplexedConnection,
    keys: &RedisKeys,
    request: &AdmissionRequest<'_>,
) -> AdmissionDecision {
    admit_chat(connection, keys, request).await.expect("admission runs")
}

/// The same content as `envelope(lane)` under a new id, as an SDK's automatic retry sends it.
fn retry_of(first: &JobEnvelope) -> JobEnvelope {
    let mut retry = envelope(first.lane);
    retry.messages = first.messages.clone();
    retry.model = first.model.clone();
    retry.parameters = first.parameters.clone();
    retry
}

#[tokio::test]
async fn a_duplicate_never_joins_a_cancelled_failed_expired_or_vanished_chat() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());

    for ending in ["cancelled", "failed", "expired", "vanished", "cancel_requested"] {
        let fingerprint = format!("sdk-retry-{ending}");
        let first = envelope(Lane::Standard);
        let decision =
            admit(&mut connection, &keys, &request(&first, generous(), retried(&fingerprint, &first))).await;
        assert!(matches!(decision, AdmissionDecision::Admitted { .. }), "{ending}: {decision:?}");
        let state = keys.job_state(&first.id);
        match ending {
            // The client's disconnect cancels a queued chat through the real script.
            "cancelled" => {
                cancel_job(
                    &mut connection,
                    &keys,
                    &first.id,
                    &first.identity,
                    first.created_at_ms,
                    "gone",
                    60,
                    NOW_MS,
                )
                .await
                .expect("cancel");
            }
            "vanished" => {
                let _: () = connection.del(&state).await.expect("del");
            }
            // A running chat whose cancel is under way.
            "cancel_requested" => {
                let _: () = connection
                    .hset_multiple(
                        &state,
                        &[(job_state_field::STATUS, "running"), (job_state_field::CANCEL_REQUESTED, "1")],
                    )
                    .await
                    .expect("hset");
            }
            status => {
                let _: () = connection.hset(&state, job_state_field::STATUS, status).await.expect("hset");
            }
        }

        let retry = retry_of(&first);
        let decision =
            admit(&mut connection, &keys, &request(&retry, generous(), retried(&fingerprint, &retry))).await;
        assert!(matches!(decision, AdmissionDecision::Admitted { .. }), "{ending}: a new chat, {decision:?}");

        // The duplicate key now points at the new chat: a third copy joins it, not the dead one.
        let third = retry_of(&first);
        let decision =
            admit(&mut connection, &keys, &request(&third, generous(), retried(&fingerprint, &third))).await;
        assert!(
            matches!(decision, AdmissionDecision::Joined { job_id, .. } if job_id == retry.id),
            "{ending}: joins the retry's chat, {decision:?}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_joins_a_queued_running_or_done_chat() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());

    for status in ["queued", "running", "done"] {
        let fingerprint = format!("joinable-{status}");
        let first = envelope(Lane::Standard);
        admit(&mut connection, &keys, &request(&first, generous(), retried(&fingerprint, &first))).await;
        let _: () =
            connection.hset(keys.job_state(&first.id), job_state_field::STATUS, status).await.expect("hset");
        let retry = retry_of(&first);
        let decision =
            admit(&mut connection, &keys, &request(&retry, generous(), retried(&fingerprint, &retry))).await;
        assert!(
            matches!(decision, AdmissionDecision::Joined { job_id, .. } if job_id == first.id),
            "{status}: {decision:?}"
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_content_is_refused_and_the_same_content_joins() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let first = envelope(Lane::Standard);
    admit(&mut connection, &keys, &request(&first, generous(), retried("idem-key-1", &first))).await;

    let mut other = envelope(Lane::Standard);
    other.messages = vec![ChatMessage { role: ChatRole::User, content: "something else".to_owned() }];
    let decision =
        admit(&mut connection, &keys, &request(&other, generous(), retried("idem-key-1", &other))).await;
    assert!(matches!(decision, AdmissionDecision::IdempotencyKeyReused { .. }), "{decision:?}");
    let queued: u64 = connection.llen(keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(queued, 1, "the reused key queued nothing");
    let other_state: bool = connection.exists(keys.job_state(&other.id)).await.expect("exists");
    assert!(!other_state, "and left no state behind");

    let same = retry_of(&first);
    let decision =
        admit(&mut connection, &keys, &request(&same, generous(), retried("idem-key-1", &same))).await;
    assert!(
        matches!(decision, AdmissionDecision::Joined { job_id, .. } if job_id == first.id),
        "{decision:?}"
    );
}

#[tokio::test]
async fn admission_reserves_the_most_a_chat_can_cost_and_refuses_what_would_overshoot_the_budget() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let first = envelope(Lane::Standard);
    let reservation = budget_reservation(&first);
    // "hi" is one token by the estimate; max_tokens is 8.
    assert_eq!(reservation, 9);
    let budget_key = keys.token_budget(&first.identity, NOW_MS / DAY_MS);
    let _: () = connection.set(&budget_key, 100).await.expect("set");
    // Room for exactly one more chat: 100 used + 9 reserved = 109 ≤ 117 < 118.
    let budgeted = TierLimits { daily_token_budget: 117, ..generous() };

    let decision = admit(&mut connection, &keys, &request(&first, budgeted, None)).await;
    assert!(matches!(decision, AdmissionDecision::Admitted { .. }), "{decision:?}");
    let used: u64 = connection.get(&budget_key).await.expect("get");
    assert_eq!(used, 109, "the reservation is charged at admission");
    let reserved: u64 =
        connection.hget(keys.job_state(&first.id), job_state_field::RESERVED_TOKENS).await.expect("hget");
    assert_eq!(reserved, 9, "and recorded for the worker to settle");
    let ttl: i64 = connection.ttl(&budget_key).await.expect("ttl");
    assert!(ttl == -1, "an existing budget key keeps the TTL it has: {ttl}");

    // Under the old check (used < budget) this chat got in: 109 < 117. Reserved, it would make 118.
    let second = envelope(Lane::Standard);
    let decision = admit(&mut connection, &keys, &request(&second, budgeted, None)).await;
    let AdmissionDecision::Rejected { reason, .. } = decision else { panic!("refused: {decision:?}") };
    assert_eq!(reason, RejectionReason::BudgetExhausted);
    let used: u64 = connection.get(&budget_key).await.expect("get");
    assert_eq!(used, 109, "a refusal reserves nothing");
}

#[tokio::test]
async fn a_chat_refused_for_another_reason_reserves_nothing_and_no_budget_reserves_nothing() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let budgeted = TierLimits { daily_token_budget: 10_000, ..generous() };
    let first = envelope(Lane::Standard);
    let budget_key = keys.token_budget(&first.identity, NOW_MS / DAY_MS);
    admit(
        &mut connection,
        &keys,
        &AdmissionRequest { max_queue_depth: 1, ..request(&first, budgeted, None) },
    )
    .await;
    let used: u64 = connection.get(&budget_key).await.expect("get");
    assert_eq!(used, 9);
    let ttl: i64 = connection.ttl(&budget_key).await.expect("ttl");
    assert!(ttl > 0, "a budget key created by a reservation expires: {ttl}");

    let full = envelope(Lane::Standard);
    let decision = admit(
        &mut connection,
        &keys,
        &AdmissionRequest { max_queue_depth: 1, ..request(&full, budgeted, None) },
    )
    .await;
    assert!(
        matches!(decision, AdmissionDecision::Rejected { reason: RejectionReason::QueueFull, .. }),
        "{decision:?}"
    );
    let used: u64 = connection.get(&budget_key).await.expect("get");
    assert_eq!(used, 9, "the queue-full refusal reserved nothing");

    // Without a budget nothing is reserved, and the state says so.
    let unbudgeted = envelope(Lane::Standard);
    admit(&mut connection, &keys, &request(&unbudgeted, generous(), None)).await;
    let used: u64 = connection.get(&budget_key).await.expect("get");
    assert_eq!(used, 9);
    let reserved: u64 = connection
        .hget(keys.job_state(&unbudgeted.id), job_state_field::RESERVED_TOKENS)
        .await
        .expect("hget");
    assert_eq!(reserved, 0);
}

#[tokio::test]
async fn without_a_fixed_clock_the_rate_is_timed_by_redis_not_by_the_callers_clock() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let one_a_minute = TierLimits { rate_per_second: 1.0 / 60.0, burst: 1, ..generous() };

    // Two gateways whose clocks disagree by an hour: by either clock alone, each chat is the first in its minute.
    let (early, late) = (envelope(Lane::Standard), envelope(Lane::Standard));
    let on_redis_clock = |envelope, now_ms| AdmissionRequest {
        now_ms,
        fixed_clock_ms: None,
        ..request(envelope, one_a_minute, None)
    };
    let first = admit(&mut connection, &keys, &on_redis_clock(&early, NOW_MS)).await;
    assert!(matches!(first, AdmissionDecision::Admitted { .. }), "{first:?}");
    let second = admit(&mut connection, &keys, &on_redis_clock(&late, NOW_MS + 3_600_000)).await;
    assert!(
        matches!(second, AdmissionDecision::Rejected { reason: RejectionReason::RateLimited, .. }),
        "one clock decides both: {second:?}"
    );

    // The rate state is on Redis's clock.
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut connection).await.expect("time");
    let redis_now_ms = seconds * 1000 + micros / 1000;
    let tat: f64 = connection.get(keys.rate_bucket(&early.identity)).await.expect("get");
    assert!(
        tat > (redis_now_ms - 60_000) as f64 && tat <= (redis_now_ms + 60_000) as f64,
        "tat {tat} is within one interval of Redis's now {redis_now_ms}"
    );
}
