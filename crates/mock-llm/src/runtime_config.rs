//! The default knobs in force right now: they start as the `MockLlmSettings` the server was started with and can be
//! replaced over HTTP (`PUT /config`) so a benchmark can reshape the "upstream" without a restart.

use std::sync::{PoisonError, RwLock};

use protocol::settings::MockLlmSettings;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::error::MockLlmError;
use crate::knobs::{AnswerKnobs, MAX_ANSWER_TOKENS};
use crate::seeded_random::SeededRandom;

/// The current defaults and the seeded generator that decides injected failures and hangs.
#[derive(Debug)]
pub(crate) struct RuntimeConfig {
    settings: RwLock<MockLlmSettings>,
    random: SeededRandom,
}

/// A partial `MockLlmSettings`: fields left out keep their current value. `host` and `port` are accepted, so a whole
/// settings object can be sent back, but ignored: the server is already listening.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MockLlmConfigUpdate {
    #[expect(dead_code, reason = "accepted only so that a whole settings object parses")]
    host: Option<IgnoredAny>,
    #[expect(dead_code, reason = "accepted only so that a whole settings object parses")]
    port: Option<IgnoredAny>,
    models: Option<Vec<String>>,
    tokens_per_answer: Option<u32>,
    time_to_first_token_ms: Option<u64>,
    inter_token_delay_ms: Option<u64>,
    failure_rate: Option<f64>,
    hang_rate: Option<f64>,
    /// Also restarts the generator, so a benchmark can replay the same failure pattern.
    seed: Option<u64>,
}

impl RuntimeConfig {
    pub(crate) fn new(settings: MockLlmSettings) -> Self {
        let random = SeededRandom::new(settings.seed);
        Self { settings: RwLock::new(settings), random }
    }

    /// The defaults every request starts from.
    pub(crate) fn answer_knobs(&self) -> AnswerKnobs {
        AnswerKnobs::from_settings(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn settings(&self) -> MockLlmSettings {
        self.settings.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// True with the given probability, from the seeded generator.
    pub(crate) fn decide(&self, probability: f64) -> bool {
        self.random.decide(probability)
    }

    /// Applies a JSON partial-settings body and returns the settings now in force.
    pub(crate) fn apply_update(&self, body: &[u8]) -> Result<MockLlmSettings, MockLlmError> {
        let update: MockLlmConfigUpdate =
            serde_json::from_slice(body).map_err(|error| MockLlmError::InvalidConfig(error.to_string()))?;
        for (name, rate) in [("failure_rate", update.failure_rate), ("hang_rate", update.hang_rate)] {
            if rate.is_some_and(|rate| !(0.0..=1.0).contains(&rate)) {
                return Err(MockLlmError::InvalidConfig(format!("{name} must be between 0.0 and 1.0")));
            }
        }
        if update.tokens_per_answer.is_some_and(|tokens| tokens > MAX_ANSWER_TOKENS) {
            return Err(MockLlmError::InvalidConfig(format!(
                "tokens_per_answer must be at most {MAX_ANSWER_TOKENS}"
            )));
        }
        let mut settings = self.settings.write().unwrap_or_else(PoisonError::into_inner);
        let MockLlmConfigUpdate {
            models,
            tokens_per_answer,
            time_to_first_token_ms,
            inter_token_delay_ms,
            failure_rate,
            hang_rate,
            seed,
            ..
        } = update;
        if let Some(models) = models {
            settings.models = models;
        }
        settings.tokens_per_answer = tokens_per_answer.unwrap_or(settings.tokens_per_answer);
        settings.time_to_first_token_ms = time_to_first_token_ms.unwrap_or(settings.time_to_first_token_ms);
        settings.inter_token_delay_ms = inter_token_delay_ms.unwrap_or(settings.inter_token_delay_ms);
        settings.failure_rate = failure_rate.unwrap_or(settings.failure_rate);
        settings.hang_rate = hang_rate.unwrap_or(settings.hang_rate);
        if let Some(seed) = seed {
            settings.seed = seed;
            self.random.reseed(seed);
        }
        Ok(settings.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_update_changes_only_the_fields_it_names() {
        let config = RuntimeConfig::new(MockLlmSettings::default());
        let updated = config.apply_update(br#"{"tokens_per_answer": 3, "port": 1}"#).expect("valid update");
        assert_eq!(updated, MockLlmSettings { tokens_per_answer: 3, ..MockLlmSettings::default() });
        assert_eq!(config.answer_knobs().tokens, 3);
    }

    #[test]
    fn out_of_range_rates_and_unknown_fields_are_refused() {
        let config = RuntimeConfig::new(MockLlmSettings::default());
        assert!(config.apply_update(br#"{"failure_rate": 2.0}"#).is_err());
        assert!(config.apply_update(br#"{"tokens": 2}"#).is_err());
        assert_eq!(config.settings(), MockLlmSettings::default());
    }
}
