//! Job envelopes for tests that put work on the lanes directly, as a gateway would.

use protocol::{ChatMessage, ChatRole, GenerationParameters, JobEnvelope, Lane, unix_time_ms};

/// A one-message chat from `ip:127.0.0.1` in `lane`, created now, with two minutes to wait in the queue.
pub fn sample_envelope(prompt: &str, lane: Lane) -> JobEnvelope {
    let now_ms = unix_time_ms();
    JobEnvelope::new_chat(
        "ip:127.0.0.1".to_owned(),
        lane,
        vec![ChatMessage { role: ChatRole::User, content: prompt.to_owned() }],
        "mock-1".to_owned(),
        GenerationParameters::with_max_tokens(512),
        now_ms,
        now_ms + 120_000,
    )
}
