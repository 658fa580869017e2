//! A client's cancellation: `cancel_job` (`lua/cancel_job.lua`) ends a queued job at once, or names the worker
//! that runs it (which the gateway then tells).

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

use super::DAY_MS;
use crate::job::JobId;
use crate::keys::{ADMISSION_STATS_BUCKET_S, RedisKeys};
use crate::script_runner::run_script;

static CANCEL_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/cancel_job.lua")));

/// What a cancellation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued; it is cancelled and will never start.
    Cancelled,
    /// It runs on `worker_id`, which must be told to abort it.
    Cancelling {
        worker_id: String,
    },
    /// It had already ended with this status.
    AlreadyFinal {
        status: String,
    },
    Missing,
}

/// Cancels a job for its client. `identity` is the caller the job is charged to and `created_at_ms` when it was
/// created (both from its state): a queued job gives back what admission reserved on that day's budget.
#[allow(clippy::too_many_arguments)]
pub async fn cancel_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    job_id: &JobId,
    identity: &str,
    created_at_ms: u64,
    client_message: &str,
    replay_ttl_s: u64,
    now_ms: u64,
) -> RedisResult<CancelOutcome> {
    let (outcome, detail): (String, String) = run_script(
        "cancel_job",
        CANCEL_JOB
            .key(keys.job_state(job_id))
            .key(keys.job_replay_log(job_id))
            .key(keys.job_event_channel(job_id))
            .key(keys.active_chats(identity))
            .key(keys.job_outcome_counts(now_ms / 1000 / ADMISSION_STATS_BUCKET_S))
            .key(keys.token_budget(identity, created_at_ms / DAY_MS))
            .arg(job_id.to_string())
            .arg(now_ms)
            .arg(replay_ttl_s.max(1))
            .arg(client_message),
        connection,
    )
    .await?;
    Ok(match outcome.as_str() {
        "cancelled" => CancelOutcome::Cancelled,
        "cancelling" => CancelOutcome::Cancelling { worker_id: detail },
        "final" => CancelOutcome::AlreadyFinal { status: detail },
        _ => CancelOutcome::Missing,
    })
}
