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
/// - `dam:dead-letters:replayed`: counter of dead letters put back on their lane by an operator.
/// - `dam:dead-letters:bytes`: the dead-letter list's size in bytes (its records' lengths), kept beside it by
///   every script that adds or removes a record, so the byte cap costs no scan.
/// - `dam:dead-letters:dropped`: counter of the oldest records dropped to keep the list within its caps.
/// - `dam:control`: pub/sub channel announcing configuration changes.
/// - `dam:limits`: the live limits (JSON); absent means the configured ones.
/// - `dam:intake:paused`: present while an operator has paused intake.
/// - `dam:circuit`: hash with the upstream circuit breaker's state (see [`circuit_field`]).
/// - `dam:api-keys`: hash from an API key's SHA-256 to its record (JSON).
/// - `dam:block:{identity}`: a block record (JSON) with a TTL; `dam:blocks` indexes them by expiry.
/// - `dam:rate:{identity}`: the caller's rate-limit state (GCRA theoretical arrival time, ms).
/// - `dam:active:{identity}`: sorted set of the caller's queued or running job ids, scored by expiry.
/// - `dam:dedupe:{identity}:{fingerprint}`: the job id a duplicate request joins, for a short window.
/// - `dam:budget:{identity}:{day}`: tokens the caller used that UTC day.
/// - `dam:stats:admission:{bucket}`: hash of admission decisions by reason, per 10-second bucket.
/// - `dam:stats:outcomes:{bucket}`: hash of how jobs ended (done, failed, expired, cancelled; requeued), likewise.
/// - `dam:reaper:lease`: held (with a TTL) by the one worker currently recovering dead workers' jobs.
/// - `dam:worker:{id}:cancel`: pub/sub channel telling a worker to abort a job it runs.
/// - `dam:llm:next-start`: the next free upstream request start slot, ms (starts are spaced evenly: the global request rate).
/// - `dam:llm:tokens`: hash of upstream tokens per second over the last minute (the global token rate).
/// - `dam:circuit:outcomes`: hash of upstream call outcomes per second (the circuit breaker's window).
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

    /// Counted by the replay script itself, so the total is exact across dam restarts and instances.
    pub fn dead_letter_replays(&self) -> String {
        format!("{}dead-letters:replayed", self.prefix)
    }

    /// The dead-letter list's size in bytes, for its byte cap.
    pub fn dead_letter_bytes(&self) -> String {
        format!("{}dead-letters:bytes", self.prefix)
    }

    /// Counted by the scripts that push a dead letter, so the total is exact across every process.
    pub fn dead_letters_dropped(&self) -> String {
        format!("{}dead-letters:dropped", self.prefix)
    }

    pub fn control_channel(&self) -> String {
        format!("{}control", self.prefix)
    }

    pub fn live_limits(&self) -> String {
        format!("{}limits", self.prefix)
    }

    pub fn intake_paused(&self) -> String {
        format!("{}intake:paused", self.prefix)
    }

    pub fn circuit_breaker(&self) -> String {
        format!("{}circuit", self.prefix)
    }

    pub fn api_keys(&self) -> String {
        format!("{}api-keys", self.prefix)
    }

    pub fn identity_block(&self, identity: &str) -> String {
        format!("{}block:{identity}", self.prefix)
    }

    pub fn block_index(&self) -> String {
        format!("{}blocks", self.prefix)
    }

    pub fn rate_bucket(&self, identity: &str) -> String {
        format!("{}rate:{identity}", self.prefix)
    }

    pub fn active_chats(&self, identity: &str) -> String {
        format!("{}active:{identity}", self.prefix)
    }

    pub fn duplicate_chat(&self, identity: &str, fingerprint: &str) -> String {
        format!("{}dedupe:{identity}:{fingerprint}", self.prefix)
    }

    /// `day` is days since the Unix epoch (UTC).
    pub fn token_budget(&self, identity: &str, day: u64) -> String {
        format!("{}budget:{identity}:{day}", self.prefix)
    }

    pub fn reaper_lease(&self) -> String {
        format!("{}reaper:lease", self.prefix)
    }

    pub fn worker_cancel_channel(&self, worker_id: &str) -> String {
        format!("{}worker:{worker_id}:cancel", self.prefix)
    }

    pub fn llm_next_start_slot(&self) -> String {
        format!("{}llm:next-start", self.prefix)
    }

    pub fn llm_token_use(&self) -> String {
        format!("{}llm:tokens", self.prefix)
    }

    pub fn circuit_outcomes(&self) -> String {
        format!("{}circuit:outcomes", self.prefix)
    }

    /// `bucket` as for [`Self::admission_counts`].
    pub fn job_outcome_counts(&self, bucket: u64) -> String {
        format!("{}stats:outcomes:{bucket}", self.prefix)
    }

    /// `bucket` is the Unix time in seconds divided by [`ADMISSION_STATS_BUCKET_S`].
    pub fn admission_counts(&self, bucket: u64) -> String {
        format!("{}stats:admission:{bucket}", self.prefix)
    }
}

impl Default for RedisKeys {
    fn default() -> Self {
        Self::new(DEFAULT_KEY_PREFIX)
    }
}

/// Width of one admission-statistics bucket, in seconds.
pub const ADMISSION_STATS_BUCKET_S: u64 = 10;

/// Field names of the circuit breaker hash (`{prefix}circuit`).
pub mod circuit_field {
    /// `closed`, `open` or `half_open`.
    pub const STATE: &str = "state";
    /// While open: when probes may start (ms since the epoch).
    pub const OPEN_UNTIL_MS: &str = "open_until_ms";
    /// While half-open: probes under way.
    pub const PROBES: &str = "probes";
}

/// Field names of the job state hash (`{prefix}job:{id}`), written by the Lua scripts and read by the services.
pub mod job_state_field {
    /// One of the [`crate::job::JobStatus`] names.
    pub const STATUS: &str = "status";
    /// The job's ticket in its lane, for O(1) queue positions.
    pub const TICKET: &str = "ticket";
    pub const LANE: &str = "lane";
    pub const IDENTITY: &str = "identity";
    /// Which attempt currently owns the job, raised by every start: its ending is refused to any other attempt
    /// (fencing; its batches are fenced by the replay log's length).
    pub const ATTEMPT: &str = "attempt";
    /// The worker that currently owns the job.
    pub const WORKER: &str = "worker";
    /// `1` once the job's client cancelled it while it ran; its worker ends it.
    pub const CANCEL_REQUESTED: &str = "cancel_requested";
    pub const CREATED_AT_MS: &str = "created_at_ms";
    pub const STARTED_AT_MS: &str = "started_at_ms";
    pub const FINISHED_AT_MS: &str = "finished_at_ms";
    /// Tokens admission reserved on the caller's budget for the day of the job's creation; the job's ending
    /// settles against it (a missing field counts as 0).
    pub const RESERVED_TOKENS: &str = "reserved_tokens";
    /// The W3C `traceparent` of the chat's admission, when tracing is on: a relay opened later (a browser's
    /// event stream) joins the chat's trace through it.
    pub const TRACEPARENT: &str = "traceparent";
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
        assert_eq!(keys.dead_letter_replays(), "dam:dead-letters:replayed");
        assert_eq!(keys.dead_letter_bytes(), "dam:dead-letters:bytes");
        assert_eq!(keys.dead_letters_dropped(), "dam:dead-letters:dropped");
        assert_eq!(keys.control_channel(), "dam:control");
        assert_eq!(keys.reaper_lease(), "dam:reaper:lease");
        assert_eq!(keys.worker_cancel_channel("w1"), "dam:worker:w1:cancel");
        assert_eq!(keys.llm_next_start_slot(), "dam:llm:next-start");
        assert_eq!(keys.llm_token_use(), "dam:llm:tokens");
        assert_eq!(keys.circuit_outcomes(), "dam:circuit:outcomes");
        assert_eq!(keys.live_limits(), "dam:limits");
        assert_eq!(keys.intake_paused(), "dam:intake:paused");
        assert_eq!(keys.circuit_breaker(), "dam:circuit");
        assert_eq!(keys.api_keys(), "dam:api-keys");
        assert_eq!(keys.identity_block("ip:10.0.0.1"), "dam:block:ip:10.0.0.1");
        assert_eq!(keys.block_index(), "dam:blocks");
        assert_eq!(keys.rate_bucket("key:ab12"), "dam:rate:key:ab12");
        assert_eq!(keys.active_chats("key:ab12"), "dam:active:key:ab12");
        assert_eq!(keys.duplicate_chat("ip:::1", "f00d"), "dam:dedupe:ip:::1:f00d");
        assert_eq!(keys.token_budget("ip:10.0.0.1", 20_000), "dam:budget:ip:10.0.0.1:20000");
        assert_eq!(keys.admission_counts(176_000_000), "dam:stats:admission:176000000");
        assert_eq!(keys.job_outcome_counts(176_000_000), "dam:stats:outcomes:176000000");
    }

    #[test]
    fn the_prefix_is_configurable() {
        let keys = RedisKeys::new("test:42:");
        assert_eq!(keys.queue_doorbell(), "test:42:queue:doorbell");
        assert_eq!(keys.prefix(), "test:42:");
    }
}
