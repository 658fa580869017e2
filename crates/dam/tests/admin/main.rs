//! The dam's integration tests: a real redis-server, the dam in-process on port 0 and, for the flows that cross
//! services, a gateway, a worker and mock-llm from `test_support`. The CLI tests run the real `dam` binary.

mod api_keys;
mod auth;
mod blocks;
mod cli;
mod cross_site;
mod dead_letters;
mod dead_letters_active;
mod intake;
mod limits;
mod status;
mod support;
