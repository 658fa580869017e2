//! The sections every service shares: how to reach Redis (`redis`), what a chat may hold (`chat`), whom the gateway
//! believes about callers (`auth`) and how processes are observed (`telemetry`). Plain data with defaults; loading
//! and validation live in `loading.rs`.

use serde::{Deserialize, Serialize};

use crate::limits::Tier;

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
