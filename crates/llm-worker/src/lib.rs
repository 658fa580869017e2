//! The llm-worker: takes jobs off the Redis lanes into its own processing list, streams each answer from the
//! upstream LLM, and writes it in batches to the job's replay log and channel. It never talks to a gateway.

pub mod abandonment;
pub mod cancel_listener;
pub mod error;
pub mod group_commit;
pub mod hand_back;
pub mod health_api;
pub mod heartbeat;
pub mod job_runner;
pub mod job_task;
pub mod provider;
pub mod reaper;
pub mod routes;
pub mod slow_path;
pub mod startup;
pub mod startup_error;
pub mod stream_writer;
pub mod upstream_permits;
pub mod worker_loop;
pub mod worker_metrics;

pub use error::WorkerError;
pub use startup::run;
pub use startup_error::StartupError;
