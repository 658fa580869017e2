//! `GET /admin/status`: one picture of the whole flow, read from Redis in two round trips: lanes (depth, oldest
//! wait), workers (alive or presumed dead, jobs in flight), circuit breaker, intake, the limits in force,
//! admissions over the last minute and the dead-letter list. Read-only; also feeds the fleet gauges.

use std::collections::{BTreeMap, HashMap};

use protocol::keys::{ADMISSION_STATS_BUCKET_S, circuit_field};
use protocol::{JobEnvelope, JobId, Lane, RedisKeys, unix_time_ms};
use redis::{FromRedisValue, RedisResult, Value};
use serde::{Deserialize, Serialize};

use crate::app_state::AdminState;
use crate::error::AdminError;
use crate::intake_admin::{IntakeState, intake_state};
use crate::limits_admin::{LimitsInForce, limits_in_force};

/// Statistics buckets summed for "the last minute" (the current one and the five before it).
pub const ADMISSION_WINDOW_BUCKETS: u64 = 6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub generated_at_ms: u64,
    pub intake: IntakeState,
    pub circuit_breaker: CircuitBreakerStatus,
    /// In priority order.
    pub lanes: Vec<LaneStatus>,
    /// Jobs in all workers' processing lists.
    pub jobs_running: u64,
    pub workers: WorkerFleet,
    pub admissions_last_minute: AdmissionCounts,
    /// How jobs ended over the last minute: `done`, `failed`, `expired`, `cancelled`, and `requeued` for jobs
    /// put back on their lane after their worker died or stopped.
    pub job_outcomes_last_minute: BTreeMap<String, u64>,
    pub dead_letters: DeadLetterCounts,
    pub limits: LimitsInForce,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneStatus {
    pub lane: Lane,
    pub depth: u64,
    /// How long the job at the head has waited; `None` when the lane is empty or its head is unreadable.
    pub oldest_wait_ms: Option<u64>,
    pub oldest_job_id: Option<JobId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFleet {
    /// Workers whose heartbeat key still lives.
    pub alive: Vec<WorkerStatus>,
    /// Registered workers whose heartbeat expired: crashed, or stopped with jobs left behind.
    pub presumed_dead: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    /// The last heartbeat (ms since the epoch); `None` once it expired.
    pub last_heartbeat_ms: Option<u64>,
    /// Jobs in the worker's processing list.
    pub jobs_in_flight: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreakerStatus {
    /// `closed`, `open` or `half_open` (closed when nothing is stored).
    pub state: String,
    pub open_until_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionCounts {
    pub window_s: u64,
    pub admitted: u64,
    /// Duplicates that joined an existing chat.
    pub joined: u64,
    pub rejected_total: u64,
    /// Refusals by reason code (`rate_limited`, `queue_full`, `maintenance`, ...).
    pub rejected: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterCounts {
    pub size: u64,
    /// Dead letters put back on a lane by operators, ever (from the replay counter).
    pub replayed_total: u64,
    /// The oldest records dropped to keep the list within its caps, ever (from the drop counter).
    #[serde(default)]
    pub dropped_total: u64,
}

/// Reads everything the report shows: the overview in one round trip, then the registered workers in another.
pub async fn collect_status_report(state: &AdminState) -> Result<StatusReport, AdminError> {
    let now_ms = unix_time_ms();
    let newest_bucket = now_ms / 1000 / ADMISSION_STATS_BUCKET_S;
    let pipeline = overview_pipeline(&state.keys, newest_bucket);
    let replies: Vec<Value> =
        state.redis.run(|mut connection| async move { pipeline.query_async(&mut connection).await }).await?;
    let overview = StoredOverview::read(Replies(replies.into_iter()), now_ms)?;

    let workers = read_workers(state, overview.worker_ids).await?;
    let jobs_running =
        workers.alive.iter().chain(&workers.presumed_dead).map(|worker| worker.jobs_in_flight).sum();
    Ok(StatusReport {
        generated_at_ms: now_ms,
        intake: intake_state(overview.intake.as_deref()),
        circuit_breaker: CircuitBreakerStatus {
            state: overview.circuit_state.unwrap_or_else(|| "closed".to_owned()),
            open_until_ms: parse_stored_number(overview.circuit_open_until_ms),
        },
        lanes: overview.lanes,
        jobs_running,
        workers,
        admissions_last_minute: sum_admission_buckets(&overview.admission_buckets),
        job_outcomes_last_minute: overview.job_outcomes,
        dead_letters: DeadLetterCounts {
            size: overview.dead_letter_size,
            replayed_total: parse_stored_number(overview.dead_letters_replayed).unwrap_or(0),
            dropped_total: parse_stored_number(overview.dead_letters_dropped).unwrap_or(0),
        },
        limits: limits_in_force(overview.stored_limits.as_deref(), &state.settings.limits),
    })
}

/// The overview's commands, one pipeline. `StoredOverview::read` reads the replies in this same order.
fn overview_pipeline(keys: &RedisKeys, newest_bucket: u64) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    for lane in Lane::ALL {
        pipeline.cmd("LLEN").arg(keys.lane_queue(lane)).cmd("LINDEX").arg(keys.lane_queue(lane)).arg(0);
    }
    pipeline
        .cmd("SMEMBERS")
        .arg(keys.worker_registry())
        .cmd("HMGET")
        .arg(keys.circuit_breaker())
        .arg(circuit_field::STATE)
        .arg(circuit_field::OPEN_UNTIL_MS)
        .cmd("GET")
        .arg(keys.intake_paused())
        .cmd("GET")
        .arg(keys.live_limits())
        .cmd("LLEN")
        .arg(keys.dead_letters())
        .cmd("GET")
        .arg(keys.dead_letter_replays())
        .cmd("GET")
        .arg(keys.dead_letters_dropped());
    for age in 0..ADMISSION_WINDOW_BUCKETS {
        pipeline.cmd("HGETALL").arg(keys.admission_counts(newest_bucket.saturating_sub(age)));
    }
    for age in 0..ADMISSION_WINDOW_BUCKETS {
        pipeline.cmd("HGETALL").arg(keys.job_outcome_counts(newest_bucket.saturating_sub(age)));
    }
    pipeline
}

/// The overview's replies, typed, before they become the report.
struct StoredOverview {
    lanes: Vec<LaneStatus>,
    /// Sorted, so workers are listed in a stable order.
    worker_ids: Vec<String>,
    circuit_state: Option<String>,
    circuit_open_until_ms: Option<String>,
    intake: Option<String>,
    stored_limits: Option<String>,
    dead_letter_size: u64,
    dead_letters_replayed: Option<String>,
    dead_letters_dropped: Option<String>,
    admission_buckets: Vec<HashMap<String, String>>,
    /// Summed over the buckets.
    job_outcomes: BTreeMap<String, u64>,
}

impl StoredOverview {
    /// Reads the replies of `overview_pipeline`, in its order.
    fn read(mut replies: Replies, now_ms: u64) -> RedisResult<Self> {
        let mut lanes = Vec::new();
        for lane in Lane::ALL {
            let depth: u64 = replies.next()?;
            let head: Option<String> = replies.next()?;
            let head = head.and_then(|text| JobEnvelope::decode(&text).ok());
            lanes.push(LaneStatus {
                lane,
                depth,
                oldest_wait_ms: head.as_ref().map(|envelope| now_ms.saturating_sub(envelope.created_at_ms)),
                oldest_job_id: head.map(|envelope| envelope.id),
            });
        }
        let mut worker_ids: Vec<String> = replies.next()?;
        worker_ids.sort();
        let (circuit_state, circuit_open_until_ms) = replies.next()?;
        let intake = replies.next()?;
        let stored_limits = replies.next()?;
        let dead_letter_size = replies.next()?;
        let dead_letters_replayed = replies.next()?;
        let dead_letters_dropped = replies.next()?;
        let mut admission_buckets = Vec::new();
        for _ in 0..ADMISSION_WINDOW_BUCKETS {
            admission_buckets.push(replies.next::<HashMap<String, String>>()?);
        }
        let mut job_outcomes = BTreeMap::new();
        for _ in 0..ADMISSION_WINDOW_BUCKETS {
            for (outcome, count) in replies.next::<HashMap<String, String>>()? {
                *job_outcomes.entry(outcome).or_insert(0) += count.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(Self {
            lanes,
            worker_ids,
            circuit_state,
            circuit_open_until_ms,
            intake,
            stored_limits,
            dead_letter_size,
            dead_letters_replayed,
            dead_letters_dropped,
            admission_buckets,
            job_outcomes,
        })
    }
}

/// A number stored as text (a count, a timestamp); absent or unreadable is `None`.
fn parse_stored_number(stored: Option<String>) -> Option<u64> {
    stored.and_then(|text| text.parse().ok())
}

/// Each registered worker's heartbeat and processing-list length, in one round trip.
async fn read_workers(state: &AdminState, worker_ids: Vec<String>) -> Result<WorkerFleet, AdminError> {
    let mut fleet = WorkerFleet { alive: Vec::new(), presumed_dead: Vec::new() };
    if worker_ids.is_empty() {
        return Ok(fleet);
    }
    let mut presence = redis::pipe();
    for id in &worker_ids {
        presence
            .cmd("GET")
            .arg(state.keys.worker_heartbeat(id))
            .cmd("LLEN")
            .arg(state.keys.worker_processing_list(id));
    }
    let replies: Vec<Value> =
        state.redis.run(|mut connection| async move { presence.query_async(&mut connection).await }).await?;
    let mut replies = Replies(replies.into_iter());
    for id in worker_ids {
        let heartbeat: Option<String> = replies.next()?;
        let jobs_in_flight: u64 = replies.next()?;
        let alive = heartbeat.is_some();
        let worker = WorkerStatus { id, last_heartbeat_ms: parse_stored_number(heartbeat), jobs_in_flight };
        if alive { fleet.alive.push(worker) } else { fleet.presumed_dead.push(worker) }
    }
    Ok(fleet)
}

/// Adds up the statistics buckets; unreadable counts count as zero.
pub fn sum_admission_buckets(buckets: &[HashMap<String, String>]) -> AdmissionCounts {
    let mut counts = AdmissionCounts {
        window_s: ADMISSION_WINDOW_BUCKETS * ADMISSION_STATS_BUCKET_S,
        admitted: 0,
        joined: 0,
        rejected_total: 0,
        rejected: BTreeMap::new(),
    };
    for (reason, count) in buckets.iter().flatten() {
        let count: u64 = count.parse().unwrap_or(0);
        match reason.as_str() {
            "admitted" => counts.admitted += count,
            "joined" => counts.joined += count,
            // A reused job id: the gateway retries with a new one, so it is neither an admission nor a refusal.
            "duplicate_id" => {}
            _ => {
                counts.rejected_total += count;
                *counts.rejected.entry(reason.clone()).or_default() += count;
            }
        }
    }
    counts
}

/// The replies of a pipeline, read in order with each one's expected type.
struct Replies(std::vec::IntoIter<Value>);

impl Replies {
    fn next<T: FromRedisValue>(&mut self) -> RedisResult<T> {
        let value = self.0.next().unwrap_or(Value::Nil);
        Ok(redis::from_redis_value(value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_are_summed_over_the_buckets_and_split_into_accepted_and_refused() {
        let bucket = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(reason, count)| (reason.to_string(), count.to_string())).collect()
        };
        let counts = sum_admission_buckets(&[
            bucket(&[("admitted", "3"), ("rate_limited", "2")]),
            bucket(&[("admitted", "4"), ("joined", "1"), ("rate_limited", "1"), ("queue_full", "5")]),
            bucket(&[("maintenance", "garbage")]),
        ]);
        assert_eq!(counts.window_s, 60);
        assert_eq!((counts.admitted, counts.joined, counts.rejected_total), (7, 1, 8));
        assert_eq!(counts.rejected["rate_limited"], 3);
        assert_eq!(counts.rejected["queue_full"], 5);
        assert_eq!(counts.rejected["maintenance"], 0);
    }
}
