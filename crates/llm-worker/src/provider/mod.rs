//! The upstream LLM as the worker sees it: a stream of text pieces, then how it finished and what it cost.
//! `openai` speaks the OpenAI chat-completions protocol, which OpenAI, OpenRouter and mock-llm all serve.

pub mod openai;

use std::time::Duration;

use protocol::Usage;
use protocol::upstream_capacity::CallOutcome;

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
    /// The provider answered with an error status (and maybe said when to retry).
    #[error("upstream answered {status}: {message}")]
    Status { status: u16, message: String, retry_after: Option<Duration> },
    /// The connection failed or broke, or the provider sent something unreadable.
    #[error("upstream transport failed: {0}")]
    Transport(String),
    /// The provider took longer than allowed.
    #[error("upstream timed out: {0}")]
    Timeout(&'static str),
}

impl ProviderError {
    /// Whether another attempt may succeed where this one failed: connection failures, 429, 5xx and timeouts.
    /// Only meaningful before the first token: once text went out, a retry would repeat it.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            ProviderError::Transport(_) | ProviderError::Timeout(_) => true,
        }
    }

    /// Whether the failure says the upstream is unhealthy (as opposed to a bad request of ours, or a rate limit):
    /// connection failures, 5xx and timeouts. A 429 is no fault: the upstream is up and asks us to slow down.
    pub fn is_upstream_fault(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => *status >= 500,
            ProviderError::Transport(_) | ProviderError::Timeout(_) => true,
        }
    }

    /// What this failure tells the shared circuit breaker and start pacing: a 429 is backpressure (it holds back
    /// every worker's starts by its `Retry-After`), an upstream fault counts toward opening the circuit, and
    /// anything else (a bad request of ours) says nothing about the upstream.
    pub fn call_outcome(&self) -> CallOutcome {
        match self {
            ProviderError::Status { status: 429, retry_after, .. } => CallOutcome::Throttled {
                retry_after_ms: retry_after.map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            },
            _ if self.is_upstream_fault() => CallOutcome::Failed,
            _ => CallOutcome::Neutral,
        }
    }

    /// The delay the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
