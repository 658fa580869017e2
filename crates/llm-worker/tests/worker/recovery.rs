//! No job lost: dead workers' jobs are recovered, poison jobs set aside, a stopping worker puts work back.

use std::time::Duration;

use protocol::settings::MockLlmSettings;
use protocol::{JobStatus, Lane, StreamEvent};
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::{StackOptions, TestStack};

use crate::{chat_envelope, enqueue, replay_log_when_final, token_text};

fn slow_answers() -> StackOptions {
    StackOptions {
        gateways: 1,
        workers: 0,
        mock_llm: MockLlmSettings {
            tokens_per_answer: 30,
            time_to_first_token_ms: 5,
            inter_token_delay_ms: 40,
            ..MockLlmSettings::default()
        },
    }
}

#[tokio::test]
async fn a_worker_killed_mid_job_has_its_job_finished_by_another_and_the_client_sees_reset_then_the_whole_answer()
 {
    let mut stack = TestStack::start(slow_answers()).await;
    stack.add_worker_with(|settings| settings.worker.id = "doomed".to_owned());
    let created: Value =
        stack.post_chat(0, &json!({"message": "survive a crash"})).await.json().await.expect("json");
    let mut events = stack.open_events(0, created["events_url"].as_str().expect("url")).await;
    loop {
        let event = events.next_event_within(Duration::from_secs(10)).await.expect("an event");
        if event.event == "token" {
            break;
        }
    }

    let doomed = stack.workers.pop().expect("the worker");
    doomed.kill().await;
    stack.add_worker_with(|settings| settings.worker.id = "rescuer".to_owned());

    let rest = events.collect_all_within(Duration::from_secs(30)).await;
    let kinds: Vec<&str> = rest.iter().map(|event| event.event.as_str()).collect();
    let reset_at = kinds.iter().position(|kind| *kind == "reset").expect("a reset event");
    let after_reset: String = rest[reset_at..]
        .iter()
        .filter(|event| event.event == "token")
        .map(|event| {
            serde_json::from_str::<Value>(&event.data).expect("json")["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(after_reset, mock_llm::answer_text("survive a crash", 30), "the whole answer after the reset");
    assert_eq!(kinds.last(), Some(&"done"));

    let mut redis = stack.redis_connection().await;
    let job_id: protocol::JobId = created["id"].as_str().expect("id").parse().expect("job id");
    let worker: String = redis.hget(stack.keys().job_state(&job_id), "worker").await.expect("hget");
    assert_eq!(worker, "rescuer");
    let registered: Vec<String> = redis.smembers(stack.keys().worker_registry()).await.expect("smembers");
    assert_eq!(registered, vec!["rescuer".to_owned()], "the dead worker is forgotten once recovered");
    assert_eq!(stack.mock_llm.stats().await.requests, 2);
}

#[tokio::test]
async fn a_job_whose_workers_keep_dying_goes_to_the_dead_letter_list_as_a_poison_job() {
    let mut stack = TestStack::start_with(
        StackOptions { gateways: 0, workers: 0, ..StackOptions::default() },
        |settings| {
            settings.worker.max_recoveries = 1;
            settings.worker.reaper_interval_ms = 100;
        },
    )
    .await;
    let mut redis = stack.redis_connection().await;
    let keys = stack.keys();
    // Two jobs held by a worker that died: one recovered once already, one never.
    let mut poison = chat_envelope("poison");
    poison.recoveries = 1;
    poison.attempt = 2;
    let fresh = chat_envelope("fresh");
    for job in [&poison, &fresh] {
        enqueue(&stack, job).await;
    }
    let queue = keys.lane_queue(Lane::Standard);
    let _: () = redis.del(&queue).await.expect("del");
    let _: () = redis
        .rpush(keys.worker_processing_list("ghost"), vec![poison.encode(), fresh.encode()])
        .await
        .expect("rpush");
    let _: () = redis.sadd(keys.worker_registry(), "ghost").await.expect("sadd");

    stack.add_worker();
    let poisoned = replay_log_when_final(&stack, &poison.id).await;
    match poisoned.as_slice() {
        [StreamEvent::Error { code, .. }] => assert_eq!(code, "job_failed"),
        other => panic!("the client sees one error, got {other:?}"),
    }
    let status: String = redis.hget(keys.job_state(&poison.id), "status").await.expect("hget");
    assert_eq!(status, JobStatus::Failed.as_str());
    let letters: Vec<String> = redis.lrange(keys.dead_letters(), 0, -1).await.expect("lrange");
    assert_eq!(letters.len(), 1);
    let letter = protocol::dead_letter::DeadLetter::decode(&letters[0]).expect("dead letter");
    assert_eq!((letter.reason.as_str(), letter.job_id), ("poison_job", Some(poison.id)));

    let completed = replay_log_when_final(&stack, &fresh.id).await;
    assert_eq!(token_text(&completed), mock_llm::answer_text("fresh", 12), "the other job was simply served");
    assert_eq!(stack.mock_llm.stats().await.requests, 1, "the poison job never reached the LLM again");
}

#[tokio::test]
async fn a_stopping_worker_finishes_what_it_can_and_puts_the_rest_back() {
    // A drain long enough for a 1.2 s answer; a hung answer never finishes within it.
    let mut stack =
        TestStack::start_with(slow_answers(), |settings| settings.worker.drain_timeout_s = 8).await;
    stack.add_worker();
    let finishing: Value =
        stack.post_chat(0, &json!({"message": "finished while draining"})).await.json().await.expect("json");
    let finishing_id: protocol::JobId = finishing["id"].as_str().expect("id").parse().expect("job id");
    let mut finishing_events = stack.open_events(0, finishing["events_url"].as_str().expect("url")).await;
    while finishing_events.next_event_within(Duration::from_secs(10)).await.expect("an event").event
        != "token"
    {}

    // The next upstream call hangs, so its chat is still running when the drain ends.
    stack.configure_mock_llm(json!({"hang_rate": 1.0})).await;
    let interrupted: Value =
        stack.post_chat(0, &json!({"message": "interrupted"})).await.json().await.expect("json");
    let interrupted_id: protocol::JobId = interrupted["id"].as_str().expect("id").parse().expect("job id");
    stack
        .wait_until("the second chat's upstream call hangs", Duration::from_secs(10), || async {
            stack.mock_llm.stats().await.hung == 1
        })
        .await;

    let stopping = stack.workers.pop().expect("the worker");
    stopping.stop().await;
    let mut redis = stack.redis_connection().await;
    let status: String = redis.hget(stack.keys().job_state(&finishing_id), "status").await.expect("hget");
    assert_eq!(status, "done", "the running chat finished during the drain");
    let status: String = redis.hget(stack.keys().job_state(&interrupted_id), "status").await.expect("hget");
    assert_eq!(status, "queued", "the unfinished job is back on its lane");
    let registered: u64 = redis.scard(stack.keys().worker_registry()).await.expect("scard");
    assert_eq!(registered, 0, "and the worker left cleanly");
    let finished = finishing_events.collect_all_within(Duration::from_secs(10)).await;
    assert_eq!(finished.last().expect("events").event, "done");
    assert!(finished.iter().all(|event| event.event != "reset"), "it ran once, without a restart");

    stack.configure_mock_llm(json!({"hang_rate": 0.0})).await;
    stack.add_worker();
    let rest = stack
        .open_events(0, interrupted["events_url"].as_str().expect("url"))
        .await
        .collect_all_within(Duration::from_secs(30))
        .await;
    assert_eq!(rest.last().expect("events").event, "done", "the job put back was served by another worker");
}
