//! Every Lua script of the job lifecycle, run against a real redis-server.

mod admission;
mod dead_letter_replay;
mod job_lifecycle;
mod upstream_capacity;

use protocol::job::JOB_ENVELOPE_VERSION;
use protocol::{ChatMessage, ChatRole, GenerationParameters, JobEnvelope, JobId, Lane};

/// A small valid envelope in `lane`, charged to `ip:127.0.0.1`.
pub fn envelope(lane: Lane) -> JobEnvelope {
    JobEnvelope {
        version: JOB_ENVELOPE_VERSION,
        id: JobId::new_random(),
        identity: "ip:127.0.0.1".to_owned(),
        lane,
        messages: vec![ChatMessage { role: ChatRole::User, content: "hi".to_owned() }],
        model: "mock-1".to_owned(),
        parameters: GenerationParameters {
            max_tokens: 8,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            presence_penalty: None,
            frequency_penalty: None,
            seed: None,
        },
        created_at_ms: 1,
        deadline_ms: u64::MAX,
        attempt: 1,
        recoveries: 0,
        unattended: false,
        trace_context: Default::default(),
    }
}
