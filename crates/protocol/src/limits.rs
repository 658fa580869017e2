//! The live limits: what the gate admits and what the workers may send upstream. They start from settings
//! (`[limits]`), live in Redis (`{prefix}limits`, written by the dam), and every gateway and worker applies a
//! change within a second without restarting. Validation lives here so every writer refuses the same bad values.

use serde::{Deserialize, Serialize};

use crate::job::Lane;

/// Every live limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most open streaming responses per gateway process; beyond it, 429 `too_many_connections` at once.
    pub max_open_streams: u32,
    /// Most chats waiting in all lanes together; beyond it, 429 `queue_full`.
    pub max_queue_depth: u64,
    /// The same caller sending the same messages within this window joins the existing chat.
    pub duplicate_window_s: u64,
    /// Out of `premium_weight + standard_weight` claims, this many try the premium lane first.
    pub premium_weight: u32,
    /// ...and this many try the standard lane first, so standard traffic is never starved.
    pub standard_weight: u32,
    pub tiers: TierTable,
    pub llm: LlmLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_open_streams: 10_000,
            max_queue_depth: 5_000,
            duplicate_window_s: 10,
            premium_weight: 3,
            standard_weight: 1,
            tiers: TierTable::default(),
            llm: LlmLimits::default(),
        }
    }
}

/// Limits per caller tier. A partial tier (say, only `tiers.premium.burst` in a config file or variable) keeps
/// that tier's defaults for the fields it does not name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierTable {
    /// Callers without a known API key, identified by client IP.
    pub anonymous: TierLimits,
    pub standard: TierLimits,
    pub premium: TierLimits,
}

impl Default for TierTable {
    fn default() -> Self {
        Self {
            anonymous: TierLimits {
                rate_per_second: 1.0,
                burst: 5,
                max_active_chats: 2,
                daily_token_budget: 200_000,
            },
            standard: TierLimits {
                rate_per_second: 5.0,
                burst: 20,
                max_active_chats: 8,
                daily_token_budget: 2_000_000,
            },
            premium: TierLimits {
                rate_per_second: 20.0,
                burst: 60,
                max_active_chats: 32,
                daily_token_budget: 0,
            },
        }
    }
}

impl<'de> Deserialize<'de> for TierTable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PartialTable {
            #[serde(default)]
            anonymous: PartialTier,
            #[serde(default)]
            standard: PartialTier,
            #[serde(default)]
            premium: PartialTier,
        }

        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PartialTier {
            rate_per_second: Option<f64>,
            burst: Option<u32>,
            max_active_chats: Option<u32>,
            daily_token_budget: Option<u64>,
        }

        fn over(defaults: TierLimits, given: PartialTier) -> TierLimits {
            TierLimits {
                rate_per_second: given.rate_per_second.unwrap_or(defaults.rate_per_second),
                burst: given.burst.unwrap_or(defaults.burst),
                max_active_chats: given.max_active_chats.unwrap_or(defaults.max_active_chats),
                daily_token_budget: given.daily_token_budget.unwrap_or(defaults.daily_token_budget),
            }
        }

        let given = PartialTable::deserialize(deserializer)?;
        let defaults = TierTable::default();
        Ok(TierTable {
            anonymous: over(defaults.anonymous, given.anonymous),
            standard: over(defaults.standard, given.standard),
            premium: over(defaults.premium, given.premium),
        })
    }
}

impl TierTable {
    pub fn for_tier(&self, tier: Tier) -> &TierLimits {
        match tier {
            Tier::Anonymous => &self.anonymous,
            Tier::Standard => &self.standard,
            Tier::Premium => &self.premium,
        }
    }
}

/// What one caller of a tier may do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    /// Sustained chats per second (token bucket refill rate).
    pub rate_per_second: f64,
    /// Chats that may be sent at once after a quiet period (bucket size).
    pub burst: u32,
    /// Chats queued or running at once; the fairness guard.
    pub max_active_chats: u32,
    /// Tokens per UTC day; 0 means no budget.
    pub daily_token_budget: u64,
}

/// What the workers together may send upstream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmLimits {
    /// Upstream request starts per second, across all workers.
    pub max_requests_per_second: f64,
    /// Upstream tokens per minute (reserved at `max_tokens`, settled with real usage), across all workers.
    pub max_tokens_per_minute: u64,
}

impl Default for LlmLimits {
    fn default() -> Self {
        Self { max_requests_per_second: 100.0, max_tokens_per_minute: 2_000_000 }
    }
}

/// The tier of a caller; it decides the lane and the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Anonymous,
    Standard,
    Premium,
}

impl Tier {
    pub fn lane(self) -> Lane {
        match self {
            Tier::Premium => Lane::Premium,
            Tier::Anonymous | Tier::Standard => Lane::Standard,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Anonymous => "anonymous",
            Tier::Standard => "standard",
            Tier::Premium => "premium",
        }
    }
}

/// A limit refused, naming the field (dotted path) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct LimitsError {
    pub field: String,
    pub reason: String,
}

impl LimitsError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl Limits {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<(), LimitsError> {
        at_least_one("max_open_streams", u64::from(self.max_open_streams))?;
        at_least_one("max_queue_depth", self.max_queue_depth)?;
        at_least_one("premium_weight", u64::from(self.premium_weight))?;
        at_least_one("standard_weight", u64::from(self.standard_weight))?;
        for (name, tier) in [
            ("anonymous", &self.tiers.anonymous),
            ("standard", &self.tiers.standard),
            ("premium", &self.tiers.premium),
        ] {
            positive_rate(&format!("tiers.{name}.rate_per_second"), tier.rate_per_second)?;
            at_least_one(&format!("tiers.{name}.burst"), u64::from(tier.burst))?;
            at_least_one(&format!("tiers.{name}.max_active_chats"), u64::from(tier.max_active_chats))?;
        }
        positive_rate("llm.max_requests_per_second", self.llm.max_requests_per_second)?;
        at_least_one("llm.max_tokens_per_minute", self.llm.max_tokens_per_minute)?;
        Ok(())
    }

    /// Applies a partial update (a JSON merge patch: only the fields given change), then validates the result.
    pub fn with_patch(&self, patch: &serde_json::Value) -> Result<Limits, LimitsError> {
        if !patch.is_object() {
            return Err(LimitsError::new("(body)", "must be a JSON object of limits"));
        }
        let mut merged = serde_json::to_value(self).expect("limits serialize");
        merge_json(&mut merged, patch);
        let limits: Limits = serde_path_to_error::deserialize(merged).map_err(|error| {
            let field = error.path().to_string();
            LimitsError::new(
                if field == "." { "(body)".to_owned() } else { field },
                error.into_inner().to_string(),
            )
        })?;
        limits.validate()?;
        Ok(limits)
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("limits serialize")
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn at_least_one(field: &str, value: u64) -> Result<(), LimitsError> {
    if value == 0 {
        return Err(LimitsError::new(field, "must be at least 1"));
    }
    Ok(())
}

fn positive_rate(field: &str, value: f64) -> Result<(), LimitsError> {
    if !value.is_finite() || value <= 0.0 {
        return Err(LimitsError::new(field, "must be a number above 0"));
    }
    Ok(())
}

/// RFC 7386 merge: objects merge key by key, anything else replaces.
fn merge_json(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge_json(target.entry(key.clone()).or_insert(serde_json::Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_defaults_are_valid_and_survive_a_round_trip() {
        let limits = Limits::default();
        limits.validate().expect("valid defaults");
        assert_eq!(Limits::decode(&limits.encode()).expect("decodes"), limits);
    }

    #[test]
    fn a_partial_update_changes_only_what_it_names() {
        let updated = Limits::default()
            .with_patch(&json!({"max_queue_depth": 7, "tiers": {"premium": {"burst": 9}}}))
            .expect("valid patch");
        assert_eq!(updated.max_queue_depth, 7);
        assert_eq!(updated.tiers.premium.burst, 9);
        assert_eq!(updated.tiers.premium.rate_per_second, Limits::default().tiers.premium.rate_per_second);
        assert_eq!(updated.tiers.standard, Limits::default().tiers.standard);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let cases = [
            (json!({"tiers": {"standard": {"rate_per_second": -1}}}), "tiers.standard.rate_per_second"),
            (json!({"tiers": {"premium": {"burst": 0}}}), "tiers.premium.burst"),
            (json!({"max_queue_depth": 0}), "max_queue_depth"),
            (json!({"max_queue_depth": "many"}), "max_queue_depth"),
            (json!({"max_qeue_depth": 3}), "max_qeue_depth"),
            (json!({"llm": {"max_requests_per_second": 0}}), "llm.max_requests_per_second"),
            (json!([1]), "(body)"),
        ];
        for (patch, field) in cases {
            let error = Limits::default().with_patch(&patch).expect_err("refused");
            assert_eq!(error.field, field, "{patch} -> {error}");
        }
    }

    #[test]
    fn premium_callers_get_the_premium_lane() {
        assert_eq!(Tier::Premium.lane(), Lane::Premium);
        assert_eq!(Tier::Standard.lane(), Lane::Standard);
        assert_eq!(Tier::Anonymous.lane(), Lane::Standard);
    }
}
