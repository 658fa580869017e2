//! The worker's intake: while it has a free slot it claims the next job (lanes in its weighted order) and runs it
//! on its own task; when every lane is empty it blocks on the doorbell list, with a claim pipelined behind the
//! wait, so idle workers cost Redis nothing and a new job is claimed the moment it is queued.
//! On shutdown it stops claiming, lets running jobs finish within the drain time, then stops the rest.
//! Every attempt ends in a terminal event, a requeue or a dead letter: an attempt that lost Redis or its
//! ownership hands its job back through `recover_job`, retried until it lands or the worker stops; and a sweep
//! hands back what its processing list holds but no task does (left there when Redis lost a write).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::KeyValue;
use protocol::dead_letter::{DeadLetter, DeadLetterCaps};
use protocol::job_lifecycle::{
    ClaimedJob, claim_jobs, dead_letter_job, lanes_in_claim_order, wait_for_doorbell_then_claim,
};
use protocol::limits::Limits;
use protocol::telemetry::trace_context::{continue_trace, hashed_identity, record_queue_wait_span};
use protocol::{JobEnvelope, Lane, RedisKeys, unix_time_ms};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::WorkerError;
use crate::job_runner::{AttemptReport, JobContext, JobOutcome, run_claimed_job};
use crate::reaper::RecoveryCause;
use crate::slow_path::{SlowPathReasons, log_slow_path};
use crate::upstream_permits::PermitLineSeat;

/// Pause after a failed claim, so a Redis outage is not hammered.
const CLAIM_RETRY_DELAY: Duration = Duration::from_millis(500);
/// First pause before handing a lost attempt back again; it doubles each try (with full jitter, so a fleet that
/// lost Redis together does not come back in step) up to `HAND_BACK_MAX_DELAY`.
const HAND_BACK_BASE_DELAY: Duration = Duration::from_millis(100);
const HAND_BACK_MAX_DELAY: Duration = Duration::from_secs(2);
/// Most jobs one claim takes: enough that a worker's intake keeps up with a burst in a few round trips, few
/// enough that one worker does not take a whole backlog while the others have room.
const MOST_JOBS_PER_CLAIM: usize = 16;

/// Claims and runs jobs until `shutdown` is cancelled; returns after running jobs finished or were stopped.
pub async fn consume_jobs_until_stopped(context: JobContext, shutdown: CancellationToken) {
    let settings = context.settings.clone();
    let slots = Arc::new(Semaphore::new(settings.worker.concurrency.max(1)));
    let stop_running_jobs = CancellationToken::new();
    let mut running = JoinSet::new();
    let mut doorbell = DoorbellWaiter::new(context.redis.client().clone());
    let idle_wait = Duration::from_millis(settings.worker.idle_wait_ms.max(100));
    // This worker's own turn count decides which lane a claim tries first (no shared counter in Redis).
    let mut turn: u64 = rand::random();
    // A claim that got fewer jobs than it asked for emptied the lanes: the next one waits for the doorbell
    // rather than asking the empty lanes again at once.
    let mut lanes_drained = false;
    let entries_in_hand = EntriesInHand::default();
    let sweep_interval = Duration::from_millis(settings.worker.reaper_interval_ms.max(100));
    let mut last_sweep = Instant::now();

    loop {
        // Reap finished tasks so the set does not grow without bound.
        while running.try_join_next().is_some() {}
        // While the upstream's capacity holds jobs of this worker back, more jobs wait in their lane, visibly.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = context.permit_line.wait_until_empty() => {}
        }
        let first_slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        // No claim is in flight here, so every entry of the processing list that no task holds is an orphan.
        if last_sweep.elapsed() >= sweep_interval {
            hand_back_orphaned_entries(&context, &entries_in_hand).await;
            last_sweep = Instant::now();
        }
        // Every free slot (up to a bound) is filled by the same claim: one round trip, however busy the lanes.
        let mut free_slots = vec![first_slot];
        while free_slots.len() < MOST_JOBS_PER_CLAIM {
            match slots.clone().try_acquire_owned() {
                Ok(slot) => free_slots.push(slot),
                Err(_) => break,
            }
        }
        let (keys, worker_id) = (&context.keys, &context.worker_id);
        turn = turn.wrapping_add(1);
        let lanes = lanes_in_claim_order(turn, &lanes_by_weight(&context.limits.borrow()));
        let most = free_slots.len();
        let claimed = if lanes_drained {
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
                turn = turn.wrapping_add(1);
                let lanes = lanes_in_claim_order(turn, &lanes_by_weight(&context.limits.borrow()));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    claimed = doorbell.wait_then_claim(keys, worker_id, &lanes, most, idle_wait) => claimed,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not claim a job");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(CLAIM_RETRY_DELAY) => {}
                }
                continue;
            }
        };
        lanes_drained = claimed.len() < most;
        for (claimed, slot) in claimed.into_iter().zip(free_slots) {
            let context = context.clone();
            let stop = stop_running_jobs.child_token();
            let seat = context.permit_line.take_seat();
            let in_hand = entries_in_hand.hold(&claimed.raw_envelope);
            running.spawn(async move {
                run_one_job(&context, claimed, &stop, seat).await;
                drop((in_hand, slot));
            });
        }
        // Let the new jobs send their start (and permit request) before this loop asks Redis for more work: the
        // start is on the first token's path, the next claim is not.
        tokio::task::yield_now().await;
    }

    let drain_time = Duration::from_secs(settings.worker.drain_timeout_s);
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

/// The lanes in priority order with their live weights.
fn lanes_by_weight(limits: &Limits) -> [(Lane, u32); 2] {
    [(Lane::Premium, limits.premium_weight), (Lane::Standard, limits.standard_weight)]
}

async fn run_one_job(
    context: &JobContext,
    claimed: ClaimedJob,
    stop: &CancellationToken,
    seat: PermitLineSeat,
) {
    // The claim's reply has just arrived: this task is spawned for it at once.
    let (claimed_at, claimed_at_ms) = (tokio::time::Instant::now(), unix_time_ms());
    let envelope = match JobEnvelope::decode(&claimed.raw_envelope) {
        Ok(envelope) => envelope,
        Err(error) => {
            dead_letter_undecodable(context, claimed, error.to_string(), stop).await;
            return;
        }
    };
    let run_span = job_run_span(context, &envelope);
    // Measured by this worker's clock against the gateway's: hosts keep their clocks in step (NTP).
    let queue_wait = Duration::from_millis(claimed_at_ms.saturating_sub(envelope.created_at_ms));
    // A later attempt's wait since creation includes the earlier attempts: it is not a queue wait.
    if envelope.attempt <= 1 {
        context.metrics.record_queue_wait(envelope.lane, queue_wait);
    }
    context.metrics.jobs_running.increment(1.0);
    let mut report = AttemptReport::default();
    let outcome =
        run_claimed_job(context, &envelope, &claimed.raw_envelope, stop, seat, claimed_at, &mut report)
            .instrument(run_span)
            .await;
    context.metrics.jobs_running.decrement(1.0);
    match outcome {
        Ok(outcome) => {
            metrics::counter!("dam_worker_jobs_total", "outcome" => outcome.as_str()).increment(1);
            tracing::debug!(job_id = %envelope.id, outcome = outcome.as_str(), "job ended");
            // A job that ended here (a skipped one had ended before) gets its one slow-path line.
            if outcome != JobOutcome::Skipped {
                let dead_lettered = outcome == JobOutcome::Failed;
                let reasons = SlowPathReasons::of_attempt(
                    &envelope,
                    queue_wait,
                    report.upstream_retries,
                    dead_lettered,
                );
                log_slow_path(envelope.id, envelope.lane, outcome.as_str(), &reasons);
            }
        }
        // The stopping worker puts its whole processing list back once its jobs returned.
        Err(WorkerError::Stopped) => {
            metrics::counter!("dam_worker_jobs_total", "outcome" => "stopped").increment(1);
        }
        Err(error) => {
            // Lost Redis (a start, a write or the ending did not land) or ownership (another attempt has the
            // job): the job is handed back, and `recover_job` decides by its state whether it is requeued (the
            // next start appends a `reset`), released (it ended, or runs elsewhere) or ended.
            metrics::counter!("dam_worker_jobs_total", "outcome" => "handed_back").increment(1);
            tracing::warn!(job_id = %envelope.id, %error, "job attempt lost; handing the job back");
            hand_back_lost_attempt(context, &claimed.raw_envelope, stop).await;
        }
    }
}

/// The span of one attempt at a job, `chat.run`, in the chat's trace (a child of its admission). A first attempt
/// also records its wait in the lane, `chat.queue_wait`, ending now.
fn job_run_span(context: &JobContext, envelope: &JobEnvelope) -> tracing::Span {
    let identity_hash = hashed_identity(&envelope.identity);
    if envelope.attempt <= 1 && envelope.recoveries == 0 {
        let attributes = vec![
            KeyValue::new("job_id", envelope.id.to_string()),
            KeyValue::new("lane", envelope.lane.as_str()),
            KeyValue::new("identity_hash", identity_hash.clone()),
        ];
        record_queue_wait_span(
            &envelope.trace_context,
            envelope.created_at_ms,
            SystemTime::now(),
            attributes,
        );
    }
    let span = tracing::info_span!(
        "chat.run",
        job_id = %envelope.id,
        lane = envelope.lane.as_str(),
        identity_hash = %identity_hash,
        attempt = envelope.attempt,
        worker_id = %context.worker_id,
    );
    continue_trace(&span, &envelope.trace_context);
    span
}

/// Takes a lost attempt's entry out of this worker's processing list through `recover_job`: `recover_job`
/// decides by the job's state. A Redis outage must not lose the decision, so it is tried until it lands.
async fn hand_back_lost_attempt(context: &JobContext, raw_envelope: &str, stop: &CancellationToken) {
    let handed_back = until_it_lands(stop, "hand a lost attempt back", || {
        context.reaper.recover_one(&context.worker_id, raw_envelope, RecoveryCause::AttemptLost)
    })
    .await;
    if let Some(outcome) = handed_back {
        tracing::info!(outcome = outcome.as_str(), "lost attempt handed back");
    }
}

/// Hands back every entry of this worker's processing list that none of its tasks holds. Such an entry is left
/// when Redis lost a write the worker saw land (a restart from an append-only file that missed its last second
/// loses an ending or a hand-back) or when a claim's reply was lost after Redis ran it. The reaper only looks at
/// dead workers, so without this the job would stay `running` for as long as this worker lives. One try per entry:
/// what does not land now is found again by the next sweep.
async fn hand_back_orphaned_entries(context: &JobContext, entries_in_hand: &EntriesInHand) {
    // Taken before the list is read: a task lets go of its entry only after its ending removed it from Redis, so
    // an entry read below that was not held here is an orphan, not a job that ended meanwhile.
    let held_before_reading = entries_in_hand.snapshot();
    let processing = context.keys.worker_processing_list(&context.worker_id);
    let entries: Vec<String> = match context
        .redis
        .run(|mut connection| async move {
            redis::cmd("LRANGE").arg(&processing).arg(0).arg(-1).query_async(&mut connection).await
        })
        .await
    {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(%error, "could not read this worker's processing list for orphaned entries");
            return;
        }
    };
    for raw_envelope in
        entries.iter().filter(|raw_envelope| !held_before_reading.contains(&hash_of(raw_envelope)))
    {
        metrics::counter!("dam_worker_orphaned_entries_total").increment(1);
        let cause = RecoveryCause::AttemptLost;
        match context.reaper.recover_one(&context.worker_id, raw_envelope, cause).await {
            Ok(outcome) => {
                tracing::warn!(
                    outcome = outcome.as_str(),
                    "an orphaned processing-list entry was handed back"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "could not hand an orphaned entry back; the next sweep tries again")
            }
        }
    }
}

/// The processing-list entries this worker's tasks hold (by a hash of the raw envelope, so a large envelope is
/// not kept twice). An entry counts from its claim until its task returns, hand-backs included.
#[derive(Debug, Clone, Default)]
struct EntriesInHand(Arc<Mutex<HashMap<u64, usize>>>);

impl EntriesInHand {
    fn hold(&self, raw_envelope: &str) -> EntryInHand {
        let entry_hash = hash_of(raw_envelope);
        *self.0.lock().expect("never poisoned").entry(entry_hash).or_default() += 1;
        EntryInHand { entries: self.clone(), entry_hash }
    }

    fn snapshot(&self) -> HashSet<u64> {
        self.0.lock().expect("never poisoned").keys().copied().collect()
    }
}

/// One task's hold on its entry, released when the task is done with it (or panicked).
struct EntryInHand {
    entries: EntriesInHand,
    entry_hash: u64,
}

impl Drop for EntryInHand {
    fn drop(&mut self) {
        let mut entries = self.entries.0.lock().expect("never poisoned");
        if let Some(count) = entries.get_mut(&self.entry_hash) {
            *count -= 1;
            if *count == 0 {
                entries.remove(&self.entry_hash);
            }
        }
    }
}

fn hash_of(raw_envelope: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    raw_envelope.hash(&mut hasher);
    hasher.finish()
}

async fn dead_letter_undecodable(
    context: &JobContext,
    claimed: ClaimedJob,
    error: String,
    stop: &CancellationToken,
) {
    tracing::error!(%error, "undecodable job envelope sent to the dead-letter list");
    let dead_letter = DeadLetter {
        job_id: None,
        reason: "undecodable_envelope".to_owned(),
        last_error: error,
        attempts: 0,
        worker_id: context.worker_id.to_string(),
        dead_at_ms: unix_time_ms(),
        raw_envelope: claimed.raw_envelope,
    };
    let (keys, caps, dead_letter) =
        (&context.keys, DeadLetterCaps::from_settings(&context.settings), &dead_letter);
    let moved = until_it_lands(stop, "dead-letter an undecodable envelope", || {
        context.redis.run(|mut connection| async move {
            dead_letter_job(&mut connection, keys, dead_letter, caps).await
        })
    })
    .await;
    if moved.is_some() {
        metrics::counter!("dam_worker_jobs_total", "outcome" => "dead_lettered").increment(1);
    }
}

/// Runs `step` until it succeeds, pausing between tries with jittered exponential backoff (so a fleet that lost
/// Redis together does not come back in step). `None` when `stop` fired first: the stopping worker's own
/// recovery of its processing list then does what `step` could not.
async fn until_it_lands<T, E, Step, Fut>(stop: &CancellationToken, what: &str, mut step: Step) -> Option<T>
where
    E: std::fmt::Display,
    Step: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut ceiling = HAND_BACK_BASE_DELAY;
    loop {
        match step().await {
            Ok(done) => return Some(done),
            Err(error) => tracing::warn!(%error, "could not {what} yet; trying again"),
        }
        let pause = ceiling.mul_f64(rand::random::<f64>());
        ceiling = (ceiling * 2).min(HAND_BACK_MAX_DELAY);
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Blocks on the doorbell list with BLPOP on a dedicated connection (a blocking command would stall the shared
/// multiplexed connections), with the claim pipelined behind it.
struct DoorbellWaiter {
    client: redis::Client,
    connection: Option<redis::aio::MultiplexedConnection>,
}

impl DoorbellWaiter {
    fn new(client: redis::Client) -> Self {
        Self { client, connection: None }
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
                    tokio::time::sleep(CLAIM_RETRY_DELAY).await;
                    return Vec::new();
                }
            }
        }
        let Some(connection) = self.connection.as_mut() else { return Vec::new() };
        match wait_for_doorbell_then_claim(connection, keys, worker_id, lanes, most, limit).await {
            Ok(claimed) => claimed,
            Err(_) => {
                self.connection = None;
                tokio::time::sleep(CLAIM_RETRY_DELAY).await;
                Vec::new()
            }
        }
    }
}
