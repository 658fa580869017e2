//! Every Redis key and pub/sub channel name Traffic Dam uses, and the field names of the job state hash.
//! Invariant: no other file in the workspace spells a key; services ask `RedisKeys` for names.

use crate::job::{JobId, Lane};

/// Builds key and channel names under one configurable prefix (default `dam:`).
///
/// Layout (with prefix `dam:`):
/// - `dam:queue:{lane}`: list of waiting job envelopes (JSON), oldest at the head.
/// - `dam:queue:{lane}:enqueued` / `dam:queue:{lane}:served`: ticket counters; a job's position is its ticket minus
///   the served counter, so it costs O(1) to compute.
/// - `dam:queue:doorbell`: list that wakes idle workers (one short item per enqueued job, capped).
/// - `dam:worker:{id}:processing`: list of the envelopes a worker has taken and not yet finished.
/// - `dam:worker:{id}:heartbeat`: string with a TTL, refreshed while the worker lives.
/// - `dam:workers`: set of worker ids that have registered.
/// - `dam:job:{id}`: hash with the job's mutable state (see [`job_state_field`]).
/// - `dam:job:{id}:events`: list of the job's stream events (JSON), the replay log; event `seq` = list index + 1.
/// - `dam:job:{id}:channel`: pub/sub channel carrying the same events live.
/// - `dam:dead-letters`: list of jobs that could not be completed.
/// - `dam:control`: pub/sub channel announcing configuration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

/// The prefix used when none is configured.
pub const DEFAULT_KEY_PREFIX: &str = "dam:";

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn lane_queue(&self, lane: Lane) -> String {
        format!("{}queue:{}", self.prefix, lane.as_str())
    }

    pub fn lane_enqueued_tickets(&self, lane: Lane) -> String {
        format!("{}queue:{}:enqueued", self.prefix, lane.as_str())
    }

    pub fn lane_served_tickets(&self, lane: Lane) -> String {
        format!("{}queue:{}:served", self.prefix, lane.as_str())
    }

    pub fn queue_doorbell(&self) -> String {
        format!("{}queue:doorbell", self.prefix)
    }

    pub fn worker_processing_list(&self, worker_id: &str) -> String {
        format!("{}worker:{worker_id}:processing", self.prefix)
    }

    pub fn worker_heartbeat(&self, worker_id: &str) -> String {
        format!("{}worker:{worker_id}:heartbeat", self.prefix)
    }

    pub fn worker_registry(&self) -> String {
        format!("{}workers", self.prefix)
    }

    pub fn job_state(&self, job_id: &JobId) -> String {
        format!("{}job:{job_id}", self.prefix)
    }

    pub fn job_replay_log(&self, job_id: &JobId) -> String {
        format!("{}job:{job_id}:events", self.prefix)
    }

    pub fn job_event_channel(&self, job_id: &JobId) -> String {
        format!("{}job:{job_id}:channel", self.prefix)
    }

    pub fn dead_letters(&self) -> String {
        format!("{}dead-letters", self.prefix)
    }

    pub fn control_channel(&self) -> String {
        format!("{}control", self.prefix)
    }
}

impl Default for RedisKeys {
    fn default() -> Self {
        Self::new(DEFAULT_KEY_PREFIX)
    }
}

/// Field names of the job state hash (`{prefix}job:{id}`), written by the Lua scripts and read by the services.
pub mod job_state_field {
    /// One of the [`crate::job::JobStatus`] names.
    pub const STATUS: &str = "status";
    /// The job's ticket in its lane, for O(1) queue positions.
    pub const TICKET: &str = "ticket";
    pub const LANE: &str = "lane";
    pub const IDENTITY: &str = "identity";
    /// Which attempt currently owns the job; stream writes from any other attempt are refused (fencing).
    pub const ATTEMPT: &str = "attempt";
    /// The worker that currently owns the job.
    pub const WORKER: &str = "worker";
    pub const CREATED_AT_MS: &str = "created_at_ms";
    pub const STARTED_AT_MS: &str = "started_at_ms";
    pub const FINISHED_AT_MS: &str = "finished_at_ms";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_name_is_pinned() {
        let keys = RedisKeys::default();
        let job_id: JobId = "0192f0c1-7b7e-7cc0-8b5e-3f7d2a9b1c00".parse().expect("valid job id");
        assert_eq!(keys.lane_queue(Lane::Standard), "dam:queue:standard");
        assert_eq!(keys.lane_queue(Lane::Premium), "dam:queue:premium");
        assert_eq!(keys.lane_enqueued_tickets(Lane::Standard), "dam:queue:standard:enqueued");
        assert_eq!(keys.lane_served_tickets(Lane::Premium), "dam:queue:premium:served");
        assert_eq!(keys.queue_doorbell(), "dam:queue:doorbell");
        assert_eq!(keys.worker_processing_list("w1"), "dam:worker:w1:processing");
        assert_eq!(keys.worker_heartbeat("w1"), "dam:worker:w1:heartbeat");
        assert_eq!(keys.worker_registry(), "dam:workers");
        assert_eq!(keys.job_state(&job_id), "dam:job:0192f0c1-7b7e-7cc0-8b5e-3f7d2a9b1c00");
        assert_eq!(keys.job_replay_log(&job_id), "dam:job:0192f0c1-7b7e-7cc0-8b5e-3f7d2a9b1c00:events");
        assert_eq!(keys.job_event_channel(&job_id), "dam:job:0192f0c1-7b7e-7cc0-8b5e-3f7d2a9b1c00:channel");
        assert_eq!(keys.dead_letters(), "dam:dead-letters");
        assert_eq!(keys.control_channel(), "dam:control");
    }

    #[test]
    fn the_prefix_is_configurable() {
        let keys = RedisKeys::new("test:42:");
        assert_eq!(keys.queue_doorbell(), "test:42:queue:doorbell");
        assert_eq!(keys.prefix(), "test:42:");
    }
}
