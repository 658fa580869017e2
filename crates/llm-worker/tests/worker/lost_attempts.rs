//! No attempt stranded while its worker lives: an attempt that loses Redis (a real stall of the test's
//! redis-server, by SIGSTOP and SIGCONT) or its ownership ends in a terminal event, a requeue or a dead letter,
//! and leaves nothing in the worker's processing list. Also the cancellations an attempt must honour at its start.

use std::process::Command;
use std::time::Duration;

use protocol::job_lifecycle::start_job;
use protocol::{JobEnvelope, JobId, StreamEvent, unix_time_ms};
use redis::AsyncCommands;
use test_support::{StackOptions, TestStack};

use crate::{chat_envelope, enqueue, replay_log_when_final, token_text};

/// A paused redis-server, resumed when dropped (so a failing test never leaves it stopped).
struct PausedRedis {
    pid: String,
}

impl PausedRedis {
    /// Stops the stack's redis-server process (SIGSTOP): every command waits, as in a long stall.
    async fn pause(stack: &TestStack) -> Self {
        let mut connection = stack.redis_connection().await;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut connection).await.expect("info");
        let pid = info
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .expect("INFO names the process")
            .trim()
            .to_owned();
        signal(&pid, "-STOP");
        Self { pid }
    }
}

impl Drop for PausedRedis {
    fn drop(&mut self) {
        signal(&self.pid, "-CONT");
    }
}

fn signal(pid: &str, which: &str) {
    let status = Command::new("kill").args([which, pid]).status().expect("run kill");
    assert!(status.success(), "kill {which} {pid}");
}

fn one_worker() -> StackOptions {
    StackOptions { gateways: 0, workers: 1, ..StackOptions::default() }
}

/// An envelope nobody needs to listen to (the worker tests have no gateway), so only the fault decides its end.
fn unattended(prompt: &str) -> JobEnvelope {
    JobEnvelope { unattended: true, ..chat_envelope(prompt) }
}

async fn the_only_worker(stack: &TestStack) -> String {
    let mut connection = stack.redis_connection().await;
    let mut workers: Vec<String> = Vec::new();
    stack
        .wait_until("the worker registers", Duration::from_secs(10), || {
            let registry = stack.keys().worker_registry();
            let mut connection = connection.clone();
            async move {
                let found: Vec<String> = connection.smembers(registry).await.expect("smembers");
                found.len() == 1
            }
        })
        .await;
    workers
        .extend::<Vec<String>>(connection.smembers(stack.keys().worker_registry()).await.expect("smembers"));
    workers.pop().expect("one worker")
}

async fn wait_for_first_token(stack: &TestStack, job_id: &JobId) {
    let connection = stack.redis_connection().await;
    stack
        .wait_until("the job streams its first token", Duration::from_secs(10), || {
            let (log, mut connection) = (stack.keys().job_replay_log(job_id), connection.clone());
            async move {
                let entries: Vec<String> = connection.lrange(log, 0, -1).await.expect("lrange");
                entries.iter().any(|entry| entry.contains("\"token\""))
            }
        })
        .await;
}

async fn processing_entries(stack: &TestStack, worker_id: &str) -> u64 {
    let mut connection = stack.redis_connection().await;
    connection.llen(stack.keys().worker_processing_list(worker_id)).await.expect("llen")
}

#[tokio::test]
async fn a_redis_stall_mid_stream_ends_the_job_with_the_whole_answer_after_a_reset_and_strands_nothing() {
    let stack = TestStack::start(one_worker()).await;
    let worker_id = the_only_worker(&stack).await;
    let job = unattended("stalled [[mock tokens=40 inter_token_ms=50]]");
    enqueue(&stack, &job).await;
    wait_for_first_token(&stack, &job.id).await;

    // Longer than the stream writer's tries (500 ms command deadline, three tries): the attempt loses Redis.
    let paused = PausedRedis::pause(&stack).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(paused);

    let events = replay_log_when_final(&stack, &job.id).await;
    match events.last() {
        Some(StreamEvent::Done { .. }) => {
            let reset_at = events.iter().rposition(|event| matches!(event, StreamEvent::Reset { .. }));
            let reset_at = reset_at.expect("a reset before the attempt that finished");
            assert_eq!(token_text(&events[reset_at..]), mock_llm::answer_text("stalled", 40));
        }
        Some(StreamEvent::Error { code, .. }) => assert!(!code.is_empty(), "an error with a code"),
        other => panic!("the job ends with done or an error, not {other:?}"),
    }
    assert_eq!(processing_entries(&stack, &worker_id).await, 0, "nothing left in the processing list");
}

#[tokio::test]
async fn an_attempt_that_lost_its_job_to_another_stops_its_upstream_call_and_drops_only_its_own_entry() {
    let stack = TestStack::start(one_worker()).await;
    let worker_id = the_only_worker(&stack).await;
    let job = unattended("taken over [[mock tokens=200 inter_token_ms=30]]");
    enqueue(&stack, &job).await;
    wait_for_first_token(&stack, &job.id).await;

    // Another attempt takes the job over (as after this worker was presumed dead): its start appends a reset,
    // so this worker's next write is refused.
    let mut connection = stack.redis_connection().await;
    start_job(&mut connection, &stack.keys(), &job.id, "w-other", unix_time_ms(), 600).await.expect("start");

    stack
        .wait_until("the fenced attempt drops its upstream call", Duration::from_secs(10), || async {
            stack.mock_llm.stats().await.cancelled_by_client == 1
        })
        .await;
    stack
        .wait_until("the fenced attempt drops its entry", Duration::from_secs(10), || {
            let (stack, worker_id) = (&stack, worker_id.clone());
            async move { processing_entries(stack, &worker_id).await == 0 }
        })
        .await;
    let state: std::collections::HashMap<String, String> =
        connection.hgetall(stack.keys().job_state(&job.id)).await.expect("hgetall");
    assert_eq!(
        (state["status"].as_str(), state["worker"].as_str()),
        ("running", "w-other"),
        "the other attempt still owns the job"
    );
    let lane: u64 = connection.llen(stack.keys().lane_queue(job.lane)).await.expect("llen");
    assert_eq!(lane, 0, "it was not requeued behind the other attempt's back");
}

#[tokio::test]
async fn a_job_whose_cancellation_start_reports_ends_cancelled_without_reaching_the_llm() {
    let mut stack =
        TestStack::start(StackOptions { gateways: 0, workers: 0, ..StackOptions::default() }).await;
    let job = unattended("cancelled before it ran");
    enqueue(&stack, &job).await;
    let mut connection = stack.redis_connection().await;
    let _: () =
        connection.hset(stack.keys().job_state(&job.id), "cancel_requested", "1").await.expect("hset");

    stack.add_worker();

    let events = replay_log_when_final(&stack, &job.id).await;
    match events.as_slice() {
        [StreamEvent::Error { code, .. }] => assert_eq!(code, "cancelled"),
        other => panic!("one cancelled error, not {other:?}"),
    }
    assert_eq!(stack.mock_llm.stats().await.requests, 0);
}

#[tokio::test]
async fn a_cancel_published_the_moment_the_job_starts_is_not_lost() {
    let stack = TestStack::start(one_worker()).await;
    let worker_id = the_only_worker(&stack).await;
    // A slow first token keeps the job in its upstream call once it starts.
    let job = unattended("cancel me at once [[mock ttft_ms=20000]]");
    enqueue(&stack, &job).await;
    let mut connection = stack.redis_connection().await;
    stack
        .wait_until("the job starts", Duration::from_secs(10), || {
            let (state, mut connection) = (stack.keys().job_state(&job.id), connection.clone());
            async move {
                let status: Option<String> = connection.hget(state, "status").await.expect("hget");
                status.as_deref() == Some("running")
            }
        })
        .await;

    // What the gateway's cancel does for a running job: mark it, then tell its worker.
    let _: () =
        connection.hset(stack.keys().job_state(&job.id), "cancel_requested", "1").await.expect("hset");
    let _: () = connection
        .publish(stack.keys().worker_cancel_channel(&worker_id), job.id.to_string())
        .await
        .expect("pub");

    let events = replay_log_when_final(&stack, &job.id).await;
    match events.last() {
        Some(StreamEvent::Error { code, .. }) => assert_eq!(code, "cancelled"),
        other => panic!("the job ends cancelled, not {other:?}"),
    }
    assert_eq!(processing_entries(&stack, &worker_id).await, 0);
}

#[tokio::test]
async fn an_attempt_lost_to_redis_does_not_poison_a_job_but_a_job_that_keeps_losing_them_ends() {
    let stack = TestStack::start(StackOptions { gateways: 0, workers: 0, ..StackOptions::default() }).await;
    let keys = stack.keys();
    let reaper = llm_worker::reaper::Reaper {
        redis: protocol::RedisConnections::new(&stack.settings.redis).expect("connections"),
        keys: keys.clone(),
        worker_id: "w-live".to_owned(),
        max_recoveries: 1,
        replay_ttl_s: 60,
        dead_letter_caps: protocol::dead_letter::DeadLetterCaps::from_settings(&stack.settings),
    };
    let mut connection = stack.redis_connection().await;
    // Two jobs a live worker lost to Redis: one on its second attempt, one on its ninth (with 1 recovery allowed,
    // 4 × 2 = 8 attempts is the most).
    let first_loss = JobEnvelope { attempt: 2, ..unattended("lost once") };
    let keeps_losing = JobEnvelope { attempt: 9, ..unattended("lost again and again") };
    for job in [&first_loss, &keeps_losing] {
        enqueue(&stack, job).await;
        let _: () = connection.hset(keys.job_state(&job.id), "status", "running").await.expect("hset");
        let _: () = connection.hset(keys.job_state(&job.id), "worker", "w-live").await.expect("hset");
        let _: () =
            connection.rpush(keys.worker_processing_list("w-live"), job.encode()).await.expect("rpush");
    }
    let _: () = connection.del(keys.lane_queue(first_loss.lane)).await.expect("del");

    let cause = llm_worker::reaper::RecoveryCause::AttemptLost;
    let requeued = reaper.recover_one("w-live", &first_loss.encode(), cause).await.expect("recover");
    let poisoned = reaper.recover_one("w-live", &keeps_losing.encode(), cause).await.expect("recover");

    assert_eq!(requeued, protocol::job_lifecycle::RecoveryOutcome::Requeued);
    let waiting: Vec<String> =
        connection.lrange(keys.lane_queue(first_loss.lane), 0, -1).await.expect("lrange");
    let waiting = JobEnvelope::decode(&waiting[0]).expect("envelope");
    assert_eq!((waiting.attempt, waiting.recoveries), (3, 0), "not counted as a recovery");
    assert_eq!(poisoned, protocol::job_lifecycle::RecoveryOutcome::DeadLettered);
    let letters: Vec<String> = connection.lrange(keys.dead_letters(), 0, -1).await.expect("lrange");
    let letter = protocol::dead_letter::DeadLetter::decode(&letters[0]).expect("dead letter");
    assert_eq!((letter.reason.as_str(), letter.job_id), ("poison_job", Some(keeps_losing.id)));
}

#[tokio::test]
async fn an_entry_a_lost_write_left_in_a_live_workers_processing_list_is_handed_back_and_answered() {
    let stack =
        TestStack::start_with(one_worker(), |settings| settings.worker.reaper_interval_ms = 200).await;
    let worker_id = the_only_worker(&stack).await;
    let keys = stack.keys();
    // A first chat answered shows the worker is past its startup (which recovers an earlier life's list).
    let first = unattended("first [[mock tokens=2]]");
    enqueue(&stack, &first).await;
    replay_log_when_final(&stack, &first.id).await;
    let job = unattended("left behind [[mock tokens=12]]");
    // What Redis holds after a restart from an append-only file that missed the ending this worker saw land: the
    // job running on this worker and its entry in the worker's processing list, though no task of it holds it.
    let mut connection = stack.redis_connection().await;
    let _: () = connection
        .hset_multiple(
            keys.job_state(&job.id),
            &[
                ("status", "running".to_owned()),
                ("worker", worker_id.clone()),
                ("attempt", "1".to_owned()),
                ("lane", job.lane.as_str().to_owned()),
                ("identity", job.identity.clone()),
                ("created_at_ms", job.created_at_ms.to_string()),
            ],
        )
        .await
        .expect("hset");
    let _: () = connection.expire(keys.job_state(&job.id), 600).await.expect("expire");
    let _: () = connection.rpush(keys.worker_processing_list(&worker_id), job.encode()).await.expect("rpush");

    let events = replay_log_when_final(&stack, &job.id).await;

    assert!(matches!(events.first(), Some(StreamEvent::Reset { .. })), "a new attempt: {events:?}");
    assert!(matches!(events.last(), Some(StreamEvent::Done { .. })), "answered: {events:?}");
    assert_eq!(token_text(&events), mock_llm::answer_text("left behind", 12));
    stack
        .wait_until("the processing list is empty", Duration::from_secs(10), || {
            let (stack, worker_id) = (&stack, worker_id.clone());
            async move { processing_entries(stack, &worker_id).await == 0 }
        })
        .await;
}
