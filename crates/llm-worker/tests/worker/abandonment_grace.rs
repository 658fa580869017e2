//! Abandonment judged fairly: a job that waited past its grace is not cancelled on one silent sample (its client
//! may be reconnecting through a gateway restart), yet a job nobody listens to never reaches the LLM.

use std::time::Duration;

use protocol::{JobEnvelope, StreamEvent, unix_time_ms};
use redis::AsyncCommands;
use test_support::{StackOptions, TestStack};

use crate::{chat_envelope, enqueue, replay_log_when_final, token_text};

/// A stack with no worker yet, whose workers give up on a chat silent for four seconds (so the silence is also
/// confirmed over four seconds of samples).
async fn short_grace() -> TestStack {
    TestStack::start_with(StackOptions { gateways: 0, workers: 0, ..StackOptions::default() }, |settings| {
        settings.worker.abandon_grace_ms = 4_000
    })
    .await
}

/// A chat created ten seconds ago: it waited in the queue longer than the grace.
fn long_waiting(prompt: &str) -> JobEnvelope {
    let mut envelope = chat_envelope(prompt);
    envelope.created_at_ms = unix_time_ms() - 10_000;
    envelope
}

async fn wait_until_running(stack: &TestStack, job: &JobEnvelope) {
    let connection = stack.redis_connection().await;
    stack
        .wait_until("the job is taken", Duration::from_secs(10), || {
            let (state, mut connection) = (stack.keys().job_state(&job.id), connection.clone());
            async move {
                let status: Option<String> = connection.hget(state, "status").await.expect("hget");
                status.as_deref() == Some("running")
            }
        })
        .await;
}

#[tokio::test]
async fn a_client_that_reconnects_while_its_long_waiting_chat_is_taken_keeps_its_chat() {
    let mut stack = short_grace().await;
    let job = long_waiting("still here");
    enqueue(&stack, &job).await;
    stack.add_worker();
    wait_until_running(&stack, &job).await;

    // The client was between two gateways when the worker took its chat, and comes back after its retry delay.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut listener = stack.redis.client().get_async_pubsub().await.expect("pubsub");
    listener.subscribe(stack.keys().job_event_channel(&job.id)).await.expect("subscribe");

    let events = replay_log_when_final(&stack, &job.id).await;
    assert!(matches!(events.last(), Some(StreamEvent::Done { .. })), "{events:?}");
    assert_eq!(token_text(&events), mock_llm::answer_text("still here", 12));
}

#[tokio::test]
async fn a_long_waiting_chat_nobody_listens_to_is_cancelled_before_it_reaches_the_llm() {
    let mut stack = short_grace().await;
    let job = long_waiting("nobody here");
    enqueue(&stack, &job).await;
    stack.add_worker();

    let events = replay_log_when_final(&stack, &job.id).await;
    match events.as_slice() {
        [StreamEvent::Error { code, message, .. }] => {
            assert_eq!(code, "cancelled");
            assert!(message.contains("nobody"), "{message}");
        }
        other => panic!("one cancelled error, not {other:?}"),
    }
    assert_eq!(stack.mock_llm.stats().await.requests, 0, "no tokens spent on it");
}

#[tokio::test]
async fn a_chat_waiting_to_hear_its_listener_does_not_hold_up_the_workers_other_chats() {
    let mut stack = short_grace().await;
    let waiting = long_waiting("is anyone there");
    enqueue(&stack, &waiting).await;
    stack.add_worker();
    wait_until_running(&stack, &waiting).await;

    let fresh = JobEnvelope { unattended: true, ..chat_envelope("meanwhile") };
    enqueue(&stack, &fresh).await;
    let events = replay_log_when_final(&stack, &fresh.id).await;

    assert!(matches!(events.last(), Some(StreamEvent::Done { .. })), "{events:?}");
    let mut connection = stack.redis_connection().await;
    let waiting_log: u64 = connection.llen(stack.keys().job_replay_log(&waiting.id)).await.expect("llen");
    assert_eq!(waiting_log, 0, "the other chat was served while this one still waited for its listener");
}
