//! The upstream LLM as the worker sees it: a stream of text pieces, then how it finished and what it cost.
//! `openai` speaks the OpenAI chat-completions protocol, which OpenAI, OpenRouter and mock-llm all serve.

pub mod openai;

use protocol::Usage;

/// One item of an upstream answer stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// A piece of answer text (one upstream token, roughly).
    Text(String),
    /// Why generation stopped (`stop`, `length`, ...).
    Finished { finish_reason: String },
    /// Token counts as the provider reports them.
    Usage(Usage),
}

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an error status.
    #[error("upstream answered {status}: {message}")]
    Status { status: u16, message: String },
    /// The connection failed or broke, or the provider sent something unreadable.
    #[error("upstream transport failed: {0}")]
    Transport(String),
    /// The provider took longer than allowed.
    #[error("upstream timed out: {0}")]
    Timeout(&'static str),
}
