//! The llm-worker against a real redis-server and mock-llm: jobs are put on the lanes directly, as a gateway
//! would, and the replay log is read back.

mod abandonment_grace;
mod cancellation;
mod lost_attempts;
mod recovery;
mod upstream;
mod upstream_backpressure;
mod worker_listener;

use std::time::Duration;

use protocol::job_lifecycle::enqueue_job;
use protocol::{JobEnvelope, JobId, JobStatus, Lane, StreamEvent, unix_time_ms};
use redis::AsyncCommands;
use test_support::{StackOptions, TestStack};

pub fn chat_envelope(prompt: &str) -> JobEnvelope {
    test_support::sample_envelope(prompt, Lane::Standard)
}

pub async fn enqueue(stack: &TestStack, envelope: &JobEnvelope) {
    let mut connection = stack.redis_connection().await;
    enqueue_job(&mut connection, &stack.keys(), envelope, 600).await.expect("enqueue").expect("new job");
}

/// Waits (bounded) until the job reaches a final status, and returns its replay log. The final status must be the
/// one the log's last event tells the client: `done` for a done event, and for an error event the status its code
/// names (`cancelled`, `expired`), `failed` for any other code.
pub async fn replay_log_when_final(stack: &TestStack, job_id: &JobId) -> Vec<StreamEvent> {
    let connection = stack.redis_connection().await;
    let state_key = stack.keys().job_state(job_id);
    let status = stack
        .wait_for(&format!("job {job_id} reached a final status"), Duration::from_secs(20), || {
            let (mut connection, state_key) = (connection.clone(), state_key.clone());
            async move {
                let status: Option<String> = connection.hget(&state_key, "status").await.expect("hget");
                status.filter(|status| status != "queued" && status != "running")
            }
        })
        .await;
    let mut connection = connection;
    let entries: Vec<String> =
        connection.lrange(stack.keys().job_replay_log(job_id), 0, -1).await.expect("lrange");
    let events: Vec<StreamEvent> =
        entries.iter().map(|entry| StreamEvent::decode(entry).expect("event")).collect();
    let status_told_by_the_log = match events.last() {
        Some(StreamEvent::Done { .. }) => JobStatus::Done,
        Some(StreamEvent::Error { code, .. }) if code == "cancelled" => JobStatus::Cancelled,
        Some(StreamEvent::Error { code, .. }) if code == "expired" => JobStatus::Expired,
        Some(StreamEvent::Error { .. }) => JobStatus::Failed,
        other => panic!("job {job_id} is {status}, but its log does not end with done or error: {other:?}"),
    };
    assert_eq!(status, status_told_by_the_log.as_str(), "job {job_id}'s status matches its last event");
    events
}

pub fn token_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::Token { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_job_is_streamed_into_its_replay_log_in_order_and_leaves_the_processing_list() {
    let stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    let job = chat_envelope("what is a river");
    enqueue(&stack, &job).await;

    let events = replay_log_when_final(&stack, &job.id).await;
    assert_eq!(token_text(&events), mock_llm::answer_text("what is a river", 12));
    let seqs: Vec<u64> = events.iter().filter_map(StreamEvent::seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "seq = place in the log");
    match events.last().expect("events") {
        StreamEvent::Done { usage, finish_reason, .. } => {
            assert_eq!(usage.completion_tokens, 12);
            assert_eq!(usage.prompt_tokens, 4);
            assert_eq!(finish_reason, "stop");
        }
        other => panic!("the log ends with done, not {other:?}"),
    }
    let mut connection = stack.redis_connection().await;
    let worker_ids: Vec<String> =
        connection.smembers(stack.keys().worker_registry()).await.expect("smembers");
    assert_eq!(worker_ids.len(), 1, "the worker registered itself");
    let processing: u64 =
        connection.llen(stack.keys().worker_processing_list(&worker_ids[0])).await.expect("llen");
    assert_eq!(processing, 0);
    let heartbeat: Option<u64> =
        connection.get(stack.keys().worker_heartbeat(&worker_ids[0])).await.expect("get");
    assert!(heartbeat.is_some(), "a live worker keeps its heartbeat");
    let ttl: i64 = connection.ttl(stack.keys().job_replay_log(&job.id)).await.expect("ttl");
    let longest = stack.settings.job_state_ttl_s() as i64;
    assert!(ttl > 0 && ttl <= longest, "the replay log expires with the job's longest life: {ttl}");
}

#[tokio::test]
async fn fast_tokens_are_coalesced_into_batches_and_slow_ones_are_not_held_back() {
    let stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    let fast = chat_envelope("fast [[mock tokens=100 inter_token_ms=0]]");
    enqueue(&stack, &fast).await;
    let fast_events = replay_log_when_final(&stack, &fast.id).await;
    let fast_batches = fast_events.iter().filter(|event| matches!(event, StreamEvent::Token { .. })).count();
    assert_eq!(token_text(&fast_events), mock_llm::answer_text("fast", 100));
    assert!(fast_batches <= 100 / 32 + 3, "100 fast tokens took {fast_batches} batches");

    let slow = chat_envelope("slow [[mock tokens=3 inter_token_ms=120]]");
    enqueue(&stack, &slow).await;
    let slow_events = replay_log_when_final(&stack, &slow.id).await;
    let slow_batches = slow_events.iter().filter(|event| matches!(event, StreamEvent::Token { .. })).count();
    assert_eq!(slow_batches, 3, "tokens 120 ms apart are each written as they come: no timer holds them");
}

#[tokio::test]
async fn an_undecodable_envelope_goes_to_the_dead_letter_list_and_the_worker_carries_on() {
    let stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    let mut connection = stack.redis_connection().await;
    let _: () =
        connection.rpush(stack.keys().lane_queue(Lane::Standard), "{\"version\": 99}").await.expect("rpush");
    let good = chat_envelope("still served");
    enqueue(&stack, &good).await;

    let events = replay_log_when_final(&stack, &good.id).await;
    assert!(matches!(events.last(), Some(StreamEvent::Done { .. })));
    let letters: Vec<String> = connection.lrange(stack.keys().dead_letters(), 0, -1).await.expect("lrange");
    assert_eq!(letters.len(), 1);
    let letter = protocol::dead_letter::DeadLetter::decode(&letters[0]).expect("dead letter");
    assert_eq!(letter.reason, "undecodable_envelope");
    assert_eq!(letter.raw_envelope, "{\"version\": 99}");
    assert!(letter.last_error.contains("version 99"), "{}", letter.last_error);
}

#[tokio::test]
async fn a_job_past_its_deadline_ends_expired_without_reaching_the_llm() {
    let stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    let mut late = chat_envelope("too late");
    late.deadline_ms = unix_time_ms() - 1;
    enqueue(&stack, &late).await;

    let events = replay_log_when_final(&stack, &late.id).await;
    match events.as_slice() {
        [StreamEvent::Error { code, .. }] => assert_eq!(code, "expired"),
        other => panic!("expected one expired error, got {other:?}"),
    }
    assert_eq!(stack.mock_llm.stats().await.requests, 0);

    // And it is counted where operators look.
    let mut connection = stack.redis_connection().await;
    let bucket = unix_time_ms() / 1000 / protocol::keys::ADMISSION_STATS_BUCKET_S;
    let mut expired = 0;
    for recent in [bucket, bucket - 1] {
        let counted: Option<u64> =
            connection.hget(stack.keys().job_outcome_counts(recent), "expired").await.expect("hget");
        expired += counted.unwrap_or(0);
    }
    assert_eq!(expired, 1);
}

#[tokio::test]
async fn a_restarted_job_first_tells_clients_to_discard_earlier_text() {
    let stack = TestStack::start(StackOptions { gateways: 0, workers: 0, ..StackOptions::default() }).await;
    let mut job = chat_envelope("again");
    enqueue(&stack, &job).await;
    // An earlier attempt had relayed some text before its worker died.
    let mut connection = stack.redis_connection().await;
    let earlier = StreamEvent::Token { seq: 1, text: "partial".to_owned() };
    let _: () =
        connection.rpush(stack.keys().job_replay_log(&job.id), earlier.encode()).await.expect("rpush");
    let queue = stack.keys().lane_queue(Lane::Standard);
    let _: () = connection.del(&queue).await.expect("del");
    job.attempt = 2;
    let _: () = connection.rpush(&queue, job.encode()).await.expect("rpush");

    let mut stack = stack;
    stack.add_worker();
    let events = replay_log_when_final(&stack, &job.id).await;
    assert_eq!(events[1], StreamEvent::Reset { seq: 2 });
    assert_eq!(token_text(&events[2..]), mock_llm::answer_text("again", 12));
}

#[tokio::test]
async fn an_upstream_error_ends_the_job_with_an_error_event() {
    let stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    let job = chat_envelope("refused [[mock status=400]]");
    enqueue(&stack, &job).await;
    let events = replay_log_when_final(&stack, &job.id).await;
    match events.last() {
        Some(StreamEvent::Error { code, message, .. }) => {
            assert_eq!(code, "upstream_rejected");
            assert!(message.contains("400"), "{message}");
        }
        other => panic!("expected an error event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stopped_worker_deregisters_and_removes_its_heartbeat() {
    let mut stack = TestStack::start(StackOptions { gateways: 0, ..StackOptions::default() }).await;
    let mut connection = stack.redis_connection().await;
    stack
        .wait_until("the worker registered", Duration::from_secs(5), || {
            let mut connection = connection.clone();
            let registry = stack.keys().worker_registry();
            async move { connection.scard::<_, u64>(registry).await.expect("scard") == 1 }
        })
        .await;
    let worker = stack.workers.pop().expect("one worker");
    worker.stop().await;
    let registered: u64 = connection.scard(stack.keys().worker_registry()).await.expect("scard");
    assert_eq!(registered, 0);
    let heartbeats: Vec<String> =
        connection.keys(format!("{}worker:*", stack.settings.redis.key_prefix)).await.expect("keys");
    assert!(heartbeats.is_empty(), "{heartbeats:?}");
}
