//! The shared vocabulary of Traffic Dam: wire types, every Redis key and channel name, the Lua scripts that change
//! those keys together, and the settings every service reads. Services share nothing else.

pub mod access;
pub mod control;
pub mod dead_letter;
pub mod job;
pub mod job_lifecycle;
pub mod json_body;
pub mod keys;
pub mod limits;
pub mod live_limits;
pub mod redis_connections;
pub mod retry_backoff;
pub mod script_runner;
pub mod service_runtime;
pub mod settings;
pub mod shutdown;
pub mod stream_event;
pub mod telemetry;
pub mod token_estimate;
pub mod upstream_capacity;

pub use job::{ChatMessage, ChatRole, GenerationParameters, JobEnvelope, JobId, JobStatus, Lane};
pub use keys::RedisKeys;
pub use redis_connections::RedisConnections;
pub use settings::Settings;
pub use stream_event::{StreamEvent, Usage};

/// Milliseconds since the Unix epoch, the time unit of every timestamp stored in Redis.
pub fn unix_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
