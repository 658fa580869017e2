//! settle_upstream_call.lua's backpressure and clock: a throttled call (429) never counts toward the circuit
//! breaker but holds back every start by the provider's Retry-After, and the script reads Redis's clock.

use protocol::RedisKeys;
use protocol::limits::LlmLimits;
use protocol::upstream_capacity::{
    CallOutcome, PermitDecision, PermitRequest, UpstreamPermit, UpstreamPolicy, acquire_upstream_permit,
    settle_upstream_call,
};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use test_support::{RedisServer, unique_key_prefix};

/// A breaker that opens after three calls in four failing, and start slots reservable 250 ms ahead.
fn hair_trigger_policy() -> UpstreamPolicy {
    UpstreamPolicy {
        window_s: 30,
        min_calls: 3,
        failure_ratio: 0.5,
        cool_down_ms: 60_000,
        probes: 1,
        probe_timeout_ms: 5_000,
        start_jitter_allowance_ms: 0,
        start_horizon_ms: 250,
    }
}

const UNLIMITED: LlmLimits =
    LlmLimits { max_requests_per_second: 100_000.0, max_tokens_per_minute: 1_000_000 };

async fn acquire(connection: &mut MultiplexedConnection, keys: &RedisKeys) -> PermitDecision {
    let request = PermitRequest { limits: UNLIMITED, policy: hair_trigger_policy(), reserve_tokens: 1 };
    acquire_upstream_permit(connection, keys, &request).await.expect("acquire runs")
}

async fn granted(connection: &mut MultiplexedConnection, keys: &RedisKeys) -> UpstreamPermit {
    match acquire(connection, keys).await {
        PermitDecision::Granted(permit) => permit,
        other => panic!("expected a permit, got {other:?}"),
    }
}

async fn settle(
    connection: &mut MultiplexedConnection,
    keys: &RedisKeys,
    permit: &UpstreamPermit,
    outcome: CallOutcome,
) -> String {
    settle_upstream_call(connection, keys, permit, 0, outcome, &hair_trigger_policy(), None)
        .await
        .expect("settle runs")
}

async fn redis_time_ms(connection: &mut MultiplexedConnection) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(connection).await.expect("time");
    seconds * 1_000 + micros / 1_000
}

#[tokio::test]
async fn throttled_calls_never_open_the_circuit_where_as_many_failures_do() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    for _ in 0..5 {
        let permit = granted(&mut connection, &keys).await;
        let throttled = CallOutcome::Throttled { retry_after_ms: Some(0) };
        assert_eq!(settle(&mut connection, &keys, &permit, throttled).await, "unchanged");
    }
    let state: Option<String> = connection.hget(keys.circuit_breaker(), "state").await.expect("hget");
    assert_eq!(state, None, "a rate limit is no sign of an unhealthy upstream");
    granted(&mut connection, &keys).await;

    // The same count of real failures does open it: the window works, it just never saw the 429s.
    let mut state = String::new();
    for _ in 0..3 {
        let permit = granted(&mut connection, &keys).await;
        state = settle(&mut connection, &keys, &permit, CallOutcome::Failed).await;
    }
    assert_eq!(state, "open");
}

#[tokio::test]
async fn a_throttled_call_holds_back_every_start_by_the_providers_retry_after() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let permit = granted(&mut connection, &keys).await;
    let throttled = CallOutcome::Throttled { retry_after_ms: Some(30_000) };
    settle(&mut connection, &keys, &permit, throttled).await;

    match acquire(&mut connection, &keys).await {
        // 30 s less the 250 ms horizon, less this test's own delay (far below 5 s).
        PermitDecision::Wait { ms } => {
            assert!((25_000..=29_750).contains(&ms), "waits out Retry-After: {ms}")
        }
        other => panic!("expected to wait, got {other:?}"),
    }
    let state: Option<String> = connection.hget(keys.circuit_breaker(), "state").await.expect("hget");
    assert_eq!(state, None, "waiting is not a circuit opening");
}

#[tokio::test]
async fn a_throttled_call_without_retry_after_holds_back_starts_for_one_second() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let permit = granted(&mut connection, &keys).await;
    let before = redis_time_ms(&mut connection).await as f64;
    settle(&mut connection, &keys, &permit, CallOutcome::Throttled { retry_after_ms: None }).await;

    let next_start: f64 = connection.get(keys.llm_next_start_slot()).await.expect("get");
    let held_back = next_start - before;
    let expected = protocol::upstream_capacity::THROTTLED_HOLD_BACK_WITHOUT_RETRY_AFTER_MS as f64;
    assert!(held_back >= expected && held_back < expected + 5_000.0, "held back {held_back} ms");
    assert!(matches!(acquire(&mut connection, &keys).await, PermitDecision::Wait { .. }));
}

#[tokio::test]
async fn a_shorter_retry_after_never_pulls_an_already_later_start_slot_forward() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let permit = granted(&mut connection, &keys).await;
    settle(&mut connection, &keys, &permit, CallOutcome::Throttled { retry_after_ms: Some(60_000) }).await;
    let first: f64 = connection.get(keys.llm_next_start_slot()).await.expect("get");
    settle(&mut connection, &keys, &permit, CallOutcome::Throttled { retry_after_ms: Some(1_000) }).await;
    let second: f64 = connection.get(keys.llm_next_start_slot()).await.expect("get");
    assert_eq!(first, second);
}

#[tokio::test]
async fn settling_without_a_clock_of_its_own_times_the_circuit_by_redis() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let mut state = String::new();
    for _ in 0..3 {
        let permit = granted(&mut connection, &keys).await;
        state = settle(&mut connection, &keys, &permit, CallOutcome::Failed).await;
    }
    assert_eq!(state, "open");
    let now = redis_time_ms(&mut connection).await;
    let open_until: u64 = connection.hget(keys.circuit_breaker(), "open_until_ms").await.expect("hget");
    let cool_down = hair_trigger_policy().cool_down_ms;
    assert!(
        open_until <= now + cool_down && open_until + 5_000 > now + cool_down,
        "open until Redis's now + the cool-down: {open_until} vs {now}"
    );
    let outcomes: Vec<String> = connection.hkeys(keys.circuit_outcomes()).await.expect("hkeys");
    assert!(outcomes.is_empty(), "the window restarts when the circuit opens: {outcomes:?}");
}
