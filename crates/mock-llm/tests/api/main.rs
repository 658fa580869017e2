//! Integration tests of the mock LLM: each test starts the real server in-process on a free port and talks to it
//! over HTTP, with reqwest or the async-openai client. One test binary keeps link time down.

mod helpers;
mod knobs;
mod models_health_and_config;
mod non_streaming;
mod stats;
mod streaming;
