//! admit_chat.lua: every check of the gate, with an explicit clock.

use protocol::job_lifecycle::{
    AdmissionDecision, AdmissionRequest, DuplicateCheck, JobEnding, RejectionReason, admit_chat,
    chat_content_digest, claim_next_job, finish_job, start_job,
};
use protocol::keys::ADMISSION_STATS_BUCKET_S;
use protocol::limits::TierLimits;
use protocol::{JobEnvelope, JobStatus, Lane, RedisKeys};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use test_support::{RedisServer, unique_key_prefix};

use crate::{envelope, first_attempt_fence};

const NOW_MS: u64 = 1_800_000_000_000;

fn generous() -> TierLimits {
    TierLimits { rate_per_second: 1000.0, burst: 1000, max_active_chats: 1000, daily_token_budget: 0 }
}

fn request(envelope: &JobEnvelope, now_ms: u64, caller_limits: TierLimits) -> AdmissionRequest<'_> {
    AdmissionRequest {
        envelope,
        now_ms,
        fixed_clock_ms: Some(now_ms),
        caller_limits,
        max_queue_depth: 1000,
        duplicate: None,
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

fn rejection(decision: &AdmissionDecision) -> (RejectionReason, u64) {
    match decision {
        AdmissionDecision::Rejected { reason, retry_after_ms, .. } => (*reason, *retry_after_ms),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn an_admitted_chat_is_queued_counted_active_and_in_the_statistics() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);

    let decision = admit(&mut connection, &keys, &request(&job, NOW_MS, generous())).await;
    let AdmissionDecision::Admitted { ticket, position, rate } = decision else {
        panic!("admitted: {decision:?}")
    };
    assert_eq!((ticket, position), (1, 1));
    assert_eq!(rate.remaining, 999);

    let queued: Vec<String> =
        connection.lrange(keys.lane_queue(Lane::Standard), 0, -1).await.expect("lrange");
    assert_eq!(queued, vec![job.encode()]);
    let active: Vec<String> =
        connection.zrange(keys.active_chats(&job.identity), 0, -1).await.expect("zrange");
    assert_eq!(active, vec![job.id.to_string()]);
    let stats: Option<u64> = connection
        .hget(keys.admission_counts(NOW_MS / 1000 / ADMISSION_STATS_BUCKET_S), "admitted")
        .await
        .expect("hget");
    assert_eq!(stats, Some(1));
}

#[tokio::test]
async fn blocks_paused_intake_and_an_open_circuit_refuse_before_any_limit_is_spent() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);

    let _: () = connection.set_ex(keys.identity_block(&job.identity), "{}", 60).await.expect("set");
    let (reason, retry_after_ms) =
        rejection(&admit(&mut connection, &keys, &request(&job, NOW_MS, generous())).await);
    assert_eq!(reason, RejectionReason::Blocked);
    assert!(retry_after_ms > 50_000 && retry_after_ms <= 60_000, "until the block ends: {retry_after_ms}");
    let _: () = connection.del(keys.identity_block(&job.identity)).await.expect("del");

    let _: () = connection.set(keys.intake_paused(), "{}").await.expect("set");
    let (reason, _) = rejection(&admit(&mut connection, &keys, &request(&job, NOW_MS, generous())).await);
    assert_eq!(reason, RejectionReason::Maintenance);
    let _: () = connection.del(keys.intake_paused()).await.expect("del");

    let _: () = connection
        .hset_multiple(
            keys.circuit_breaker(),
            &[("state", "open"), ("open_until_ms", &(NOW_MS + 5_000).to_string())],
        )
        .await
        .expect("hset");
    let (reason, retry_after_ms) =
        rejection(&admit(&mut connection, &keys, &request(&job, NOW_MS, generous())).await);
    assert_eq!((reason, retry_after_ms), (RejectionReason::UpstreamUnavailable, 5_000));
    let rate: Option<String> = connection.get(keys.rate_bucket(&job.identity)).await.expect("get");
    assert_eq!(rate, None, "three refusals spent no rate");
    // Past its cool-down the circuit lets work through again (the workers probe it).
    let later = admit(&mut connection, &keys, &request(&job, NOW_MS + 5_001, generous())).await;
    let AdmissionDecision::Admitted { rate, .. } = later else { panic!("admitted: {later:?}") };
    assert_eq!(rate.remaining, 999, "the admitted chat spent one of its 1000 burst");

    // The rate state is GCRA's theoretical arrival time: one emission interval (1 ms at 1000 per second) past
    // the admission, so exactly one chat was charged.
    let arrival: String = connection.get(keys.rate_bucket(&job.identity)).await.expect("get");
    let arrival: f64 = arrival.parse().expect("a number of ms");
    assert_eq!(arrival, (NOW_MS + 5_001 + 1) as f64, "only the admitted chat spent rate");
    let rejected: u64 = connection
        .hget(keys.admission_counts(NOW_MS / 1000 / ADMISSION_STATS_BUCKET_S), "maintenance")
        .await
        .expect("hget");
    assert_eq!(rejected, 1);
}

#[tokio::test]
async fn the_rate_allows_a_burst_then_one_chat_per_interval() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let limits = TierLimits { rate_per_second: 2.0, burst: 3, ..generous() };

    for _ in 0..3 {
        let job = envelope(Lane::Standard);
        assert!(matches!(
            admit(&mut connection, &keys, &request(&job, NOW_MS, limits)).await,
            AdmissionDecision::Admitted { .. }
        ));
    }
    let job = envelope(Lane::Standard);
    let (reason, retry_after_ms) =
        rejection(&admit(&mut connection, &keys, &request(&job, NOW_MS, limits)).await);
    assert_eq!((reason, retry_after_ms), (RejectionReason::RateLimited, 500));
    let still = admit(&mut connection, &keys, &request(&job, NOW_MS + 499, limits)).await;
    assert_eq!(rejection(&still).0, RejectionReason::RateLimited);
    assert!(matches!(
        admit(&mut connection, &keys, &request(&job, NOW_MS + 500, limits)).await,
        AdmissionDecision::Admitted { .. }
    ));

    // Over ten seconds: rate x window + burst, exactly.
    let keys = RedisKeys::new(unique_key_prefix());
    let mut admitted = 0;
    for step in 0..=1_000u64 {
        let job = envelope(Lane::Standard);
        if matches!(
            admit(&mut connection, &keys, &request(&job, NOW_MS + step * 10, limits)).await,
            AdmissionDecision::Admitted { .. }
        ) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2 * 10 + 3);
}

#[tokio::test]
async fn a_duplicate_joins_the_first_job_within_its_window() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let first = envelope(Lane::Standard);
    let content_digest = chat_content_digest(&first.model, &first.messages, &first.parameters);
    let duplicate =
        Some(DuplicateCheck { fingerprint: "f00d".to_owned(), window_ms: 10_000, content_digest });
    let second = envelope(Lane::Standard);

    let decision = admit(
        &mut connection,
        &keys,
        &AdmissionRequest { duplicate: duplicate.clone(), ..request(&first, NOW_MS, generous()) },
    )
    .await;
    assert!(matches!(decision, AdmissionDecision::Admitted { .. }));
    let decision = admit(
        &mut connection,
        &keys,
        &AdmissionRequest { duplicate, ..request(&second, NOW_MS + 1, generous()) },
    )
    .await;
    assert!(
        matches!(decision, AdmissionDecision::Joined { job_id, .. } if job_id == first.id),
        "{decision:?}"
    );
    let queued: u64 = connection.llen(keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(queued, 1, "the duplicate created no second job");
}

#[tokio::test]
async fn a_refused_chat_leaves_no_duplicate_key_for_its_retry_to_join() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let limits = TierLimits { max_active_chats: 1, ..generous() };
    let sample = envelope(Lane::Standard);
    let content_digest = chat_content_digest(&sample.model, &sample.messages, &sample.parameters);
    let duplicate =
        Some(DuplicateCheck { fingerprint: "retry-me".to_owned(), window_ms: 10_000, content_digest });
    admit(&mut connection, &keys, &request(&envelope(Lane::Standard), NOW_MS, limits)).await;

    let refused = envelope(Lane::Standard);
    let decision = admit(
        &mut connection,
        &keys,
        &AdmissionRequest { duplicate: duplicate.clone(), ..request(&refused, NOW_MS, limits) },
    )
    .await;
    assert_eq!(rejection(&decision).0, RejectionReason::TooManyActiveChats);
    let left: bool =
        connection.exists(keys.duplicate_chat(&refused.identity, "retry-me")).await.expect("exists");
    assert!(!left, "the refused chat gave its duplicate key back");

    // Its retry, once there is room, is a new chat rather than a join of one that never existed.
    let retry = envelope(Lane::Standard);
    let decision =
        admit(&mut connection, &keys, &AdmissionRequest { duplicate, ..request(&retry, NOW_MS, generous()) })
            .await;
    assert!(matches!(decision, AdmissionDecision::Admitted { .. }), "{decision:?}");
}

#[tokio::test]
async fn the_doorbell_never_holds_more_rings_than_its_capacity() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let capacity = protocol::job_lifecycle::DOORBELL_CAPACITY;
    for index in 0..capacity + 5 {
        let job = envelope(Lane::Standard);
        let limits = TierLimits { burst: 100_000, max_active_chats: 100_000, ..generous() };
        let request = AdmissionRequest { max_queue_depth: 100_000, ..request(&job, NOW_MS + index, limits) };
        admit(&mut connection, &keys, &request).await;
    }
    let rings: u64 = connection.llen(keys.queue_doorbell()).await.expect("llen");
    assert_eq!(rings, capacity);
}

#[tokio::test]
async fn a_caller_holds_at_most_its_active_chats_and_a_finished_chat_frees_its_place() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let limits = TierLimits { max_active_chats: 2, ..generous() };
    let first = envelope(Lane::Standard);
    let second = envelope(Lane::Standard);
    let third = envelope(Lane::Standard);
    admit(&mut connection, &keys, &request(&first, NOW_MS, limits)).await;
    admit(&mut connection, &keys, &request(&second, NOW_MS, limits)).await;
    let (reason, _) = rejection(&admit(&mut connection, &keys, &request(&third, NOW_MS, limits)).await);
    assert_eq!(reason, RejectionReason::TooManyActiveChats);

    let claimed =
        claim_next_job(&mut connection, &keys, "w1", &[Lane::Standard]).await.expect("claim").expect("job");
    start_job(&mut connection, &keys, &first.id, "w1", NOW_MS, 60).await.expect("start");
    let fence = first_attempt_fence(&first, &claimed.raw_envelope);
    let ending = JobEnding { status: JobStatus::Done, tokens_used: 0, dead_letter: None };
    let caps = protocol::dead_letter::DeadLetterCaps { max_records: 1, max_bytes: 1 };
    finish_job(&mut connection, &keys, fence, &[], ending, 0, 0, 60, NOW_MS, caps).await.expect("finish");
    assert!(matches!(
        admit(&mut connection, &keys, &request(&third, NOW_MS, limits)).await,
        AdmissionDecision::Admitted { .. }
    ));

    // A job that never finishes stops counting once its longest possible life is over.
    let fourth = envelope(Lane::Standard);
    let (reason, _) = rejection(&admit(&mut connection, &keys, &request(&fourth, NOW_MS, limits)).await);
    assert_eq!(reason, RejectionReason::TooManyActiveChats);
    assert!(matches!(
        admit(&mut connection, &keys, &request(&fourth, NOW_MS + 600_001, limits)).await,
        AdmissionDecision::Admitted { .. }
    ));
}

#[tokio::test]
async fn a_spent_daily_budget_and_a_full_queue_refuse_with_a_computed_retry_after() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);
    let day = NOW_MS / 86_400_000;
    let _: () = connection.set(keys.token_budget(&job.identity, day), 500).await.expect("set");
    let budgeted = TierLimits { daily_token_budget: 500, ..generous() };
    let (reason, retry_after_ms) =
        rejection(&admit(&mut connection, &keys, &request(&job, NOW_MS, budgeted)).await);
    assert_eq!(reason, RejectionReason::BudgetExhausted);
    assert_eq!(retry_after_ms, 86_400_000 - NOW_MS % 86_400_000, "until the UTC day ends");

    let small_queue = |envelope| AdmissionRequest {
        max_queue_depth: 2,
        drain_per_second: 0.5,
        ..request(envelope, NOW_MS, generous())
    };
    let (first, second, third) =
        (envelope(Lane::Standard), envelope(Lane::Premium), envelope(Lane::Standard));
    admit(&mut connection, &keys, &small_queue(&first)).await;
    admit(&mut connection, &keys, &small_queue(&second)).await;
    let (reason, retry_after_ms) = rejection(&admit(&mut connection, &keys, &small_queue(&third)).await);
    assert_eq!(reason, RejectionReason::QueueFull, "the bound counts every lane");
    assert_eq!(retry_after_ms, 2_000, "one place frees in 1 / 0.5 per second");
    let state_exists: bool = connection.exists(keys.job_state(&third.id)).await.expect("exists");
    assert!(!state_exists, "a rejected chat leaves nothing behind");
}
