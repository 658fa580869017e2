//! Test support for Traffic Dam (dev-only): a real redis-server per test, the whole stack in-process on port 0,
//! and an SSE reader. No mocks of Redis; the only fake is mock-llm, which speaks the real OpenAI protocol.

pub mod harness_failure;
pub mod redis_server;
pub mod sample_jobs;
pub mod service_thread;
pub mod sse_client;
mod stack_requests;
pub mod stack_services;
mod stack_waiting;
pub mod test_stack;

pub use harness_failure::HarnessFailure;
pub use redis_server::{RedisServer, free_loopback_port, unique_key_prefix};
pub use sample_jobs::sample_envelope;
pub use service_thread::{ServiceHandle, spawn_service_thread};
pub use sse_client::{SseEvent, SseReader};
pub use stack_services::{spawn_dam, spawn_gateway, spawn_worker};
pub use test_stack::{StackOptions, TestStack, test_settings};
