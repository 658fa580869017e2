//! mock-llm: an OpenAI-compatible fake LLM server with deterministic answers, adjustable timing and injected
//! failures, for development, tests and benchmarks of Traffic Dam. This file only names the modules and the API.

mod answer_stream;
mod answer_text;
mod chat_completions;
mod error;
mod knob_table;
mod knobs;
mod mock_directive;
mod openai_wire;
mod routes;
mod runtime_config;
mod seeded_random;
mod startup;
mod startup_error;
mod stats;

pub use answer_text::{
    MARKUP_ANSWER_FRAGMENTS, answer_text, answer_tokens, count_prompt_tokens, markup_answer_tokens,
};
pub use error::MockLlmError;
pub use knobs::KnobOverrides;
pub use mock_directive::strip_mock_directives;
pub use startup::{MockLlmHandle, run, spawn_mock_llm};
pub use startup_error::StartupError;
pub use stats::MockLlmStats;
