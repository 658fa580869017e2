//! `WorkerError`, the llm-worker's one error type.

use crate::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the job now belongs to another worker or attempt; this attempt stops")]
    Fenced,
    #[error("the job was cancelled by the worker's shutdown")]
    Stopped,
    #[error("the job's client cancelled it")]
    CancelRequested,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("invalid settings: {0}")]
    Settings(String),
}
