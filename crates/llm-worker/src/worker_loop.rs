//! The worker's intake: while it has a free slot it claims the next job (lanes in its weighted order) and runs it
//! on its own task (`job_task`); when every lane is empty it blocks on the doorbell list, with a claim pipelined
//! behind the wait, so idle workers cost Redis nothing and a new job is claimed the moment it is queued.
//! On shutdown it stops claiming, lets running jobs finish within the drain time, then stops the rest.
//! What a task or a lost write leaves in the processing list is given back by `hand_back`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::job_lifecycle::{ClaimedJob, claim_jobs, lanes_in_claim_order, wait_for_doorbell_then_claim};
use protocol::limits::Limits;
use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};
use protocol::{Lane, RedisKeys};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::hand_back::{EntriesInHand, hand_back_orphaned_entries};
use crate::job_runner::JobContext;
use crate::job_task::run_one_job;

/// Pauses after a failed claim, so a Redis outage is not hammered: at most half a second, at least half of that,
/// and jittered so that a fleet which lost Redis together does not claim again in step.
const CLAIM_RETRY: RetryPolicy = RetryPolicy::steady(Duration::from_millis(500), Jitter::Equal);
/// Most jobs one claim takes: enough that a worker's intake keeps up with a burst in a few round trips, few
/// enough that one worker does not take a whole backlog while the others have room.
const MOST_JOBS_PER_CLAIM: usize = 16;

/// Claims and runs jobs until `shutdown` is cancelled; returns after running jobs finished or were stopped.
pub async fn consume_jobs_until_stopped(context: JobContext, shutdown: CancellationToken) {
    let mut intake = JobIntake::new(&context);
    let stop_running_jobs = CancellationToken::new();
    let mut running = JoinSet::new();
    loop {
        // Reap finished tasks so the set does not grow without bound.
        while running.try_join_next().is_some() {}
        let Some(free_slots) = intake.take_free_slots(&shutdown).await else { break };
        let claimed = match intake.claim(free_slots.len(), &shutdown).await {
            ClaimRound::Claimed(claimed) => claimed,
            ClaimRound::Failed => continue,
            ClaimRound::Stopping => break,
        };
        for (claimed, slot) in claimed.into_iter().zip(free_slots) {
            let context = context.clone();
            let stop = stop_running_jobs.child_token();
            let seat = context.permit_line.take_seat();
            let in_hand = intake.entries_in_hand.hold(&claimed.raw_envelope);
            running.spawn(async move {
                run_one_job(&context, claimed, &stop, seat).await;
                drop((in_hand, slot));
            });
        }
        // Let the new jobs send their start (and permit request) before this loop asks Redis for more work: the
        // start is on the first token's path, the next claim is not.
        tokio::task::yield_now().await;
    }
    let drain_time = Duration::from_secs(context.settings.worker.drain_timeout_s);
    drain_running_jobs(running, drain_time, &stop_running_jobs).await;
}

/// Lets the running jobs finish within `drain_time`, then stops those still running and waits for them.
async fn drain_running_jobs(
    mut running: JoinSet<()>,
    drain_time: Duration,
    stop_running_jobs: &CancellationToken,
) {
    tracing::info!(
        running = running.len(),
        ?drain_time,
        "worker stopping: no new jobs, running jobs may finish"
    );
    let drained =
        tokio::time::timeout(drain_time, async { while running.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = running.len(), "drain time over: stopping the jobs still running");
        stop_running_jobs.cancel();
        while running.join_next().await.is_some() {}
    }
}

/// What one round of the intake got.
enum ClaimRound {
    Claimed(Vec<ClaimedJob>),
    /// Redis did not answer; the intake paused and the round starts over.
    Failed,
    Stopping,
}

/// The intake's state between rounds: its slots, its turn in the lanes' weighted order, and its pauses.
struct JobIntake<'a> {
    context: &'a JobContext,
    slots: Arc<Semaphore>,
    doorbell: DoorbellWaiter,
    idle_wait: Duration,
    /// This worker's own turn count decides which lane a claim tries first (no shared counter in Redis).
    turn: u64,
    /// A claim that got fewer jobs than it asked for emptied the lanes: the next one waits for the doorbell
    /// rather than asking the empty lanes again at once.
    lanes_drained: bool,
    entries_in_hand: EntriesInHand,
    sweep_interval: Duration,
    last_sweep: Instant,
    claim_backoff: RetryBackoff,
}

impl<'a> JobIntake<'a> {
    fn new(context: &'a JobContext) -> Self {
        let worker = &context.settings.worker;
        Self {
            context,
            slots: Arc::new(Semaphore::new(worker.concurrency.max(1))),
            doorbell: DoorbellWaiter::new(context.redis.client().clone()),
            idle_wait: Duration::from_millis(worker.idle_wait_ms.max(100)),
            turn: rand::random(),
            lanes_drained: false,
            entries_in_hand: EntriesInHand::default(),
            sweep_interval: Duration::from_millis(worker.reaper_interval_ms.max(100)),
            last_sweep: Instant::now(),
            claim_backoff: RetryBackoff::new(CLAIM_RETRY),
        }
    }

    /// Waits for a free slot, then takes every other free one (up to a bound), so one claim fills them all: one
    /// round trip, however busy the lanes. `None` on shutdown.
    async fn take_free_slots(&mut self, shutdown: &CancellationToken) -> Option<Vec<OwnedSemaphorePermit>> {
        // While the upstream's capacity holds jobs of this worker back, more jobs wait in their lane, visibly.
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = self.context.permit_line.wait_until_empty() => {}
        }
        let first_slot = tokio::select! {
            _ = shutdown.cancelled() => return None,
            slot = self.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        // No claim is in flight here, so every entry of the processing list that no task holds is an orphan.
        if self.last_sweep.elapsed() >= self.sweep_interval {
            hand_back_orphaned_entries(self.context, &self.entries_in_hand).await;
            self.last_sweep = Instant::now();
        }
        let mut free_slots = vec![first_slot];
        while free_slots.len() < MOST_JOBS_PER_CLAIM {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => free_slots.push(slot),
                Err(_) => break,
            }
        }
        Some(free_slots)
    }

    /// Claims up to `most` jobs; when the lanes are empty, waits for the doorbell with a claim queued behind it.
    async fn claim(&mut self, most: usize, shutdown: &CancellationToken) -> ClaimRound {
        let context = self.context;
        let (keys, worker_id) = (&context.keys, &context.worker_id);
        let lanes = self.next_lane_order();
        let claimed = if self.lanes_drained {
            Ok(Vec::new())
        } else {
            context
                .redis
                .run(|mut connection| async move {
                    claim_jobs(&mut connection, keys, worker_id, &lanes, most).await
                })
                .await
        };
        let claimed = match claimed {
            Ok(claimed) if !claimed.is_empty() => claimed,
            Ok(_) => {
                // Every lane is empty: wait for the doorbell, with a claim queued right behind the wait.
                let lanes = self.next_lane_order();
                tokio::select! {
                    _ = shutdown.cancelled() => return ClaimRound::Stopping,
                    claimed = self.doorbell.wait_then_claim(keys, worker_id, &lanes, most, self.idle_wait) => claimed,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not claim a job");
                tokio::select! {
                    _ = shutdown.cancelled() => return ClaimRound::Stopping,
                    _ = tokio::time::sleep(self.claim_backoff.next_delay()) => return ClaimRound::Failed,
                }
            }
        };
        self.claim_backoff.reset();
        self.lanes_drained = claimed.len() < most;
        ClaimRound::Claimed(claimed)
    }

    /// The lanes in the order the next claim tries them, by this worker's next turn and the live weights.
    fn next_lane_order(&mut self) -> Vec<Lane> {
        self.turn = self.turn.wrapping_add(1);
        lanes_in_claim_order(self.turn, &lanes_by_weight(&self.context.limits.borrow()))
    }
}

/// The lanes in priority order with their live weights.
fn lanes_by_weight(limits: &Limits) -> [(Lane, u32); 2] {
    [(Lane::Premium, limits.premium_weight), (Lane::Standard, limits.standard_weight)]
}

/// Blocks on the doorbell list with BLPOP on a dedicated connection (a blocking command would stall the shared
/// multiplexed connections), with the claim pipelined behind it.
struct DoorbellWaiter {
    client: redis::Client,
    connection: Option<redis::aio::MultiplexedConnection>,
    /// Pauses after a failed connection or wait, reset once a wait went through.
    backoff: RetryBackoff,
}

impl DoorbellWaiter {
    fn new(client: redis::Client) -> Self {
        Self { client, connection: None, backoff: RetryBackoff::new(CLAIM_RETRY) }
    }

    /// Returns the jobs (up to `most`) claimed when the doorbell rang or `limit` passed. After a Redis failure it
    /// pauses briefly and returns none.
    async fn wait_then_claim(
        &mut self,
        keys: &RedisKeys,
        worker_id: &str,
        lanes: &[Lane],
        most: usize,
        limit: Duration,
    ) -> Vec<ClaimedJob> {
        if self.connection.is_none() {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(limit + Duration::from_secs(1)));
            match self.client.get_multiplexed_async_connection_with_config(&config).await {
                Ok(connection) => self.connection = Some(connection),
                Err(_) => {
                    tokio::time::sleep(self.backoff.next_delay()).await;
                    return Vec::new();
                }
            }
        }
        let Some(connection) = self.connection.as_mut() else { return Vec::new() };
        match wait_for_doorbell_then_claim(connection, keys, worker_id, lanes, most, limit).await {
            Ok(claimed) => {
                self.backoff.reset();
                claimed
            }
            Err(_) => {
                self.connection = None;
                tokio::time::sleep(self.backoff.next_delay()).await;
                Vec::new()
            }
        }
    }
}
