//! admit_chat.lua against arbitrary bounded inputs on a real redis-server: whatever the identity, lane, limits,
//! message size and clock, the gate answers with a decision (admitted, joined or refused), never a script error,
//! and only admitted chats are queued.

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use protocol::job_lifecycle::{
    AdmissionDecision, AdmissionRequest, DuplicateCheck, admit_chat, chat_content_digest,
};
use protocol::limits::TierLimits;
use protocol::{ChatMessage, ChatRole, GenerationParameters, JobEnvelope, Lane, RedisKeys};
use redis::AsyncCommands;
use test_support::{RedisServer, unique_key_prefix};

use crate::property_config;
use crate::strategies::{any_text, lane};

/// One caller's burst of chats under one set of limits.
#[derive(Debug, Clone)]
struct AdmissionCase {
    identity: String,
    lane: Lane,
    limits: TierLimits,
    max_queue_depth: u64,
    duplicate_window_ms: Option<u64>,
    drain_per_second: f64,
    now_ms: u64,
    /// Each chat's message size in bytes and `max_tokens`.
    chats: Vec<(usize, u32)>,
}

/// Rates from one chat a day to a million a second: every value the dam's validation lets through, and beyond.
fn rate_per_second() -> impl Strategy<Value = f64> {
    prop_oneof![(1u64..1_000_000_000).prop_map(|millionths| millionths as f64 / 1e6), Just(1e-9), Just(1e6)]
}

fn admission_case() -> impl Strategy<Value = AdmissionCase> {
    let limits =
        (rate_per_second(), 0u32..10_000, 0u32..1_000, prop_oneof![Just(0u64), any::<u64>(), 0u64..10_000])
            .prop_map(|(rate_per_second, burst, max_active_chats, daily_token_budget)| TierLimits {
                rate_per_second,
                burst,
                max_active_chats,
                daily_token_budget,
            });
    (
        // Identities as a gateway builds them, and arbitrary text (braces, colons, control characters).
        prop_oneof![
            any::<[u8; 4]>().prop_map(|octets| format!("ip:{}", std::net::Ipv4Addr::from(octets))),
            "[0-9a-f]{16}".prop_map(|hash| format!("key:{hash}")),
            any_text(64),
        ],
        lane(),
        limits,
        0u64..10_000,
        proptest::option::of(1u64..600_000),
        prop_oneof![Just(0.0), 0.001f64..10_000.0],
        1_000_000_000_000u64..4_000_000_000_000,
        proptest::collection::vec((0usize..70_000, 1u32..200_000), 1..4),
    )
        .prop_map(
            |(
                identity,
                lane,
                limits,
                max_queue_depth,
                duplicate_window_ms,
                drain_per_second,
                now_ms,
                chats,
            )| {
                AdmissionCase {
                    identity,
                    lane,
                    limits,
                    max_queue_depth,
                    duplicate_window_ms,
                    drain_per_second,
                    now_ms,
                    chats,
                }
            },
        )
}

fn chat(case: &AdmissionCase, message_bytes: usize, max_tokens: u32, index: usize) -> JobEnvelope {
    // Multi-byte text, so a size in bytes is not a size in characters.
    let content: String = "héllo, 世界 ".chars().cycle().take(message_bytes / 2).collect();
    JobEnvelope::new_chat(
        case.identity.clone(),
        case.lane,
        vec![ChatMessage { role: ChatRole::User, content: format!("{index} {content}") }],
        "mock-1".to_owned(),
        GenerationParameters::with_max_tokens(max_tokens),
        case.now_ms,
        case.now_ms + 120_000,
    )
}

#[test]
fn admission_answers_every_bounded_input_with_a_decision_never_a_script_error() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let redis = runtime.block_on(RedisServer::start());
    let connection = runtime.block_on(redis.connection());
    let mut runner = TestRunner::new(property_config());
    let outcome = runner.run(&admission_case(), |case| {
        let keys = RedisKeys::new(unique_key_prefix());
        // The runner's closure is `Fn`; a multiplexed connection is a cheap handle to clone.
        let mut connection = connection.clone();
        let mut admitted = 0;
        for (index, &(message_bytes, max_tokens)) in case.chats.iter().enumerate() {
            let envelope = chat(&case, message_bytes, max_tokens, index);
            let request = AdmissionRequest {
                envelope: &envelope,
                now_ms: case.now_ms + index as u64,
                // The arbitrary clocks are the point: the script is timed by them, not by Redis's.
                fixed_clock_ms: Some(case.now_ms + index as u64),
                caller_limits: case.limits,
                max_queue_depth: case.max_queue_depth,
                duplicate: case.duplicate_window_ms.map(|window_ms| DuplicateCheck {
                    fingerprint: format!("fingerprint-{}", index % 2),
                    window_ms,
                    content_digest: chat_content_digest(
                        &envelope.model,
                        &envelope.messages,
                        &envelope.parameters,
                    ),
                }),
                state_ttl_s: 600,
                active_ttl_ms: 600_000,
                drain_per_second: case.drain_per_second,
            };
            let decision = runtime.block_on(admit_chat(&mut connection, &keys, &request));
            match decision {
                Ok(AdmissionDecision::Admitted { position, .. }) => {
                    admitted += 1;
                    prop_assert_eq!(position, admitted, "each admitted chat queues behind the last");
                }
                Ok(
                    AdmissionDecision::Joined { .. }
                    | AdmissionDecision::Rejected { .. }
                    | AdmissionDecision::IdempotencyKeyReused { .. },
                ) => {}
                Ok(AdmissionDecision::IdTaken) => prop_assert!(false, "a fresh id was called taken"),
                Err(error) => prop_assert!(false, "the gate failed instead of deciding: {error}"),
            }
        }
        let queued: u64 = runtime.block_on(connection.llen(keys.lane_queue(case.lane))).expect("llen");
        prop_assert_eq!(queued, admitted, "a refused or joined chat leaves nothing queued");
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
