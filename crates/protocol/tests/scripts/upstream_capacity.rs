//! acquire_upstream_permit.lua and settle_upstream_call.lua: the global request and token rates and the
//! circuit breaker, against a real Redis.

use protocol::RedisKeys;
use protocol::limits::LlmLimits;
use protocol::upstream_capacity::{
    CallOutcome, PermitDecision, UpstreamPermit, UpstreamPolicy, acquire_upstream_permit,
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
        start_margin_ms: 100,
    }
}

async fn acquire(
    connection: &mut MultiplexedConnection,
    keys: &RedisKeys,
    limits: &LlmLimits,
    reserve: u64,
) -> PermitDecision {
    let id = uuid::Uuid::new_v4().to_string();
    acquire_upstream_permit(connection, keys, &id, limits, &policy(), reserve).await.expect("acquire runs")
}

fn granted(decision: PermitDecision) -> UpstreamPermit {
    match decision {
        PermitDecision::Granted(permit) => permit,
        other => panic!("expected a permit, got {other:?}"),
    }
}

#[tokio::test]
async fn request_starts_are_limited_per_sliding_second_and_waiters_learn_how_long() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let limits = LlmLimits { max_requests_per_second: 3.0, max_tokens_per_minute: 1_000_000 };
    for _ in 0..3 {
        granted(acquire(&mut connection, &keys, &limits, 10).await);
    }
    match acquire(&mut connection, &keys, &limits, 10).await {
        PermitDecision::Wait { ms } => {
            assert!((1..=1_100).contains(&ms), "until the oldest start leaves the window: {ms}")
        }
        other => panic!("expected to wait, got {other:?}"),
    }
    let starts: u64 = connection.zcard(keys.llm_request_starts()).await.expect("zcard");
    assert_eq!(starts, 3, "a refused permit records no start");
}

#[tokio::test]
async fn tokens_are_reserved_up_front_and_unused_ones_given_back() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let limits = LlmLimits { max_requests_per_second: 1_000.0, max_tokens_per_minute: 1_000 };
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
    let limits = LlmLimits { max_requests_per_second: 1_000.0, max_tokens_per_minute: 1_000_000 };
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
    let limits = LlmLimits { max_requests_per_second: 1_000.0, max_tokens_per_minute: 1_000_000 };
    let now = protocol::unix_time_ms();
    for _ in 0..5 {
        let permit = granted(acquire(&mut connection, &keys, &limits, 1).await);
        let state =
            settle_upstream_call(&mut connection, &keys, &permit, 0, CallOutcome::Neutral, &policy(), now)
                .await
                .expect("settle");
        assert_eq!(state, "closed", "client errors say nothing about the upstream");
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
