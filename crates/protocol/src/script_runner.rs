//! Runs the Lua scripts and measures each run: latency and errors per script, in every service's `/metrics`
//! (`dam_redis_script_duration_seconds`, `dam_redis_script_errors_total`). The scripts themselves live beside
//! the code that calls them.

use std::sync::OnceLock;
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

/// Each script's duration histogram, in [`SCRIPT_NAMES`] order, resolved once the recorder is installed: a script
/// runs for every batch of tokens, and a histogram named by labels is looked up in the registry on every use.
static SCRIPT_DURATIONS: OnceLock<Vec<metrics::Histogram>> = OnceLock::new();

/// Resolves the scripts' duration histograms and registers every script's error counters at zero, so `/metrics`
/// shows them (and alerts on their rate work) before the first error. Called once the recorder is installed.
pub fn register_script_metrics() {
    SCRIPT_DURATIONS.get_or_init(|| {
        SCRIPT_NAMES
            .iter()
            .map(|script| metrics::histogram!("dam_redis_script_duration_seconds", "script" => *script))
            .collect()
    });
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
    let elapsed_s = started.elapsed().as_secs_f64();
    match SCRIPT_DURATIONS.get().zip(SCRIPT_NAMES.iter().position(|name| *name == script)) {
        Some((durations, index)) => durations[index].record(elapsed_s),
        None => {
            metrics::histogram!("dam_redis_script_duration_seconds", "script" => script).record(elapsed_s)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lua_script_is_named_once() {
        let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/src/lua");
        let mut files: Vec<String> = std::fs::read_dir(directory)
            .expect("the scripts' directory")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".lua").map(str::to_owned))
            .collect();
        files.sort();
        assert_eq!(files, SCRIPT_NAMES.iter().map(|name| name.to_string()).collect::<Vec<_>>());
    }
}
