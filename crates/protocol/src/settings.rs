//! Typed settings for every Traffic Dam service, loaded in layers: built-in defaults < `config/*.toml` < `DAM_*`
//! environment variables. One shared type keeps one settings table and lets `make run` configure the whole stack
//! through one environment. Nothing here reads Redis or opens sockets.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::{Limits, Tier};

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

/// How every service reaches Redis.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prepended to every key and channel name, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Multiplexed connections in the pool; each carries many concurrent commands, and commands sent at the same
    /// moment share one write and one read (pipelining), which saves CPU in the service and in Redis. So a few
    /// are enough: more only spread the same commands over more system calls.
    pub pool_size: usize,
    /// Upper bound on one command's round trip, so a dead Redis yields an error instead of a hang.
    pub command_timeout_ms: u64,
    /// Upper bound on opening a connection.
    pub connect_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "dam:".to_owned(),
            pool_size: 2,
            command_timeout_ms: 500,
            connect_timeout_ms: 500,
        }
    }
}

/// What a chat may contain and how long its traces live; read by the gateway (validation) and the worker.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSettings {
    /// The model used when a request names none.
    pub default_model: String,
    /// The models clients may ask for; listed by `GET /v1/models`.
    pub allowed_models: Vec<String>,
    /// Most messages one chat request may carry.
    pub max_messages: usize,
    /// Most characters in one message.
    pub max_message_chars: usize,
    /// `max_tokens` sent upstream when the request names none.
    pub default_max_tokens: u32,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: u32,
    /// How long a job may wait in the queue before it expires unserved.
    pub queue_deadline_s: u64,
    /// How long a finished chat's events stay replayable (and its id known).
    pub replay_ttl_s: u64,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            default_model: "mock-1".to_owned(),
            allowed_models: vec!["mock-1".to_owned()],
            max_messages: 64,
            max_message_chars: 32_000,
            default_max_tokens: 512,
            max_tokens_limit: 4_096,
            queue_deadline_s: 120,
            replay_ttl_s: 600,
        }
    }
}

/// The public HTTP gateway.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    pub host: String,
    /// 0 picks a free port (tests do this).
    pub port: u16,
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: usize,
    /// Interval of SSE keep-alive comments, below common proxy idle timeouts.
    pub sse_keep_alive_s: u64,
    /// How often queued chats are told their position.
    pub queue_update_interval_ms: u64,
    /// On shutdown, how long streams a client cannot resume (OpenAI-compatible ones) may keep running before they
    /// are cut; browser event streams end at once and resume on another gateway.
    pub shutdown_drain_s: u64,
    /// A client must send a request's whole header block within this time (slowloris guard).
    pub header_read_timeout_ms: u64,
    /// A client must send the whole request body within this time; slower gets 408.
    pub body_read_timeout_ms: u64,
    /// Largest request header block; larger gets 431.
    pub max_header_bytes: usize,
    /// A client that takes none of a response's bytes for this long (its receive window stays full) is
    /// disconnected: its stream ends and an OpenAI chat it started is cancelled, so a stalled reader holds
    /// nothing for ever.
    pub response_write_timeout_ms: u64,
    /// Runtime threads of one gateway process; 0 means one per core.
    pub runtime_threads: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            max_body_bytes: 256 * 1024,
            sse_keep_alive_s: 15,
            // Under a second, so a waiting client hears its position at least once a second despite timer jitter.
            queue_update_interval_ms: 750,
            shutdown_drain_s: 10,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_header_bytes: 16_384,
            response_write_timeout_ms: 60_000,
            runtime_threads: 0,
        }
    }
}

/// The llm-worker.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// This worker's name in Redis; empty means host name, process id and a random suffix.
    pub id: String,
    /// Address of the worker's own small HTTP listener (`/metrics`, `/healthz`, `/readyz`).
    pub host: String,
    /// Port of that listener; 0 picks a free port (tests do this). Each worker on one host needs its own.
    pub port: u16,
    /// Most upstream streams this worker runs at once.
    pub concurrency: usize,
    /// A job writes its first token at once, and while a write is in flight the tokens that arrive wait and
    /// go out together with the next write (group commit). This bounds the tokens waiting behind one write:
    /// once reached, the job stops reading the upstream until the write returns.
    pub batch_max_tokens: usize,
    /// How often the worker refreshes its heartbeat key.
    pub heartbeat_interval_ms: u64,
    /// How long the heartbeat key lives without a refresh.
    pub heartbeat_ttl_ms: u64,
    /// Longest single wait for new work before the worker checks for shutdown again.
    pub idle_wait_ms: u64,
    /// On shutdown, how long running jobs may take to finish before they are put back.
    pub drain_timeout_s: u64,
    /// How often a worker looks for dead workers whose jobs need recovering.
    pub reaper_interval_ms: u64,
    /// Recoveries from dead workers after which a job is a poison job and goes to the dead-letter list.
    pub max_recoveries: u32,
    /// A job nobody listens to for this long (counted from when a listener was last seen) is cancelled: its
    /// client went away.
    pub abandon_grace_ms: u64,
    /// Most records the dead-letter list keeps; past it the oldest are dropped (and counted).
    pub dead_letters_max_count: u64,
    /// Most bytes of records the dead-letter list keeps; past it the oldest are dropped (and counted).
    pub dead_letters_max_bytes: u64,
    /// Runtime threads of one worker process; 0 means one per core. A worker mostly waits on sockets, so one
    /// thread carries hundreds of streams, and several worker processes on a small machine do not fight for it.
    pub runtime_threads: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            id: String::new(),
            host: "127.0.0.1".to_owned(),
            port: 9200,
            concurrency: 256,
            batch_max_tokens: 32,
            heartbeat_interval_ms: 1_000,
            heartbeat_ttl_ms: 5_000,
            idle_wait_ms: 2_000,
            drain_timeout_s: 30,
            reaper_interval_ms: 2_000,
            max_recoveries: 3,
            // A client that lost its gateway reconnects after EventSource's retry delay (the gateway sends
            // `retry: 2000`), plus its failed attempt and nginx picking another gateway: a few seconds. 15 s
            // covers a reconnect through a gateway restart several times over, yet frees an abandoned job's slot
            // and tokens soon.
            abandon_grace_ms: 15_000,
            dead_letters_max_count: 10_000,
            dead_letters_max_bytes: 64 * 1024 * 1024,
            runtime_threads: 1,
        }
    }
}

/// The upstream, OpenAI-compatible LLM the workers call.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// Base URL including `/v1` (OpenAI: `https://api.openai.com/v1`, OpenRouter: `https://openrouter.ai/api/v1`).
    pub base_url: String,
    /// Read from `DAM_LLM__API_KEY` only; a config file that sets it is refused.
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

/// The dam admin service.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DamSettings {
    pub host: String,
    pub port: u16,
    /// Bearer token of the admin API. Read from `DAM_DAM__ADMIN_TOKEN` only; without one the dam refuses to
    /// start unless it listens on loopback only.
    pub admin_token: Option<SecretString>,
}

impl Default for DamSettings {
    fn default() -> Self {
        Self { host: "127.0.0.1".to_owned(), port: 9100, admin_token: None }
    }
}

/// Who the gateway believes about callers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Peers allowed to name the client in `X-Forwarded-For` (CIDRs, comma-separated in the environment).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Anonymous IPv6 callers are one identity per network of this prefix length (64: one home or office
    /// network, which holds 2^64 addresses; 128: each address alone). IPv4 callers are always one per address.
    pub ipv6_prefix_len: u8,
    /// API keys known from configuration (by SHA-256; keys managed through the dam add to these).
    pub api_keys: Vec<ConfiguredApiKey>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            trusted_proxies: vec!["127.0.0.0/8".parse().expect("cidr"), "::1/128".parse().expect("cidr")],
            ipv6_prefix_len: 64,
            api_keys: Vec::new(),
        }
    }
}

/// Traces and logs, shared by every service.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/gRPC collector that receives traces (`http://127.0.0.1:4317`); empty turns tracing export off, and
    /// then no span is exported and no exporter thread runs.
    pub otlp_endpoint: String,
    /// Share of new traces sampled, 0.0 to 1.0; a trace started by a caller's sampled `traceparent` is kept.
    pub sample_ratio: f64,
    /// This process's name in logs, traces and the `X-Dam-Instance` header; empty means host name and process id.
    pub instance: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { otlp_endpoint: String::new(), sample_ratio: 1.0, instance: String::new() }
    }
}

impl TelemetrySettings {
    /// The configured instance name, or host name and process id.
    pub fn instance_name(&self) -> String {
        if !self.instance.is_empty() {
            return self.instance.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}-{}", std::process::id())
    }
}

/// An API key from a config file: `{ name = "...", tier = "premium", key_sha256 = "<hex>" }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredApiKey {
    pub name: String,
    pub tier: Tier,
    /// `printf %s "$KEY" | sha256sum`.
    pub key_sha256: String,
}

/// The OpenAI-compatible fake LLM used in development, tests and benchmarks.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MockLlmSettings {
    pub host: String,
    pub port: u16,
    /// Model ids listed by `GET /v1/models`; any id is accepted on requests.
    pub models: Vec<String>,
    /// Tokens in an answer, unless the request's `max_tokens` is smaller.
    pub tokens_per_answer: u32,
    /// Delay before the first token.
    pub time_to_first_token_ms: u64,
    /// Delay between two tokens.
    pub inter_token_delay_ms: u64,
    /// Share of requests (0.0 to 1.0) answered with a 500.
    pub failure_rate: f64,
    /// Share of requests (0.0 to 1.0) that never answer.
    pub hang_rate: f64,
    /// Seed of the generator that decides failures and hangs, so runs repeat.
    pub seed: u64,
}

impl Default for MockLlmSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 9090,
            models: vec!["mock-1".to_owned()],
            tokens_per_answer: 48,
            time_to_first_token_ms: 150,
            inter_token_delay_ms: 15,
            failure_rate: 0.0,
            hang_rate: 0.0,
            seed: 7,
        }
    }
}

/// A secret that never shows up in logs or debug output.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretString([redacted])")
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("could not list the config directory {path}: {source}")]
    ConfigDirectory { path: PathBuf, source: std::io::Error },
    #[error("{0} is a secret: set it in the environment ({1}), never in a config file")]
    SecretInFile(&'static str, &'static str),
    #[error("invalid limits: {0}")]
    InvalidLimits(#[from] crate::limits::LimitsError),
    #[error("telemetry.sample_ratio must be between 0.0 and 1.0, not {0}")]
    InvalidSampleRatio(f64),
}

/// Environment variable naming the directory of `*.toml` layers (default `config`).
pub const CONFIG_DIRECTORY_VARIABLE: &str = "DAM_CONFIG_DIR";

/// Settings keys whose environment values are comma-separated lists.
const LIST_SETTING_KEYS: [&str; 3] = ["chat.allowed_models", "mock_llm.models", "auth.trusted_proxies"];

/// Settings that hold secrets, with the only variable each may come from.
const SECRET_SETTINGS: [(&str, &str); 2] =
    [("llm.api_key", "DAM_LLM__API_KEY"), ("dam.admin_token", "DAM_DAM__ADMIN_TOKEN")];

impl Settings {
    /// Loads the layers from the process: `$DAM_CONFIG_DIR` (or `./config`) and the `DAM_*` environment.
    pub fn load() -> Result<Self, SettingsError> {
        let environment: HashMap<String, String> = std::env::vars().collect();
        let config_directory = environment
            .get(CONFIG_DIRECTORY_VARIABLE)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"));
        Self::load_from(&config_directory, &environment)
    }

    /// Loads the layers from a given directory (missing is fine) and a given environment map.
    pub fn load_from(
        config_directory: &Path,
        environment: &HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let mut file_layers = config::Config::builder();
        for file in toml_files_in(config_directory)? {
            file_layers = file_layers.add_source(config::File::from(file));
        }
        let files_only = file_layers.build_cloned()?;
        for (secret, variable) in SECRET_SETTINGS {
            if files_only.get_string(secret).is_ok() {
                return Err(SettingsError::SecretInFile(secret, variable));
            }
        }

        let dam_variables: config::Map<String, String> = environment
            .iter()
            .filter(|(name, _)| name.starts_with("DAM_") && name.as_str() != CONFIG_DIRECTORY_VARIABLE)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let mut environment_layer = config::Environment::with_prefix("DAM")
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(dam_variables));
        for key in LIST_SETTING_KEYS {
            environment_layer = environment_layer.with_list_parse_key(key);
        }

        let merged = file_layers.add_source(environment_layer).build()?;
        let settings: Settings = merged.try_deserialize()?;
        settings.limits.validate()?;
        if !(0.0..=1.0).contains(&settings.telemetry.sample_ratio) {
            return Err(SettingsError::InvalidSampleRatio(settings.telemetry.sample_ratio));
        }
        Ok(settings)
    }
}

fn toml_files_in(config_directory: &Path) -> Result<Vec<PathBuf>, SettingsError> {
    let entries = match std::fs::read_dir(config_directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SettingsError::ConfigDirectory { path: config_directory.to_owned(), source });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    // Sorted so that `10-local.toml` deterministically overrides `00-defaults.toml`.
    files.sort();
    Ok(files)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let settings = Settings::load_from(directory.path(), &HashMap::new()).expect("settings load");
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn environment_overrides_files_which_override_defaults() {
        let directory = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            directory.path().join("10-local.toml"),
            "[redis]\nkey_prefix = \"file:\"\npool_size = 4\n[gateway]\nport = 1234\n",
        )
        .expect("write config file");
        let variables = environment(&[
            ("DAM_GATEWAY__PORT", "4321"),
            ("DAM_CHAT__ALLOWED_MODELS", "a,b"),
            ("DAM_LLM__API_KEY", "sk-secret"),
            ("UNRELATED", "ignored"),
        ]);
        let settings = Settings::load_from(directory.path(), &variables).expect("settings load");
        assert_eq!(settings.redis.key_prefix, "file:");
        assert_eq!(settings.redis.pool_size, 4);
        assert_eq!(settings.gateway.port, 4321);
        assert_eq!(settings.chat.allowed_models, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(settings.llm.api_key.as_ref().map(SecretString::expose_secret), Some("sk-secret"));
    }

    #[test]
    fn one_nested_limit_can_be_set_alone_and_the_rest_keep_their_defaults() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let variables = environment(&[
            ("DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND", "100"),
            ("DAM_LIMITS__LLM__MAX_REQUESTS_PER_SECOND", "7"),
        ]);
        let settings = Settings::load_from(directory.path(), &variables).expect("settings load");
        let defaults = Limits::default();
        assert_eq!(settings.limits.tiers.anonymous.rate_per_second, 100.0);
        assert_eq!(settings.limits.tiers.anonymous.burst, defaults.tiers.anonymous.burst);
        assert_eq!(settings.limits.tiers.premium, defaults.tiers.premium);
        assert_eq!(settings.limits.llm.max_requests_per_second, 7.0);
        assert_eq!(settings.limits.llm.max_tokens_per_minute, defaults.llm.max_tokens_per_minute);
        let typo = environment(&[("DAM_LIMITS__TIERS__ANONYMOUS__BRUST", "3")]);
        assert!(Settings::load_from(directory.path(), &typo).is_err(), "typos in a tier are refused");
    }

    #[test]
    fn unknown_settings_are_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let variables = environment(&[("DAM_GATEWAY__PROT", "1")]);
        let error = Settings::load_from(directory.path(), &variables).expect_err("typo must fail");
        assert!(error.to_string().contains("prot"), "{error}");
    }

    #[test]
    fn an_api_key_in_a_config_file_is_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        std::fs::write(directory.path().join("a.toml"), "[llm]\napi_key = \"sk-leak\"\n").expect("write");
        let error = Settings::load_from(directory.path(), &HashMap::new()).expect_err("secret in file");
        assert!(matches!(error, SettingsError::SecretInFile("llm.api_key", _)));
    }

    #[test]
    fn the_sample_config_file_holds_exactly_the_defaults() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.toml.sample");
        std::fs::copy(sample, directory.path().join("example.toml")).expect("copy the sample");
        let settings = Settings::load_from(directory.path(), &HashMap::new()).expect("the sample loads");
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = SecretString::new("sk-do-not-print");
        assert!(!format!("{secret:?}").contains("sk-do-not-print"));
        let settings = Settings {
            llm: LlmSettings { api_key: Some(secret), ..LlmSettings::default() },
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("sk-do-not-print"));
    }
}
