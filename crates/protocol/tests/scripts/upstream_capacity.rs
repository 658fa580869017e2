//! acquire_upstream_permit.lua and settle_upstream_call.lua: the global request and token rates and the
//! circuit breaker, against a real Redis.

use protocol::RedisKeys;
use protocol::limits::LlmLimits;
use protocol::upstream_capacity::{
    CallOutcome, PermitDecision, PermitRequest, UpstreamPermit, UpstreamPolicy, acquire_upstream_permit,
    settle_upstream_call,
};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use test_support::{RedisServer, unique_key_prefix};

fn policy() -> UpstreamPolicy {
    UpstreamPolicy {
        window_s: 30,
        min_calls: 3,
        failure_ratio: 0.5,
        cool_down_ms: 60_000,
        probes: 1,
        probe_timeout_ms: 5_000,
        start_jitter_allowance_ms: 20,
        start_horizon_ms: 250,
    }
}

async fn acquire(
    connection: &mut MultiplexedConnection,
    keys: &RedisKeys,
    limits: &LlmLimits,
    reserve: u64,
) -> PermitDecision {
    let request = PermitRequest { limits: *limits, policy: policy(), reserve_tokens: reserve };
    acquire_upstream_permit(connection, keys, &request).await.expect("acquire runs")
}

fn granted(decision: PermitDecision) -> UpstreamPermit {
    match decision {
        PermitDecision::Granted(permit) => permit,
        other => panic!("expected a permit, got {other:?}"),
    }
}

/// A second between starts, and slots reservable 5 s ahead: wide enough that a busy test machine's delays
/// between calls (well under half a second) cannot blur which slot each permit got.
fn one_per_second() -> (LlmLimits, UpstreamPolicy) {
    let limits = LlmLimits { max_requests_per_second: 1.0, max_tokens_per_minute: 1_000_000 };
    (limits, UpstreamPolicy { start_jitter_allowance_ms: 20, start_horizon_ms: 5_000, ..policy() })
}

#[tokio::test]
async fn request_starts_get_evenly_spaced_slots_a_short_way_ahead_and_later_ones_wait() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let (limits, policy) = one_per_second();
    assert_eq!(policy.start_spacing_ms(limits.max_requests_per_second), 1_020.0);
    let request = PermitRequest { limits, policy, reserve_tokens: 10 };
    let mut acquire =
        async || acquire_upstream_permit(&mut connection, &keys, &request).await.expect("acquire runs");
    // Slots 0, 1020, 2040, 3060 and 4080 ms ahead are within the 5 s horizon; each later call starts a little
    // later, so its slot is a little less far ahead.
    for slot in 0..5u64 {
        let start_in_ms = granted(acquire().await).start_in_ms;
        let due = slot * 1_020;
        assert!(start_in_ms <= due && start_in_ms + 500 > due, "slot {slot} is {start_in_ms} ms ahead");
    }
    match acquire().await {
        PermitDecision::Wait { ms } => {
            assert!((1..=200).contains(&ms), "until its slot is within reach: {ms}")
        }
        other => panic!("expected to wait, got {other:?}"),
    }
    let next_slot: String = connection.get(keys.llm_next_start_slot()).await.expect("get");
    let refused = acquire_upstream_permit(
        &mut connection,
        &keys,
        &PermitRequest { limits, policy, reserve_tokens: 10 },
    )
    .await
    .expect("acquire");
    assert!(matches!(refused, PermitDecision::Wait { .. }));
    let unchanged: String = connection.get(keys.llm_next_start_slot()).await.expect("get");
    assert_eq!(next_slot, unchanged, "a refused permit reserves no slot");
}

#[tokio::test]
async fn an_idle_upstream_does_not_save_up_starts_for_a_burst() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let (limits, policy) = one_per_second();
    // A slot long past, as after a quiet minute.
    let _: () = connection.set(keys.llm_next_start_slot(), "1000").await.expect("set");
    let mut starts = Vec::new();
    for _ in 0..2 {
        let permit = acquire_upstream_permit(
            &mut connection,
            &keys,
            &PermitRequest { limits, policy, reserve_tokens: 10 },
        )
        .await
        .expect("acquire");
        starts.push(granted(permit).start_in_ms);
    }
    assert_eq!(starts[0], 0, "{starts:?}");
    assert!(starts[1] > 500, "the second is spaced from now, not from the stale slot: {starts:?}");
}

#[tokio::test]
async fn tokens_are_reserved_up_front_and_unused_ones_given_back() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let limits = LlmLimits { max_requests_per_second: 100_000.0, max_tokens_per_minute: 1_000 };
    let first = granted(acquire(&mut connection, &keys, &limits, 600).await);
    assert_eq!(first.reserved_tokens, 600);
    assert!(
        matches!(acquire(&mut connection, &keys, &limits, 600).await, PermitDecision::Wait { .. }),
        "1200 > 1000"
    );

    settle_upstream_call(
        &mut connection,
        &keys,
        &first,
        100,
        CallOutcome::Ok,
        &policy(),
        protocol::unix_time_ms(),
    )
    .await
    .expect("settle");
    granted(acquire(&mut connection, &keys, &limits, 600).await);
}

#[tokio::test]
async fn failures_open_the_circuit_and_a_successful_probe_closes_it() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let limits = LlmLimits { max_requests_per_second: 100_000.0, max_tokens_per_minute: 1_000_000 };
    let now = protocol::unix_time_ms();
    let mut state = String::new();
    for _ in 0..3 {
        let permit = granted(acquire(&mut connection, &keys, &limits, 1).await);
        state = settle_upstream_call(&mut connection, &keys, &permit, 0, CallOutcome::Failed, &policy(), now)
            .await
            .expect("settle");
    }
    assert_eq!(state, "open");
    match acquire(&mut connection, &keys, &limits, 1).await {
        PermitDecision::CircuitOpen { ms } => assert!(ms > 50_000, "for the cool-down: {ms}"),
        other => panic!("expected the circuit to be open, got {other:?}"),
    }

    // The cool-down is over: one probe at a time.
    let _: () = connection.hset(keys.circuit_breaker(), "open_until_ms", now - 1).await.expect("hset");
    let probe = granted(acquire(&mut connection, &keys, &limits, 1).await);
    assert!(probe.is_probe);
    assert!(matches!(acquire(&mut connection, &keys, &limits, 1).await, PermitDecision::CircuitOpen { .. }));
    let state = settle_upstream_call(&mut connection, &keys, &probe, 1, CallOutcome::Ok, &policy(), now)
        .await
        .expect("settle");
    assert_eq!(state, "closed");
    assert!(!granted(acquire(&mut connection, &keys, &limits, 1).await).is_probe);
}

#[tokio::test]
async fn a_failed_probe_opens_the_circuit_again_and_neutral_outcomes_change_nothing() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let limits = LlmLimits { max_requests_per_second: 100_000.0, max_tokens_per_minute: 1_000_000 };
    let now = protocol::unix_time_ms();
    for _ in 0..5 {
        let permit = granted(acquire(&mut connection, &keys, &limits, 1).await);
        let state =
            settle_upstream_call(&mut connection, &keys, &permit, 0, CallOutcome::Neutral, &policy(), now)
                .await
                .expect("settle");
        assert_eq!(state, "unchanged", "client errors say nothing about the upstream");
    }
    let _: () = connection
        .hset_multiple(
            keys.circuit_breaker(),
            &[("state", "open".to_owned()), ("open_until_ms", (now - 1).to_string())],
        )
        .await
        .expect("hset");
    let probe = granted(acquire(&mut connection, &keys, &limits, 1).await);
    let state = settle_upstream_call(&mut connection, &keys, &probe, 0, CallOutcome::Failed, &policy(), now)
        .await
        .expect("settle");
    assert_eq!(state, "open");
}
