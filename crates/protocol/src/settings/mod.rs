//! Typed settings for every Traffic Dam service, loaded in layers: built-in defaults < `config/*.toml` < `DAM_*`
//! environment variables. One shared type keeps one settings table and lets `make run` configure the whole stack
//! through one environment. Nothing here reads Redis or opens sockets.
//!
//! This file holds the root `Settings` and what is derived from several sections; each section group, the
//! loading and the secrets have a file of their own.

mod llm_section;
mod loading;
mod secrets;
mod service_sections;
mod shared_sections;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;

pub use llm_section::LlmSettings;
pub use loading::{CONFIG_DIRECTORY_VARIABLE, SettingsError};
/// Secrets are `secrecy`'s: they print as `[REDACTED]`, and reading one takes an explicit `expose_secret()`.
pub use secrecy::{ExposeSecret, SecretString};
pub use service_sections::{DamSettings, GatewaySettings, MockLlmSettings, WorkerSettings};
pub use shared_sections::{AuthSettings, ChatSettings, ConfiguredApiKey, RedisSettings, TelemetrySettings};

/// Every service's settings. Each service reads its own sections plus the shared `redis` and `chat` ones.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub redis: RedisSettings,
    pub chat: ChatSettings,
    pub gateway: GatewaySettings,
    pub worker: WorkerSettings,
    pub llm: LlmSettings,
    pub dam: DamSettings,
    pub mock_llm: MockLlmSettings,
    /// The limits in force until an operator changes them live (see [`crate::limits`]).
    pub limits: Limits,
    pub auth: AuthSettings,
    pub telemetry: TelemetrySettings,
}

impl Settings {
    /// The longest a job can live before it ends: its longest wait in the queue plus its longest upstream run.
    pub fn longest_job_life_s(&self) -> u64 {
        self.chat.queue_deadline_s + self.llm.request_timeout_s
    }

    /// How long a job's state hash lives: its longest life, then the time its chat stays replayable.
    pub fn job_state_ttl_s(&self) -> u64 {
        self.longest_job_life_s() + self.chat.replay_ttl_s
    }
}

/// Every setting's dotted name (`section.key`, `limits.tiers.premium.burst`), for documentation checks.
pub fn every_setting_name() -> Vec<String> {
    fn collect(prefix: &str, value: &serde_json::Value, names: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(fields) if !fields.is_empty() => {
                for (field, inner) in fields {
                    let name = if prefix.is_empty() { field.clone() } else { format!("{prefix}.{field}") };
                    collect(&name, inner, names);
                }
            }
            _ => names.push(prefix.to_owned()),
        }
    }
    let mut names = Vec::new();
    collect("", &serde_json::to_value(Settings::default()).expect("settings serialize"), &mut names);
    names
}
