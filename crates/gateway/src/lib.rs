//! The public HTTP gateway: validates and admits chats, queues them in Redis, and relays their streams to
//! browsers (SSE) and OpenAI SDKs. It never calls the LLM or any other service; Redis is its only peer.

pub mod access_directory;
pub mod admission;
pub mod app_state;
pub mod caller_identity;
pub mod cancellation;
pub mod chat_api;
pub mod chat_page;
pub mod chat_relay;
pub mod chat_request;
pub mod error;
pub mod gateway_metrics;
pub mod health_api;
pub mod http1_connection;
pub mod http1_head;
pub mod http_observation;
pub mod http_server;
pub mod json_body;
pub mod openai_api;
pub mod openai_format;
pub mod queue_watch;
pub mod request_tracing;
pub mod routes;
pub mod server_timing;
pub mod sse_stream;
pub mod startup;
pub mod startup_error;
pub mod stream_router;

pub use error::GatewayError;
pub use startup::run;
pub use startup_error::StartupError;
