//! The `llm` section: the upstream, OpenAI-compatible LLM the workers call, its timeouts, retries, circuit breaker
//! and start spacing. Its API key is a secret (see `secrets.rs`).

use serde::{Deserialize, Serialize};

use super::SecretString;
use super::secrets::{same_secret, serialize_redacted};

/// The upstream, OpenAI-compatible LLM the workers call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// Base URL including `/v1` (OpenAI: `https://api.openai.com/v1`, OpenRouter: `https://openrouter.ai/api/v1`).
    pub base_url: String,
    /// Read from `DAM_LLM__API_KEY` only; a config file that sets it is refused.
    #[serde(serialize_with = "serialize_redacted")]
    pub api_key: Option<SecretString>,
    /// Longest time to open the upstream connection.
    pub connect_timeout_ms: u64,
    /// Longest time one upstream request may take from start to last token.
    pub request_timeout_s: u64,
    /// Longest wait for the first token.
    pub first_token_timeout_ms: u64,
    /// Longest silence between two tokens.
    pub token_gap_timeout_ms: u64,
    /// Upstream attempts per job for failures that are safe to retry (connect errors, 429, 5xx, a timeout
    /// before the first token).
    pub max_attempts: u32,
    /// First retry delay; it doubles each retry, with full jitter, capped by `retry_max_delay_ms`.
    pub retry_base_delay_ms: u64,
    pub retry_max_delay_ms: u64,
    /// The circuit breaker's sliding window of upstream outcomes.
    pub circuit_window_s: u64,
    /// Fewest calls in the window before the circuit may open.
    pub circuit_min_calls: u32,
    /// Failed share of the calls in the window that opens the circuit.
    pub circuit_failure_ratio: f64,
    /// How long the circuit stays open before probes may test the upstream.
    pub circuit_cool_down_ms: u64,
    /// Probe requests at once while the circuit is half-open.
    pub circuit_probes: u32,
    /// Upstream request starts are spaced evenly, `(1000 + this) / limits.llm.max_requests_per_second` ms
    /// apart: the allowance absorbs the jitter between a start slot and its request reaching the provider, so the
    /// provider never sees more than the limit in any one second, and the drain is `1000 / (1000 + this)` of it.
    pub start_jitter_allowance_ms: u64,
    /// How far ahead a waiting job may reserve its start slot (it then sleeps until the slot).
    pub start_horizon_ms: u64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:9090/v1".to_owned(),
            api_key: None,
            connect_timeout_ms: 2_000,
            request_timeout_s: 120,
            first_token_timeout_ms: 30_000,
            token_gap_timeout_ms: 30_000,
            max_attempts: 3,
            retry_base_delay_ms: 250,
            retry_max_delay_ms: 10_000,
            circuit_window_s: 30,
            circuit_min_calls: 10,
            circuit_failure_ratio: 0.5,
            circuit_cool_down_ms: 15_000,
            circuit_probes: 2,
            start_jitter_allowance_ms: 20,
            start_horizon_ms: 100,
        }
    }
}

/// Field by field, the key by its text (see `same_secret`). The destructuring names every field, so a new one
/// cannot be left out of the comparison.
impl PartialEq for LlmSettings {
    fn eq(&self, other: &Self) -> bool {
        let LlmSettings {
            base_url,
            api_key,
            connect_timeout_ms,
            request_timeout_s,
            first_token_timeout_ms,
            token_gap_timeout_ms,
            max_attempts,
            retry_base_delay_ms,
            retry_max_delay_ms,
            circuit_window_s,
            circuit_min_calls,
            circuit_failure_ratio,
            circuit_cool_down_ms,
            circuit_probes,
            start_jitter_allowance_ms,
            start_horizon_ms,
        } = self;
        *base_url == other.base_url
            && same_secret(api_key, &other.api_key)
            && *connect_timeout_ms == other.connect_timeout_ms
            && *request_timeout_s == other.request_timeout_s
            && *first_token_timeout_ms == other.first_token_timeout_ms
            && *token_gap_timeout_ms == other.token_gap_timeout_ms
            && *max_attempts == other.max_attempts
            && *retry_base_delay_ms == other.retry_base_delay_ms
            && *retry_max_delay_ms == other.retry_max_delay_ms
            && *circuit_window_s == other.circuit_window_s
            && *circuit_min_calls == other.circuit_min_calls
            && *circuit_failure_ratio == other.circuit_failure_ratio
            && *circuit_cool_down_ms == other.circuit_cool_down_ms
            && *circuit_probes == other.circuit_probes
            && *start_jitter_allowance_ms == other.start_jitter_allowance_ms
            && *start_horizon_ms == other.start_horizon_ms
    }
}
