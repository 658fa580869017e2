//! The sections of one service each: the gateway, the llm-worker, the dam and the mock LLM. Plain data with
//! defaults; the upstream LLM's section is in `llm_section.rs`, loading and validation in `loading.rs`.

use serde::{Deserialize, Serialize};

use super::SecretString;
use super::secrets::{same_secret, serialize_redacted};

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

/// The dam admin service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DamSettings {
    pub host: String,
    pub port: u16,
    /// Bearer token of the admin API. Read from `DAM_DAM__ADMIN_TOKEN` only; without one the dam refuses to
    /// start unless it listens on loopback only.
    #[serde(serialize_with = "serialize_redacted")]
    pub admin_token: Option<SecretString>,
}

impl Default for DamSettings {
    fn default() -> Self {
        Self { host: "127.0.0.1".to_owned(), port: 9100, admin_token: None }
    }
}

/// Field by field, the token by its text (see `same_secret`).
impl PartialEq for DamSettings {
    fn eq(&self, other: &Self) -> bool {
        let DamSettings { host, port, admin_token } = self;
        *host == other.host && *port == other.port && same_secret(admin_token, &other.admin_token)
    }
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
