//! Giving back what this worker holds but cannot finish, through `recover_job` (which decides by the job's state
//! whether it is requeued, released or ended): an attempt that lost Redis or its ownership, retried until it lands
//! or the worker stops; and, swept now and then, processing-list entries that no task of this worker holds (left
//! there when Redis lost a write).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};
use tokio_util::sync::CancellationToken;

use crate::job_runner::JobContext;
use crate::reaper::RecoveryCause;

/// Pauses between tries of a hand-back: at most 100 ms before the second, doubling up to 2 s, with full jitter so
/// that a fleet which lost Redis together does not come back in step.
const HAND_BACK_RETRY: RetryPolicy =
    RetryPolicy::doubling(Duration::from_millis(100), Duration::from_secs(2), Jitter::Full);

/// Takes a lost attempt's entry out of this worker's processing list through `recover_job`: `recover_job`
/// decides by the job's state. A Redis outage must not lose the decision, so it is tried until it lands.
pub async fn hand_back_lost_attempt(context: &JobContext, raw_envelope: &str, stop: &CancellationToken) {
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
pub async fn hand_back_orphaned_entries(context: &JobContext, entries_in_hand: &EntriesInHand) {
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
pub struct EntriesInHand(Arc<Mutex<HashMap<u64, usize>>>);

impl EntriesInHand {
    pub fn hold(&self, raw_envelope: &str) -> EntryInHand {
        let entry_hash = hash_of(raw_envelope);
        *self.0.lock().expect("never poisoned").entry(entry_hash).or_default() += 1;
        EntryInHand { entries: self.clone(), entry_hash }
    }

    fn snapshot(&self) -> HashSet<u64> {
        self.0.lock().expect("never poisoned").keys().copied().collect()
    }
}

/// One task's hold on its entry, released when the task is done with it (or panicked).
#[derive(Debug)]
pub struct EntryInHand {
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

/// Runs `step` until it succeeds, pausing between tries with jittered exponential backoff (so a fleet that lost
/// Redis together does not come back in step). `None` when `stop` fired first: the stopping worker's own
/// recovery of its processing list then does what `step` could not.
pub async fn until_it_lands<T, E, Step, Fut>(
    stop: &CancellationToken,
    what: &str,
    mut step: Step,
) -> Option<T>
where
    E: std::fmt::Display,
    Step: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = RetryBackoff::new(HAND_BACK_RETRY);
    loop {
        match step().await {
            Ok(done) => return Some(done),
            Err(error) => tracing::warn!(%error, "could not {what} yet; trying again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
