//! How a job ends, once: the budget reservation settled by every kind of ending (on the budget of the day the job
//! was created), `recover_job` looking at the job before it requeues, the doorbell a requeue rings, the replay that
//! refuses a live job, and the dead-letter list's caps.

use std::collections::HashMap;

use protocol::dead_letter::{
    DeadLetter, DeadLetterCaps, ReplayOutcome, drop_dead_letter, replay_dead_letter,
};
use protocol::job_lifecycle::{
    CancelOutcome, DOORBELL_CAPACITY, FinishOutcome, JobEnding, JobFence, JobRecovery, JobStart,
    RecoveryOutcome, cancel_job, claim_next_job, dead_letter_job, enqueue_job, finish_job, recover_job,
    start_job,
};
use protocol::{JobEnvelope, JobStatus, Lane, RedisKeys, StreamEvent, Usage};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use test_support::{RedisServer, unique_key_prefix};

use crate::envelope;

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
        let fence = JobFence {
            job_id: &job.id,
            identity: &job.identity,
            worker_id: "w1",
            attempt: 1,
            raw_envelope,
            created_at_ms: job.created_at_ms,
        };
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

#[tokio::test]
async fn a_finished_job_settles_its_reservation_on_the_day_it_was_created_so_the_budget_holds_what_was_used()
{
    let mut scene = Scene::new().await;
    // Another chat of the same caller that day used 50 tokens; this one reserved 100 and used 30.
    let job = scene.queued_job(Some(100), 150).await;
    let raw = scene.running_job(&job).await;

    let finished = scene.finish(&job, &raw, ending(JobStatus::Done, 30), ROOMY).await;

    assert!(matches!(finished, FinishOutcome::Finished { .. }), "{finished:?}");
    assert_eq!(scene.budget(&job).await, Some(80), "50 + 30: the unused 70 went back");
    assert_eq!(scene.budget_of_the_end_day(&job).await, None, "nothing charged to the day it ended");
    let again = scene.finish(&job, &raw, ending(JobStatus::Done, 30), ROOMY).await;
    assert_eq!(again, FinishOutcome::AlreadyFinished);
    assert_eq!(scene.budget(&job).await, Some(80), "settled once");
}

#[tokio::test]
async fn a_job_that_used_more_than_it_reserved_is_charged_the_difference() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(40), 40).await;
    let raw = scene.running_job(&job).await;

    scene.finish(&job, &raw, ending(JobStatus::Done, 55), ROOMY).await;

    assert_eq!(scene.budget(&job).await, Some(55));
}

#[tokio::test]
async fn a_job_admitted_before_reservations_is_charged_in_full() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(None, 10).await;
    let raw = scene.running_job(&job).await;

    scene.finish(&job, &raw, ending(JobStatus::Done, 25), ROOMY).await;

    assert_eq!(scene.budget(&job).await, Some(35));
}

#[tokio::test]
async fn an_expired_or_cancelled_running_job_gives_back_what_it_did_not_use() {
    let mut scene = Scene::new().await;
    let expired = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&expired).await;
    scene.finish(&expired, &raw, ending(JobStatus::Expired, 0), ROOMY).await;
    assert_eq!(scene.budget(&expired).await, Some(0), "an expired job gave its whole reservation back");

    let cancelled = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&cancelled).await;
    scene.finish(&cancelled, &raw, ending(JobStatus::Cancelled, 12), ROOMY).await;
    assert_eq!(scene.budget(&cancelled).await, Some(12), "a cancelled job pays for the text it streamed");
}

#[tokio::test]
async fn a_give_back_never_creates_a_budget_key() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 0).await;
    let _: () = scene.connection.del(scene.budget_key(&job)).await.expect("del");
    let raw = scene.running_job(&job).await;

    scene.finish(&job, &raw, ending(JobStatus::Done, 30), ROOMY).await;

    assert_eq!(scene.budget(&job).await, None, "a day does not start below zero");
}

#[tokio::test]
async fn cancelling_a_queued_job_gives_its_reservation_back_once() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 130).await;

    let cancel = |scene: &mut Scene| {
        let (keys, job) = (scene.keys.clone(), job.clone());
        let mut connection = scene.connection.clone();
        async move {
            cancel_job(
                &mut connection,
                &keys,
                &job.id,
                &job.identity,
                job.created_at_ms,
                "bye",
                30,
                ENDED_AT_MS,
            )
            .await
            .expect("cancel")
        }
    };
    assert_eq!(cancel(&mut scene).await, CancelOutcome::Cancelled);
    assert_eq!(cancel(&mut scene).await, CancelOutcome::AlreadyFinal { status: "cancelled".to_owned() });

    assert_eq!(scene.budget(&job).await, Some(30));
}

#[tokio::test]
async fn a_poison_job_is_dead_lettered_with_its_reservation_given_back() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&job).await;
    let letter = dead_letter_for(&job, &raw, "died too often");

    let outcome = scene.recover(&job, &raw, Some(&letter), ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::DeadLettered);
    assert_eq!(scene.budget(&job).await, Some(0));
    assert_eq!(scene.dead_letters().await, vec![letter.encode()]);
    assert_eq!(scene.dead_letter_bytes().await, letter.encode().len() as u64, "its size is kept beside it");
    assert_eq!(scene.state(&job).await["status"], "failed");
}

#[tokio::test]
async fn recovering_a_job_that_already_ended_only_removes_its_entry() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&job).await;
    scene.finish(&job, &raw, ending(JobStatus::Done, 30), ROOMY).await;
    // The ending landed but its entry is still listed (as when the ending's reply was lost and the worker died).
    let _: () = scene.connection.rpush(scene.keys.worker_processing_list("w1"), &raw).await.expect("rpush");

    let outcome = scene.recover(&job, &raw, None, ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::Released);
    assert_eq!(scene.processing().await, 0);
    let lane: u64 = scene.connection.llen(scene.keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(lane, 0, "an ended job never runs again");
    assert_eq!(scene.state(&job).await["status"], "done");
    assert_eq!(scene.budget(&job).await, Some(30), "and it is not settled again");
}

#[tokio::test]
async fn recovering_a_job_another_attempt_owns_only_removes_this_workers_entry() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(None, 0).await;
    let raw = scene.running_job(&job).await;
    // Another worker took it over meanwhile (this entry is a stale copy).
    let _: () = scene.connection.hset(scene.keys.job_state(&job.id), "worker", "w2").await.expect("hset");

    let outcome = scene.recover(&job, &raw, None, ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::Released);
    assert_eq!(scene.processing().await, 0);
    let state = scene.state(&job).await;
    assert_eq!(
        (state["status"].as_str(), state["worker"].as_str()),
        ("running", "w2"),
        "w2's attempt goes on"
    );
    let lane: u64 = scene.connection.llen(scene.keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(lane, 0);
}

#[tokio::test]
async fn recovering_a_job_its_client_cancelled_ends_it_as_cancelled_instead_of_running_it_again() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&job).await;
    let cancel =
        cancel_job(&mut scene.connection, &scene.keys, &job.id, &job.identity, CREATED_AT_MS, "bye", 30, 7)
            .await
            .expect("cancel");
    assert_eq!(cancel, CancelOutcome::Cancelling { worker_id: "w1".to_owned() });
    let active_before: u64 =
        scene.connection.zcard(scene.keys.active_chats(&job.identity)).await.expect("zcard");
    assert_eq!(active_before, 1);

    // Its worker died before it could end the job.
    let outcome = scene.recover(&job, &raw, None, ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::Cancelled);
    match scene.replay_log(&job).await.as_slice() {
        [StreamEvent::Error { seq: 1, code, .. }] => assert_eq!(code, "cancelled"),
        other => panic!("one cancelled error event, not {other:?}"),
    }
    assert_eq!(scene.state(&job).await["status"], "cancelled");
    let active: u64 = scene.connection.zcard(scene.keys.active_chats(&job.identity)).await.expect("zcard");
    assert_eq!(active, 0, "off the caller's active chats");
    assert_eq!(scene.outcome_count("cancelled").await, 1);
    assert_eq!(scene.budget(&job).await, Some(0), "its reservation went back");
    let lane: u64 = scene.connection.llen(scene.keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(lane, 0, "it never runs again");
    assert_eq!(scene.processing().await, 0);
}

#[tokio::test]
async fn a_requeued_job_rings_the_doorbell_and_the_doorbell_stays_capped() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 100).await;
    let _: () = scene.connection.del(scene.keys.queue_doorbell()).await.expect("del");
    let raw = scene.running_job(&job).await;

    let outcome = scene.recover(&job, &raw, None, ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::Requeued);
    let rings: u64 = scene.connection.llen(scene.keys.queue_doorbell()).await.expect("llen");
    assert_eq!(rings, 1, "an idle worker is woken for it");
    assert_eq!(scene.budget(&job).await, Some(100), "a requeued job keeps its reservation");
    assert_eq!(scene.state(&job).await["status"], "queued");

    // Once more with a full doorbell: it stays at its cap.
    let again = scene.running_job(&JobEnvelope { attempt: job.attempt + 1, ..job.clone() }).await;
    let full = vec!["1"; DOORBELL_CAPACITY as usize];
    let _: () = scene.connection.del(scene.keys.queue_doorbell()).await.expect("del");
    let _: () = scene.connection.rpush(scene.keys.queue_doorbell(), full).await.expect("rpush");
    let requeued = JobEnvelope { attempt: job.attempt + 1, ..job.clone() };
    assert_eq!(scene.recover(&requeued, &again, None, ROOMY).await, RecoveryOutcome::Requeued);
    let rings: u64 = scene.connection.llen(scene.keys.queue_doorbell()).await.expect("llen");
    assert_eq!(rings, DOORBELL_CAPACITY);
}

#[tokio::test]
async fn a_dead_letter_whose_job_is_queued_or_running_is_not_replayed() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(None, 0).await;
    let record = dead_letter_for(&job, &job.encode(), "an earlier copy failed").encode();
    let _: () = scene.connection.rpush(scene.keys.dead_letters(), &record).await.expect("rpush");
    let fresh = DeadLetter::decode(&record).expect("decodes").replayable_envelope(5, 60).expect("replayable");
    let live_created_at = scene.state(&job).await["created_at_ms"].clone();

    for status in ["queued", "running"] {
        let _: () =
            scene.connection.hset(scene.keys.job_state(&job.id), "status", status).await.expect("hset");
        let replayed = replay_dead_letter(&mut scene.connection, &scene.keys, &record, &fresh, 60)
            .await
            .expect("replay");
        assert_eq!(replayed, ReplayOutcome::JobActive, "{status}");
    }

    assert_eq!(scene.dead_letters().await, vec![record.clone()], "the record stays");
    let state = scene.state(&job).await;
    assert_eq!(state["created_at_ms"], live_created_at, "the live copy's state is untouched");
    let lane: u64 = scene.connection.llen(scene.keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(lane, 1, "only the live copy waits");

    // Once that copy ended, the record replays.
    let _: () = scene.connection.hset(scene.keys.job_state(&job.id), "status", "failed").await.expect("hset");
    let replayed =
        replay_dead_letter(&mut scene.connection, &scene.keys, &record, &fresh, 60).await.expect("replay");
    assert!(matches!(replayed, ReplayOutcome::Queued(_)), "{replayed:?}");
}

#[tokio::test]
async fn the_dead_letter_list_drops_its_oldest_records_past_its_count_cap_and_counts_them() {
    let mut scene = Scene::new().await;
    let caps = DeadLetterCaps { max_records: 2, max_bytes: 1 << 20 };
    let mut records = Vec::new();
    for index in 0..4 {
        let raw = format!("{{\"not an envelope\": {index}}}");
        let _: () =
            scene.connection.rpush(scene.keys.worker_processing_list("w1"), &raw).await.expect("rpush");
        let letter = DeadLetter { job_id: None, ..dead_letter_for(&envelope(Lane::Standard), &raw, "bad") };
        assert!(dead_letter_job(&mut scene.connection, &scene.keys, &letter, caps).await.expect("move"));
        records.push(letter.encode());
    }

    assert_eq!(scene.dead_letters().await, records[2..].to_vec(), "the newest two are kept");
    assert_eq!(scene.dead_letters_dropped().await, 2);
    let kept_bytes: usize = records[2..].iter().map(String::len).sum();
    assert_eq!(scene.dead_letter_bytes().await, kept_bytes as u64);
}

#[tokio::test]
async fn the_dead_letter_list_drops_its_oldest_records_past_its_byte_cap_from_every_script_that_pushes() {
    let mut scene = Scene::new().await;
    // A failed job (finish_job) and a poison job (recover_job) each push a record of about the same size.
    let failed = scene.queued_job(None, 0).await;
    let failed_raw = scene.running_job(&failed).await;
    let failed_letter = dead_letter_for(&failed, &failed_raw, "the provider failed");
    let record_bytes = failed_letter.encode().len() as u64;
    // Room for one record and a half: each push leaves only the newest record.
    let caps = DeadLetterCaps { max_records: 100, max_bytes: record_bytes + record_bytes / 2 };
    let failure = JobEnding { status: JobStatus::Failed, tokens_used: 0, dead_letter: Some(&failed_letter) };
    scene.finish(&failed, &failed_raw, failure, caps).await;
    assert_eq!(scene.dead_letters().await, vec![failed_letter.encode()]);

    let poison = scene.queued_job(None, 0).await;
    let poison_raw = scene.running_job(&poison).await;
    let poison_letter = dead_letter_for(&poison, &poison_raw, "died too often");
    assert_eq!(
        scene.recover(&poison, &poison_raw, Some(&poison_letter), caps).await,
        RecoveryOutcome::DeadLettered
    );

    assert_eq!(scene.dead_letters().await, vec![poison_letter.encode()], "the oldest went");
    assert_eq!(scene.dead_letters_dropped().await, 1);
    assert_eq!(scene.dead_letter_bytes().await, poison_letter.encode().len() as u64);
}

#[tokio::test]
async fn dropping_or_replaying_a_dead_letter_takes_its_bytes_off_the_count() {
    let mut scene = Scene::new().await;
    let mut records = Vec::new();
    for _ in 0..2 {
        let job = scene.queued_job(None, 0).await;
        let raw = scene.running_job(&job).await;
        let letter = dead_letter_for(&job, &raw, "died too often");
        scene.recover(&job, &raw, Some(&letter), ROOMY).await;
        records.push(letter.encode());
    }
    let total: usize = records.iter().map(String::len).sum();
    assert_eq!(scene.dead_letter_bytes().await, total as u64);

    assert!(drop_dead_letter(&mut scene.connection, &scene.keys, &records[0]).await.expect("drop"));
    assert!(!drop_dead_letter(&mut scene.connection, &scene.keys, &records[0]).await.expect("drop"), "gone");
    assert_eq!(scene.dead_letter_bytes().await, records[1].len() as u64);

    let fresh =
        DeadLetter::decode(&records[1]).expect("decodes").replayable_envelope(5, 60).expect("replayable");
    let replayed = replay_dead_letter(&mut scene.connection, &scene.keys, &records[1], &fresh, 60)
        .await
        .expect("replay");
    assert!(matches!(replayed, ReplayOutcome::Queued(_)), "{replayed:?}");
    assert_eq!(scene.dead_letter_bytes().await, 0);
    assert!(scene.dead_letters().await.is_empty());
}
