//! How a job ends, once: the budget reservation settled by every kind of ending (on the budget of the day the job
//! was created), `recover_job` looking at the job before it requeues, and the dead-letter list's replay and caps.
//! The scene below (one Redis, a job created on day 3 that ends days later) is shared by the three.

mod dead_letter_list;
mod recovery;
mod reservation_settlement;

use std::collections::HashMap;

use protocol::dead_letter::{DeadLetter, DeadLetterCaps};
use protocol::job_lifecycle::{
    FinishOutcome, JobEnding, JobRecovery, JobStart, RecoveryOutcome, claim_next_job, enqueue_job,
    finish_job, recover_job, start_job,
};
use protocol::{JobEnvelope, JobStatus, Lane, RedisKeys, StreamEvent, Usage};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use test_support::{RedisServer, unique_key_prefix};

use crate::{envelope, first_attempt_fence};

const DAY_MS: u64 = 86_400_000;
/// The job was created on day 3; every ending below happens days later, so a charge to the wrong day shows.
const CREATED_AT_MS: u64 = 3 * DAY_MS + 1_000;
const ENDED_AT_MS: u64 = 9 * DAY_MS + 5_000;
const ROOMY: DeadLetterCaps = DeadLetterCaps { max_records: 100, max_bytes: 1 << 20 };

/// One test's Redis, keys and connection.
struct Scene {
    _redis: RedisServer,
    connection: MultiplexedConnection,
    keys: RedisKeys,
}

impl Scene {
    async fn new() -> Self {
        let redis = RedisServer::start().await;
        let connection = redis.connection().await;
        Self { _redis: redis, connection, keys: RedisKeys::new(unique_key_prefix()) }
    }

    /// Queues a job created on day 3 and makes its state say admission reserved `reserved` tokens (None: no
    /// reservation field, as for a job admitted before reservations), with the day's budget key holding
    /// `budget_before`.
    async fn queued_job(&mut self, reserved: Option<u64>, budget_before: u64) -> JobEnvelope {
        let job = JobEnvelope { created_at_ms: CREATED_AT_MS, ..envelope(Lane::Standard) };
        enqueue_job(&mut self.connection, &self.keys, &job, 600).await.expect("enqueue").expect("new job");
        let state = self.keys.job_state(&job.id);
        let _: () = self.connection.hdel(&state, "reserved_tokens").await.expect("hdel");
        if let Some(reserved) = reserved {
            let _: () = self.connection.hset(&state, "reserved_tokens", reserved).await.expect("hset");
        }
        let _: () = self.connection.set(self.budget_key(&job), budget_before).await.expect("set");
        job
    }

    /// Claims and starts `job` as worker `w1`; returns the raw envelope.
    async fn running_job(&mut self, job: &JobEnvelope) -> String {
        let claimed = claim_next_job(&mut self.connection, &self.keys, "w1", &[Lane::Standard])
            .await
            .expect("claim")
            .expect("a job");
        let started = start_job(&mut self.connection, &self.keys, &job.id, "w1", CREATED_AT_MS, 600)
            .await
            .expect("start");
        assert!(matches!(started, JobStart::Started { .. }), "{started:?}");
        claimed.raw_envelope
    }

    fn budget_key(&self, job: &JobEnvelope) -> String {
        self.keys.token_budget(&job.identity, CREATED_AT_MS / DAY_MS)
    }

    async fn budget(&mut self, job: &JobEnvelope) -> Option<i64> {
        self.connection.get(self.budget_key(job)).await.expect("get")
    }

    async fn budget_of_the_end_day(&mut self, job: &JobEnvelope) -> Option<i64> {
        self.connection.get(self.keys.token_budget(&job.identity, ENDED_AT_MS / DAY_MS)).await.expect("get")
    }

    async fn finish(
        &mut self,
        job: &JobEnvelope,
        raw_envelope: &str,
        ending: JobEnding<'_>,
        caps: DeadLetterCaps,
    ) -> FinishOutcome {
        let fence = first_attempt_fence(job, raw_envelope);
        let last = StreamEvent::Done { seq: 1, usage: Usage::default(), finish_reason: "stop".to_owned() };
        finish_job(&mut self.connection, &self.keys, fence, &[last], ending, 1, 600, 30, ENDED_AT_MS, caps)
            .await
            .expect("finish")
    }

    async fn recover(
        &mut self,
        job: &JobEnvelope,
        raw_envelope: &str,
        dead_letter: Option<&DeadLetter>,
        caps: DeadLetterCaps,
    ) -> RecoveryOutcome {
        let requeued = JobEnvelope { attempt: job.attempt + 1, ..job.clone() };
        let recovery = JobRecovery {
            worker_id: "w1",
            raw_envelope,
            requeued: &requeued,
            dead_letter,
            dead_lettered_message: "set aside",
            cancelled_message: "cancelled by its client",
            replay_ttl_s: 30,
            now_ms: ENDED_AT_MS,
            dead_letter_caps: caps,
        };
        recover_job(&mut self.connection, &self.keys, recovery).await.expect("recover")
    }

    async fn state(&mut self, job: &JobEnvelope) -> HashMap<String, String> {
        self.connection.hgetall(self.keys.job_state(&job.id)).await.expect("hgetall")
    }

    async fn replay_log(&mut self, job: &JobEnvelope) -> Vec<StreamEvent> {
        let entries: Vec<String> =
            self.connection.lrange(self.keys.job_replay_log(&job.id), 0, -1).await.expect("lrange");
        entries.iter().map(|entry| StreamEvent::decode(entry).expect("event")).collect()
    }

    async fn outcome_count(&mut self, outcome: &str) -> u64 {
        let bucket = ENDED_AT_MS / 1000 / protocol::keys::ADMISSION_STATS_BUCKET_S;
        let counted: Option<u64> =
            self.connection.hget(self.keys.job_outcome_counts(bucket), outcome).await.expect("hget");
        counted.unwrap_or(0)
    }

    async fn processing(&mut self) -> u64 {
        self.connection.llen(self.keys.worker_processing_list("w1")).await.expect("llen")
    }

    async fn dead_letters(&mut self) -> Vec<String> {
        self.connection.lrange(self.keys.dead_letters(), 0, -1).await.expect("lrange")
    }

    async fn dead_letter_bytes(&mut self) -> u64 {
        let bytes: Option<u64> = self.connection.get(self.keys.dead_letter_bytes()).await.expect("get");
        bytes.unwrap_or(0)
    }

    async fn dead_letters_dropped(&mut self) -> u64 {
        let dropped: Option<u64> = self.connection.get(self.keys.dead_letters_dropped()).await.expect("get");
        dropped.unwrap_or(0)
    }
}

fn dead_letter_for(job: &JobEnvelope, raw_envelope: &str, last_error: &str) -> DeadLetter {
    DeadLetter {
        job_id: Some(job.id),
        reason: "poison_job".to_owned(),
        last_error: last_error.to_owned(),
        attempts: 1,
        worker_id: "w1".to_owned(),
        dead_at_ms: ENDED_AT_MS,
        raw_envelope: raw_envelope.to_owned(),
    }
}

fn ending(status: JobStatus, tokens_used: u64) -> JobEnding<'static> {
    JobEnding { status, tokens_used, dead_letter: None }
}
