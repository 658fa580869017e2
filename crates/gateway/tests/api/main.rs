//! The gateway's integration tests: each starts a real redis-server, mock-llm, and the services in-process.

mod admission;
mod bad_input;
mod browser_flow;
mod budget_reservations;
mod health;
mod http_connections;
mod observability;
mod openai_flow;
mod own_process;
mod retries_and_reconnects;
mod stream_faults;
mod untrusted_proxies;
