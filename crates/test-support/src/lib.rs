//! Test support for Traffic Dam (dev-only): a real redis-server per test, the whole stack in-process on port 0,
//! and an SSE reader. No mocks of Redis; the only fake is mock-llm, which speaks the real OpenAI protocol.

pub mod harness_failure;
pub mod redis_server;
pub mod sample_jobs;
pub mod sse_client;
pub mod test_stack;

pub use harness_failure::HarnessFailure;
pub use redis_server::{RedisServer, free_loopback_port, unique_key_prefix};
pub use sample_jobs::sample_envelope;
pub use sse_client::{SseEvent, SseReader};
pub use test_stack::{
    ServiceHandle, StackOptions, TestStack, spawn_dam, spawn_gateway, spawn_service_thread, spawn_worker,
    test_settings,
};
