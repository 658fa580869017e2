//! Runs the Lua scripts and measures each run: latency and errors per script, in every service's `/metrics`
//! (`dam_redis_script_duration_seconds`, `dam_redis_script_errors_total`). The scripts themselves live beside
//! the code that calls them.

use std::time::Instant;

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, RedisResult, ScriptInvocation};

/// Every script's name, as [`run_script`] labels it.
pub const SCRIPT_NAMES: [&str; 12] = [
    "acquire_upstream_permit",
    "admit_chat",
    "append_stream_events",
    "cancel_job",
    "claim_job",
    "dead_letter_job",
    "drop_dead_letter",
    "finish_job",
    "recover_job",
    "replay_dead_letter",
    "settle_upstream_call",
    "start_job",
];

/// The error kinds [`run_script`] counts.
const ERROR_KINDS: [&str; 4] = ["timeout", "connection", "server", "reply"];

/// Registers every script's error counters at zero, so `/metrics` shows them (and alerts on their rate work)
/// before the first error.
pub fn register_script_error_counters() {
    for script in SCRIPT_NAMES {
        for kind in ERROR_KINDS {
            metrics::counter!("dam_redis_script_errors_total", "script" => script, "kind" => kind)
                .increment(0);
        }
    }
}

/// Invokes `invocation` (EVALSHA, loading the script when Redis lost it) and records its round trip under
/// `script`, the script's file name without `.lua`.
pub async fn run_script<T: FromRedisValue>(
    script: &'static str,
    invocation: &ScriptInvocation<'_>,
    connection: &mut impl ConnectionLike,
) -> RedisResult<T> {
    let started = Instant::now();
    let result = invocation.invoke_async(connection).await;
    metrics::histogram!("dam_redis_script_duration_seconds", "script" => script)
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        metrics::counter!("dam_redis_script_errors_total", "script" => script, "kind" => error_kind(error))
            .increment(1);
    }
    result
}

/// A small fixed set of error kinds, so the label never grows with error texts.
fn error_kind(error: &redis::RedisError) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
        "connection"
    } else if error.code().is_some() {
        "server"
    } else {
        "reply"
    }
}
