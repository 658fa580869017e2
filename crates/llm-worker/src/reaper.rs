//! Recovery of jobs left behind: one worker at a time (holding a lease in Redis) looks for registered workers
//! whose heartbeat expired and takes their processing lists apart, job by job and atomically: back to the head
//! of the lane with the attempt raised, or, for a job recovered too often (a poison job), to the dead-letter
//! list with an error its client sees. A stopping worker puts its own unfinished jobs back the same way, and a live
//! worker whose attempt lost Redis hands that one job back the same way too (see `recover_one`).

use std::time::Duration;

use protocol::dead_letter::{DeadLetter, DeadLetterCaps};
use protocol::job_lifecycle::{JobRecovery, RecoveryOutcome, dead_letter_job, recover_job};
use protocol::{JobEnvelope, RedisConnections, RedisKeys, unix_time_ms};
use tokio_util::sync::CancellationToken;

use crate::cancel_listener::CANCELLED_BY_CLIENT;
use crate::error::WorkerError;
use crate::slow_path::{SlowPathReasons, log_slow_path};

/// What the client of a poison job sees.
const POISON_JOB_MESSAGE: &str = "the chat failed repeatedly while being answered and was set aside";

/// Attempts lost to Redis (a stall, an outage) do not count as recoveries, so an outage never poisons a job; but a
/// job that keeps losing its attempts must still end: past this many attempts per allowed recovery (plus one),
/// whatever ended them, an attempt lost to Redis makes it a poison job. With the default 3 recoveries: 16
/// attempts, far more than any outage or rolling restart accounts for.
const ATTEMPTS_PER_ALLOWED_RECOVERY: u32 = 4;

/// What recovering needs to know.
#[derive(Debug, Clone)]
pub struct Reaper {
    pub redis: RedisConnections,
    pub keys: RedisKeys,
    pub worker_id: String,
    pub max_recoveries: u32,
    pub replay_ttl_s: u64,
    pub dead_letter_caps: DeadLetterCaps,
}

/// Why a recovered job is put back: its worker died (counts towards poison), stopped (does not), or its attempt
/// lost Redis or its ownership while the worker lives (does not, up to a bound on all attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryCause {
    WorkerDied,
    WorkerStopped,
    AttemptLost,
}

impl Reaper {
    /// Every `interval`, takes the lease if free and recovers dead workers' jobs, until `shutdown`.
    pub async fn reap_until_stopped(self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.hold_lease(interval * 3).await {
                Ok(true) => {
                    if let Err(error) = self.recover_dead_workers().await {
                        tracing::warn!(%error, "recovering dead workers failed; trying again next round");
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "could not read the reaper lease"),
            }
        }
    }

    /// Takes the lease when it is free, or extends it when it is ours.
    async fn hold_lease(&self, lease: Duration) -> redis::RedisResult<bool> {
        let (key, worker_id) = (self.keys.reaper_lease(), self.worker_id.clone());
        let lease_ms = lease.as_millis() as u64;
        self.redis
            .run(|mut connection| async move {
                let taken: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&worker_id)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease_ms)
                    .query_async(&mut connection)
                    .await?;
                if taken.is_some() {
                    return Ok(true);
                }
                let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut connection).await?;
                if holder.as_deref() == Some(worker_id.as_str()) {
                    let _: i64 =
                        redis::cmd("PEXPIRE").arg(&key).arg(lease_ms).query_async(&mut connection).await?;
                    return Ok(true);
                }
                Ok(false)
            })
            .await
    }

    /// Recovers the jobs of every registered worker whose heartbeat is gone, then forgets the worker.
    pub async fn recover_dead_workers(&self) -> Result<(), WorkerError> {
        let registry = self.keys.worker_registry();
        let workers: Vec<String> = self
            .redis
            .run(|mut connection| async move {
                redis::cmd("SMEMBERS").arg(&registry).query_async(&mut connection).await
            })
            .await?;
        for worker_id in workers.into_iter().filter(|worker_id| *worker_id != self.worker_id) {
            let heartbeat = self.keys.worker_heartbeat(&worker_id);
            let alive: bool = self
                .redis
                .run(|mut connection| async move {
                    redis::cmd("EXISTS").arg(&heartbeat).query_async(&mut connection).await
                })
                .await?;
            if alive {
                continue;
            }
            tracing::warn!(dead_worker = %worker_id, "worker heartbeat expired; recovering its jobs");
            self.recover_processing_list(&worker_id, RecoveryCause::WorkerDied).await?;
            let (registry, processing) =
                (self.keys.worker_registry(), self.keys.worker_processing_list(&worker_id));
            let worker = worker_id.clone();
            self.redis
                .run(|mut connection| async move {
                    // Forget the worker only once nothing of it is left.
                    let left: u64 = redis::cmd("LLEN").arg(&processing).query_async(&mut connection).await?;
                    if left == 0 {
                        let _: i64 = redis::cmd("SREM")
                            .arg(&registry)
                            .arg(&worker)
                            .query_async(&mut connection)
                            .await?;
                    }
                    Ok::<(), redis::RedisError>(())
                })
                .await?;
            metrics::counter!("dam_worker_dead_workers_recovered_total").increment(1);
        }
        Ok(())
    }

    /// Takes every job out of `worker_id`'s processing list. Returns how many were put back on a lane.
    pub async fn recover_processing_list(
        &self,
        worker_id: &str,
        cause: RecoveryCause,
    ) -> Result<usize, WorkerError> {
        let processing = self.keys.worker_processing_list(worker_id);
        let entries: Vec<String> = self
            .redis
            .run(|mut connection| async move {
                redis::cmd("LRANGE").arg(&processing).arg(0).arg(-1).query_async(&mut connection).await
            })
            .await?;
        let mut requeued = 0;
        for raw_envelope in entries {
            if self.recover_one(worker_id, &raw_envelope, cause).await? == RecoveryOutcome::Requeued {
                requeued += 1;
            }
        }
        Ok(requeued)
    }

    /// Takes one entry out of `worker_id`'s processing list (see `recover_job.lua`): released when its job ended
    /// or another attempt owns it, ended when its client cancelled it, dead-lettered when poisoned, else requeued.
    pub async fn recover_one(
        &self,
        worker_id: &str,
        raw_envelope: &str,
        cause: RecoveryCause,
    ) -> Result<RecoveryOutcome, WorkerError> {
        let keys = self.keys.clone();
        let Ok(mut envelope) = JobEnvelope::decode(raw_envelope) else {
            let dead_letter = DeadLetter {
                job_id: None,
                reason: "undecodable_envelope".to_owned(),
                last_error: "found undecodable in a processing list".to_owned(),
                attempts: 0,
                worker_id: worker_id.to_owned(),
                dead_at_ms: unix_time_ms(),
                raw_envelope: raw_envelope.to_owned(),
            };
            let caps = self.dead_letter_caps;
            let moved = self
                .redis
                .run(|mut connection| async move {
                    dead_letter_job(&mut connection, &keys, &dead_letter, caps).await
                })
                .await?;
            return Ok(if moved { RecoveryOutcome::DeadLettered } else { RecoveryOutcome::Absent });
        };
        envelope.attempt += 1;
        if cause == RecoveryCause::WorkerDied {
            envelope.recoveries += 1;
        }
        let most_attempts =
            self.max_recoveries.saturating_add(1).saturating_mul(ATTEMPTS_PER_ALLOWED_RECOVERY);
        let last_error = if envelope.recoveries > self.max_recoveries {
            Some(format!("its worker died with it {} times", envelope.recoveries))
        } else if cause == RecoveryCause::AttemptLost && envelope.attempt > most_attempts {
            Some(format!("it was started {} times without ending", envelope.attempt - 1))
        } else {
            None
        };
        let dead_letter = last_error.map(|last_error| DeadLetter {
            job_id: Some(envelope.id),
            reason: "poison_job".to_owned(),
            last_error,
            attempts: envelope.attempt - 1,
            worker_id: worker_id.to_owned(),
            dead_at_ms: unix_time_ms(),
            raw_envelope: raw_envelope.to_owned(),
        });
        let (replay_ttl_s, dead_letter_caps) = (self.replay_ttl_s, self.dead_letter_caps);
        let (job_id, lane) = (envelope.id, envelope.lane);
        let poison_reasons = SlowPathReasons::of_attempt(&envelope, Duration::ZERO, 0, true);
        let outcome = self
            .redis
            .run(|mut connection| async move {
                let recovery = JobRecovery {
                    worker_id,
                    raw_envelope,
                    requeued: &envelope,
                    dead_letter: dead_letter.as_ref(),
                    dead_lettered_message: POISON_JOB_MESSAGE,
                    cancelled_message: CANCELLED_BY_CLIENT,
                    replay_ttl_s,
                    now_ms: unix_time_ms(),
                    dead_letter_caps,
                };
                recover_job(&mut connection, &keys, recovery).await
            })
            .await?;
        metrics::counter!("dam_worker_jobs_recovered_total", "outcome" => outcome.as_str()).increment(1);
        // A poison job ends here, not in a job runner: its slow path is told here.
        if outcome == RecoveryOutcome::DeadLettered {
            log_slow_path(job_id, lane, outcome.as_str(), &poison_reasons);
        }
        Ok(outcome)
    }
}
