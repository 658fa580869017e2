//! Many concurrent chats across 2 gateways and 4 workers: each completes exactly once, complete and in order.

use std::time::Duration;

use futures::future::join_all;
use protocol::settings::MockLlmSettings;
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::{StackOptions, TestStack};

const CHATS: usize = 200;
const TOKENS_PER_ANSWER: usize = 24;

/// One chat through the browser flow: posted to one gateway, streamed from the other, so no state may hide in
/// a single gateway. Returns the job id and the events' (seq, type, text) in arrival order.
async fn run_one_chat(stack: &TestStack, index: usize) -> (String, String, Vec<(u64, String, String)>) {
    let prompt = format!("chat number {index}");
    let response = stack.post_chat(index % 2, &json!({ "message": prompt })).await;
    let status = response.status();
    let created: Value = response.json().await.expect("json");
    assert_eq!(status, 202, "chat {index} admitted: {created}");
    let mut events = stack.open_events((index + 1) % 2, created["events_url"].as_str().expect("url")).await;
    let all = events.collect_all_within(Duration::from_secs(120)).await;
    let relayed = all
        .iter()
        .filter(|event| event.event != "queued")
        .map(|event| {
            let data: Value = serde_json::from_str(&event.data).expect("json data");
            let seq = event.id.as_deref().expect("id").parse().expect("numeric id");
            (seq, event.event.clone(), data["text"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    (created["id"].as_str().expect("id").to_owned(), prompt, relayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_chats_across_two_gateways_and_four_workers_each_complete_once_in_order() {
    let options = StackOptions {
        gateways: 2,
        workers: 4,
        mock_llm: MockLlmSettings {
            tokens_per_answer: TOKENS_PER_ANSWER as u32,
            time_to_first_token_ms: 5,
            inter_token_delay_ms: 2,
            ..MockLlmSettings::default()
        },
    };
    // Fewer slots than chats, so part of them wait in the queue first.
    let stack = TestStack::start_with(options, |settings| {
        settings.worker.concurrency = 16;
        // 200 chats at once on a busy machine can hold a Redis reply past the 500 ms default, which answers 503
        // by design; this test is about every admitted chat completing once, not about a slow Redis.
        settings.redis.command_timeout_ms = 5_000;
    })
    .await;

    let results = join_all((0..CHATS).map(|index| run_one_chat(&stack, index))).await;

    let mut connection = stack.redis_connection().await;
    for (job_id, prompt, relayed) in &results {
        let seqs: Vec<u64> = relayed.iter().map(|(seq, _, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{job_id}: in order, no gaps, no repeats"
        );
        let kinds: Vec<&str> = relayed.iter().map(|(_, kind, _)| kind.as_str()).collect();
        assert_eq!(kinds.iter().filter(|kind| **kind == "done").count(), 1, "{job_id}: one done");
        assert_eq!(kinds.last(), Some(&"done"), "{job_id}: done is last");
        assert!(kinds[..kinds.len() - 1].iter().all(|kind| *kind == "token"), "{job_id}: {kinds:?}");
        let text: String = relayed.iter().map(|(_, _, text)| text.as_str()).collect();
        assert_eq!(text, mock_llm::answer_text(prompt, TOKENS_PER_ANSWER), "{job_id}: complete text");

        let status: String = connection
            .hget(stack.keys().job_state(&job_id.parse().expect("id")), "status")
            .await
            .expect("hget");
        assert_eq!(status, "done");
    }

    let stats = stack.mock_llm.stats().await;
    assert_eq!(stats.requests, CHATS as u64, "every chat reached the LLM exactly once");
    assert_eq!(stats.completed, CHATS as u64);
    let worker_ids: Vec<String> =
        connection.smembers(stack.keys().worker_registry()).await.expect("smembers");
    assert_eq!(worker_ids.len(), 4);
    for worker_id in worker_ids {
        let processing: u64 =
            connection.llen(stack.keys().worker_processing_list(&worker_id)).await.expect("llen");
        assert_eq!(processing, 0, "{worker_id} has nothing left in processing");
    }
    let waiting: u64 =
        connection.llen(stack.keys().lane_queue(protocol::Lane::Standard)).await.expect("llen");
    assert_eq!(waiting, 0);
}
