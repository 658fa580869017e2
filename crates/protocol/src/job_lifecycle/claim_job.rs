//! Claiming: `claim_jobs` (`lua/claim_job.lua`) moves the oldest waiting jobs, lanes in the worker's weighted
//! order, into its processing list; `wait_for_doorbell_then_claim` pipelines the same claim behind a BLPOP on the
//! doorbell, for an idle worker. The weighted order itself is `lanes_in_claim_order`.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script, ScriptInvocation};

use super::is_unknown_script;
use crate::job::Lane;
use crate::keys::RedisKeys;
use crate::script_runner::run_script;

static CLAIM_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/claim_job.lua")));

/// A job moved into a worker's processing list, as the exact text that sits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub lane: Lane,
    /// The envelope exactly as stored; needed verbatim to remove it from the processing list later.
    pub raw_envelope: String,
}

/// The lanes in the order one claim tries them: out of every `sum of weights` consecutive turns, a lane comes
/// first `weight` times (weighted round robin over the turn number); the others follow in priority order.
/// `lanes_by_priority` pairs each lane with its weight (at least 1 is used). Each worker keeps its own turn count,
/// so the shares hold across the fleet without a shared counter.
pub fn lanes_in_claim_order(turn: u64, lanes_by_priority: &[(Lane, u32)]) -> Vec<Lane> {
    if lanes_by_priority.is_empty() {
        return Vec::new();
    }
    let total: u64 = lanes_by_priority.iter().map(|(_, weight)| u64::from((*weight).max(1))).sum();
    let slot = turn % total.max(1);
    let mut cumulative = 0;
    let first = lanes_by_priority
        .iter()
        .position(|(_, weight)| {
            cumulative += u64::from((*weight).max(1));
            slot < cumulative
        })
        .unwrap_or(0);
    let first_lane = lanes_by_priority[first].0;
    std::iter::once(first_lane)
        .chain(lanes_by_priority.iter().map(|(lane, _)| *lane).filter(|lane| *lane != first_lane))
        .collect()
}

/// Moves the oldest job of the first non-empty lane of `lanes_in_order` into the worker's processing list.
pub async fn claim_next_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
) -> RedisResult<Option<ClaimedJob>> {
    Ok(claim_jobs(connection, keys, worker_id, lanes_in_order, 1).await?.pop())
}

/// Moves up to `most` of the oldest waiting jobs into the worker's processing list, taking from the lanes in the
/// order given (the first lane until it is empty, then the next). Oldest first; empty when every lane is.
pub async fn claim_jobs(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
    most: usize,
) -> RedisResult<Vec<ClaimedJob>> {
    let reply: ClaimReply =
        run_script("claim_job", &claim_invocation(keys, worker_id, lanes_in_order, most), connection).await?;
    Ok(claimed_jobs(reply, lanes_in_order))
}

/// Blocks on the worker doorbell for up to `limit`, then claims as [`claim_jobs`] does, in one round trip: the
/// claim is pipelined behind the BLPOP, so Redis runs it the moment the doorbell rings (or the wait ends), with no
/// trip back to the worker in between. For the worker's dedicated blocking connection only.
pub async fn wait_for_doorbell_then_claim(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
    most: usize,
    limit: std::time::Duration,
) -> RedisResult<Vec<ClaimedJob>> {
    let claim = claim_invocation(keys, worker_id, lanes_in_order, most);
    let mut pipeline = redis::pipe();
    pipeline.cmd("BLPOP").arg(keys.queue_doorbell()).arg(limit.as_secs_f64()).ignore();
    pipeline.invoke_script(&claim).ignore_errors();
    let (claimed,): (RedisResult<ClaimReply>,) = pipeline.query_async(connection).await?;
    match claimed {
        Ok(reply) => Ok(claimed_jobs(reply, lanes_in_order)),
        // Redis does not know the script (first use, or after a restart): the ordinary call loads it and claims.
        Err(error) if is_unknown_script(&error) => {
            claim_jobs(connection, keys, worker_id, lanes_in_order, most).await
        }
        Err(error) => Err(error),
    }
}

/// The reply of `claim_job.lua`: for each job, the index of its lane in the order given and its envelope.
type ClaimReply = Vec<(usize, String)>;

fn claim_invocation<'a>(
    keys: &RedisKeys,
    worker_id: &str,
    lanes_in_order: &[Lane],
    most: usize,
) -> ScriptInvocation<'a> {
    let mut invocation = CLAIM_JOB.prepare_invoke();
    invocation.key(keys.worker_processing_list(worker_id)).key(keys.queue_doorbell());
    for lane in lanes_in_order {
        invocation.key(keys.lane_queue(*lane)).key(keys.lane_served_tickets(*lane));
    }
    invocation.arg(most.max(1));
    invocation
}

fn claimed_jobs(reply: ClaimReply, lanes_in_order: &[Lane]) -> Vec<ClaimedJob> {
    reply
        .into_iter()
        .map(|(lane, raw_envelope)| ClaimedJob { lane: lanes_in_order[lane - 1], raw_envelope })
        .collect()
}
