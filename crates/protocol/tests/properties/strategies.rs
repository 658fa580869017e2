//! Generators of valid protocol values and of arbitrary (often invalid) wire text.

use std::collections::BTreeMap;

use proptest::prelude::*;
use protocol::dead_letter::DeadLetter;
use protocol::limits::{Limits, LlmLimits, TierLimits, TierTable};
use protocol::{ChatMessage, ChatRole, GenerationParameters, JobEnvelope, JobId, Lane, StreamEvent, Usage};

/// Any text, including control characters, quotes, braces and astral-plane characters, up to `max` chars.
pub fn any_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max).prop_map(|chars| chars.into_iter().collect())
}

/// A job id in its one canonical spelling.
pub fn job_id() -> impl Strategy<Value = JobId> {
    any::<u128>().prop_map(|bits| {
        let hex = format!("{bits:032x}");
        let spelled =
            format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
        spelled.parse().expect("a lowercase hyphenated UUID is a job id")
    })
}

pub fn lane() -> impl Strategy<Value = Lane> {
    prop_oneof![Just(Lane::Standard), Just(Lane::Premium)]
}

fn chat_role() -> impl Strategy<Value = ChatRole> {
    prop_oneof![
        Just(ChatRole::System),
        Just(ChatRole::Developer),
        Just(ChatRole::User),
        Just(ChatRole::Assistant)
    ]
}

/// A finite f32 (JSON has no NaN or infinity, and the gateway refuses them).
fn finite_f32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("finite", |value| value.is_finite())
}

fn generation_parameters() -> impl Strategy<Value = GenerationParameters> {
    (
        any::<u32>(),
        proptest::option::of(finite_f32()),
        proptest::option::of(finite_f32()),
        proptest::collection::vec(any_text(8), 0..4),
        proptest::option::of(finite_f32()),
        proptest::option::of(finite_f32()),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(max_tokens, temperature, top_p, stop, presence_penalty, frequency_penalty, seed)| {
            GenerationParameters {
                max_tokens,
                temperature,
                top_p,
                stop,
                presence_penalty,
                frequency_penalty,
                seed,
            }
        })
}

/// Any envelope this build could write.
pub fn job_envelope() -> impl Strategy<Value = JobEnvelope> {
    (
        job_id(),
        any_text(40),
        lane(),
        proptest::collection::vec((chat_role(), any_text(60)), 0..5),
        any_text(20),
        generation_parameters(),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<bool>()),
        proptest::collection::btree_map(any_text(12), any_text(30), 0..3),
    )
        .prop_map(|(id, identity, lane, messages, model, parameters, numbers, trace_context)| {
            let (created_at_ms, deadline_ms, attempt, recoveries, unattended) = numbers;
            let mut envelope = JobEnvelope::new_chat(
                identity,
                lane,
                messages.into_iter().map(|(role, content)| ChatMessage { role, content }).collect(),
                model,
                parameters,
                created_at_ms,
                deadline_ms,
            );
            envelope.id = id;
            envelope.attempt = attempt;
            envelope.recoveries = recoveries;
            envelope.unattended = unattended;
            envelope.trace_context = trace_context.into_iter().collect::<BTreeMap<_, _>>();
            envelope
        })
}

fn usage() -> impl Strategy<Value = Usage> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(prompt_tokens, completion_tokens, total_tokens)| {
        Usage { prompt_tokens, completion_tokens, total_tokens }
    })
}

/// Any stream event.
pub fn stream_event() -> impl Strategy<Value = StreamEvent> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(position, ahead, eta_ms)| StreamEvent::Queued { position, ahead, eta_ms }),
        (any::<u64>(), any_text(80)).prop_map(|(seq, text)| StreamEvent::Token { seq, text }),
        (any::<u64>(), usage(), any_text(12)).prop_map(|(seq, usage, finish_reason)| StreamEvent::Done {
            seq,
            usage,
            finish_reason
        }),
        (any::<u64>(), any_text(20), any_text(60)).prop_map(|(seq, code, message)| StreamEvent::Error {
            seq,
            code,
            message
        }),
        any::<u64>().prop_map(|seq| StreamEvent::Reset { seq }),
    ]
}

pub fn dead_letter() -> impl Strategy<Value = DeadLetter> {
    (
        proptest::option::of(job_id()),
        any_text(20),
        any_text(60),
        any::<u32>(),
        any_text(20),
        any::<u64>(),
        prop_oneof![any_text(80), job_envelope().prop_map(|envelope| envelope.encode())],
    )
        .prop_map(|(job_id, reason, last_error, attempts, worker_id, dead_at_ms, raw_envelope)| {
            DeadLetter { job_id, reason, last_error, attempts, worker_id, dead_at_ms, raw_envelope }
        })
}

/// A rate as an operator would write it (two decimals), so the JSON text reads back to the same f64.
fn rate() -> impl Strategy<Value = f64> {
    (1u64..100_000_000).prop_map(|hundredths| hundredths as f64 / 100.0)
}

fn tier_limits() -> impl Strategy<Value = TierLimits> {
    (rate(), 1u32..100_000, 1u32..100_000, any::<u64>()).prop_map(
        |(rate_per_second, burst, max_active_chats, daily_token_budget)| TierLimits {
            rate_per_second,
            burst,
            max_active_chats,
            daily_token_budget,
        },
    )
}

/// Any limits that pass validation.
pub fn valid_limits() -> impl Strategy<Value = Limits> {
    (
        (1u32..=u32::MAX, 1u64..=u64::MAX, any::<u64>(), 1u32..1_000, 1u32..1_000),
        (tier_limits(), tier_limits(), tier_limits()),
        (rate(), 1u64..=u64::MAX),
    )
        .prop_map(|(numbers, tiers, llm)| {
            let (max_open_streams, max_queue_depth, duplicate_window_s, premium_weight, standard_weight) =
                numbers;
            Limits {
                max_open_streams,
                max_queue_depth,
                duplicate_window_s,
                premium_weight,
                standard_weight,
                tiers: TierTable { anonymous: tiers.0, standard: tiers.1, premium: tiers.2 },
                llm: LlmLimits { max_requests_per_second: llm.0, max_tokens_per_minute: llm.1 },
            }
        })
}

/// Arbitrary JSON: the shapes a decoder meets when a writer is older, newer or broken.
pub fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any_text(12).prop_map(serde_json::Value::from),
        prop_oneof![
            Just("type"),
            Just("version"),
            Just("seq"),
            Just("token"),
            Just("done"),
            Just("limits_changed"),
            Just("tiers"),
            Just("premium"),
            Just("burst"),
            Just("llm"),
            Just("id"),
            Just("messages"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| serde_json::Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Field names: mostly the protocol's own, so decoders get past their first check.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "version", "id", "identity", "lane", "messages", "model", "parameters", "max_tokens", "created_at_ms",
            "deadline_ms", "attempt", "recoveries", "unattended", "trace_context", "type", "seq", "text", "usage",
            "finish_reason", "code", "message", "position", "ahead", "eta_ms", "job_id", "reason", "last_error",
            "attempts", "worker_id", "dead_at_ms", "raw_envelope", "tiers", "anonymous", "standard", "premium",
            "rate_per_second", "burst", "max_active_chats", "daily_token_budget", "llm", "max_queue_depth",
            "max_requests_per_second", "max_tokens_per_minute", "role", "content",
        ])
        .prop_map(str::to_owned),
        1 => any_text(8),
    ]
}

/// `text` cut at any char boundary and/or with one char replaced: the near misses of a valid encoding.
pub fn mangled(text: String) -> impl Strategy<Value = String> {
    let chars: Vec<char> = text.chars().collect();
    let length = chars.len();
    (0..=length, 0..=length.max(1), any::<char>(), any::<bool>()).prop_map(
        move |(cut, at, replacement, replace)| {
            let mut mangled: Vec<char> = chars[..cut].to_vec();
            if replace && at < mangled.len() {
                mangled[at] = replacement;
            }
            mangled.into_iter().collect()
        },
    )
}
