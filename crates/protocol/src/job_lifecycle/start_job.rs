//! Taking ownership: `start_job` (`lua/start_job.lua`) records the worker and a fresh attempt, the fence every
//! later write of the attempt carries; `start_job_with_permit_request` pipelines the first upstream permit
//! request behind it.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script, ScriptInvocation};

use super::is_unknown_script;
use crate::job::{JobId, JobStatus};
use crate::keys::RedisKeys;
use crate::script_runner::run_script;
use crate::upstream_capacity::{
    PermitDecision, PermitReply, PermitRequest, permit_decision, permit_invocation,
};

static START_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/start_job.lua")));

/// What a worker found when it took ownership of a claimed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStart {
    /// The job is this worker's under `attempt` (the fence its writes carry); the replay log holds this many
    /// events (a restarted job's earlier events and the `reset` that start appended after them).
    Started { replay_log_length: u64, attempt: u32, cancel_requested: bool },
    /// The job had already ended (for example cancelled while queued); nothing was changed.
    AlreadyFinal { status: JobStatus, replay_log_length: u64 },
    /// The job's state expired; the envelope is an orphan.
    Missing,
}

/// Records `worker_id` and a fresh attempt as the job's owner, unless it already ended. A job that ran before
/// gets a `reset` event at once (see `start_job.lua`); `new_log_ttl_s` is the TTL of a replay log that creates.
pub async fn start_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    job_id: &JobId,
    worker_id: &str,
    now_ms: u64,
    new_log_ttl_s: u64,
) -> RedisResult<JobStart> {
    let reply: StartReply = run_script(
        "start_job",
        &start_invocation(keys, job_id, worker_id, now_ms, new_log_ttl_s),
        connection,
    )
    .await?;
    Ok(job_start(reply))
}

/// Starts the job as [`start_job`] does and, in the same round trip, asks for an upstream permit for it: on the
/// fast path a job reaches its upstream call one round trip after its claim. The permit answer is `None` when
/// that part of the pipeline failed (the caller asks again the usual way). A permit granted to a job that did
/// not start is the caller's to settle.
pub async fn start_job_with_permit_request(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    job_id: &JobId,
    worker_id: &str,
    now_ms: u64,
    new_log_ttl_s: u64,
    permit: &PermitRequest,
) -> RedisResult<(JobStart, Option<PermitDecision>)> {
    let start = start_invocation(keys, job_id, worker_id, now_ms, new_log_ttl_s);
    let ask = permit_invocation(keys, permit);
    let mut both = redis::pipe();
    both.invoke_script(&start).invoke_script(&ask).ignore_errors();
    let (started, asked): (RedisResult<StartReply>, RedisResult<PermitReply>) =
        both.query_async(connection).await?;
    let started = match started {
        Ok(reply) => job_start(reply),
        // Redis does not know the script (first use, or after a restart): nothing ran; the ordinary call loads
        // it and starts.
        Err(error) if is_unknown_script(&error) => {
            start_job(connection, keys, job_id, worker_id, now_ms, new_log_ttl_s).await?
        }
        Err(error) => return Err(error),
    };
    let asked = match asked {
        Ok(reply) => Some(permit_decision(reply)),
        Err(error) => {
            // Loaded for next time; this job asks again the usual way.
            if is_unknown_script(&error) {
                ask.load_async(connection).await?;
            }
            None
        }
    };
    Ok((started, asked))
}

/// The reply of `start_job.lua`.
type StartReply = (String, u64, u32, u8);

fn start_invocation<'a>(
    keys: &RedisKeys,
    job_id: &JobId,
    worker_id: &str,
    now_ms: u64,
    new_log_ttl_s: u64,
) -> ScriptInvocation<'a> {
    let mut invocation = START_JOB.prepare_invoke();
    invocation
        .key(keys.job_state(job_id))
        .key(keys.job_replay_log(job_id))
        .key(keys.job_event_channel(job_id))
        .arg(worker_id)
        .arg(now_ms)
        .arg(new_log_ttl_s.max(1));
    invocation
}

fn job_start((status, replay_log_length, attempt, cancel_requested): StartReply) -> JobStart {
    match status.as_str() {
        "running" => {
            JobStart::Started { replay_log_length, attempt, cancel_requested: cancel_requested == 1 }
        }
        "missing" => JobStart::Missing,
        other => match other.parse::<JobStatus>() {
            Ok(status) => JobStart::AlreadyFinal { status, replay_log_length },
            Err(_) => JobStart::Missing,
        },
    }
}
