//! The browser flow: POST a chat, stream its events.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::{StackOptions, TestStack};

const STREAM_LIMIT: Duration = Duration::from_secs(20);

fn data(event: &test_support::SseEvent) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

#[tokio::test]
async fn a_chat_streams_its_answer_token_by_token_and_ends_with_done() {
    let stack = TestStack::start(StackOptions::default()).await;

    let response = stack.post_chat(0, &json!({"message": "Tell me about rivers"})).await;
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.expect("json body");
    let id = created["id"].as_str().expect("id");
    assert_eq!(created["events_url"], format!("/api/chats/{id}/events"));
    assert!(created["position"].as_u64().expect("position") >= 1);

    let mut events = stack.open_events(0, created["events_url"].as_str().expect("url")).await;
    let all = events.collect_all_within(STREAM_LIMIT).await;
    let text: String = all
        .iter()
        .filter(|event| event.event == "token")
        .map(|event| data(event)["text"].as_str().expect("text").to_owned())
        .collect();
    assert_eq!(text, mock_llm::answer_text("Tell me about rivers", 12));

    let last = all.last().expect("events arrived");
    assert_eq!(last.event, "done");
    assert_eq!(data(last)["usage"]["completion_tokens"], 12);
    // Every log event's SSE id is its seq, and seqs run 1, 2, 3, ... without gaps.
    let seqs: Vec<u64> = all
        .iter()
        .filter(|event| event.event != "queued")
        .map(|event| event.id.as_deref().expect("id").parse().expect("numeric id"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_queued_chat_is_told_its_position_until_a_worker_takes_it() {
    // One chat at a time, each ahead of the watched one taking over 0.6 s: the watched chat's position
    // goes down step by step, with several updates (every 200 ms) at each step.
    let mut stack =
        TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
            settings.worker.concurrency = 1;
        })
        .await;
    for index in 1..=3 {
        let ahead: Value = stack
            .post_chat(
                0,
                &json!({ "message": format!("ahead {index} [[mock tokens=3 inter_token_ms=300]]") }),
            )
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(ahead["position"], index);
    }
    let watched: Value = stack.post_chat(0, &json!({"message": "watched"})).await.json().await.expect("json");
    assert_eq!(watched["position"], 4);

    let mut events = stack.open_events(0, watched["events_url"].as_str().expect("url")).await;
    let queued = events.next_event_within(STREAM_LIMIT).await.expect("an event");
    assert_eq!(queued.event, "queued");
    assert_eq!(data(&queued)["position"], 4);
    assert_eq!(data(&queued)["ahead"], 3);
    // Updates keep coming while it waits.
    let again = events.next_event_within(Duration::from_secs(5)).await.expect("another event");
    assert_eq!(again.event, "queued");
    assert_eq!(data(&again)["position"], 4, "nothing moved without a worker");

    stack.add_worker();
    let rest = events.collect_all_within(STREAM_LIMIT).await;
    assert_eq!(rest.last().expect("events").event, "done");
    let positions: Vec<u64> = [queued, again]
        .iter()
        .chain(&rest)
        .filter(|event| event.event == "queued")
        .map(|event| data(event)["position"].as_u64().expect("position"))
        .collect();
    assert!(positions.windows(2).all(|pair| pair[1] <= pair[0]), "positions never increase: {positions:?}");
    let mut distinct = positions.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "the position went down while the chats ahead ran: {positions:?}");
}

#[tokio::test]
async fn a_reconnecting_client_resumes_after_its_last_event_id() {
    let stack = TestStack::start(StackOptions::default()).await;
    let created: Value =
        stack.post_chat(0, &json!({"message": "resume me"})).await.json().await.expect("json");
    let url = format!("{}{}", stack.gateway_url(0), created["events_url"].as_str().expect("url"));
    let all = test_support::SseReader::new(stack.http.get(&url).send().await.expect("get"))
        .collect_all_within(STREAM_LIMIT)
        .await;
    let done_seq: u64 = all.last().expect("events").id.as_deref().expect("id").parse().expect("seq");
    assert!(done_seq >= 2, "the answer took several events");

    // Replays come from the log, so the finished chat can be re-read from any point.
    let resumed =
        stack.http.get(&url).header("last-event-id", (done_seq - 1).to_string()).send().await.expect("get");
    let tail = test_support::SseReader::new(resumed).collect_all_within(STREAM_LIMIT).await;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].event, "done");
    assert_eq!(tail[0].id.as_deref(), Some(done_seq.to_string().as_str()));
}

#[tokio::test]
async fn a_conversation_of_several_messages_is_answered_from_the_last_user_message() {
    let stack = TestStack::start(StackOptions::default()).await;
    let body = json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"}
    ]});
    let created: Value = stack.post_chat(0, &body).await.json().await.expect("json");
    let all = stack
        .open_events(0, created["events_url"].as_str().expect("url"))
        .await
        .collect_all_within(STREAM_LIMIT)
        .await;
    let text: String = all
        .iter()
        .filter(|event| event.event == "token")
        .map(|event| data(event)["text"].as_str().expect("text").to_owned())
        .collect();
    assert_eq!(text, mock_llm::answer_text("second question", 12));
}

/// Writes `events` the way a worker does: each appended to the replay log, then published, `published` of them
/// together as one message (the events' JSON joined by newlines).
async fn append_and_publish(
    stack: &TestStack,
    job_id: &protocol::JobId,
    appended: &[protocol::StreamEvent],
    published: &[protocol::StreamEvent],
) {
    let keys = stack.keys();
    let mut redis = stack.redis_connection().await;
    for event in appended {
        let _: i64 = redis::cmd("RPUSH")
            .arg(keys.job_replay_log(job_id))
            .arg(event.encode())
            .query_async(&mut redis)
            .await
            .expect("rpush");
    }
    if !published.is_empty() {
        let message: Vec<String> = published.iter().map(protocol::StreamEvent::encode).collect();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(keys.job_event_channel(job_id))
            .arg(message.join("\n"))
            .query_async(&mut redis)
            .await
            .expect("publish");
    }
}

fn token(seq: u64, text: &str) -> protocol::StreamEvent {
    protocol::StreamEvent::Token { seq, text: text.to_owned() }
}

#[tokio::test]
async fn batches_reach_the_client_in_order_with_gaps_filled_from_the_log_and_repeats_dropped() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let created: Value = stack.post_chat(0, &json!({"message": "batches"})).await.json().await.expect("json");
    let job_id: protocol::JobId = created["id"].as_str().expect("id").parse().expect("job id");
    let mut events = stack.open_events(0, created["events_url"].as_str().expect("url")).await;
    assert_eq!(events.next_event_within(STREAM_LIMIT).await.expect("queued").event, "queued");

    // One batch of two, as one message.
    let first = [token(1, "one "), token(2, "two\nlines ")];
    append_and_publish(&stack, &job_id, &first, &first).await;
    // Three appended, but the message carrying the third is lost: the next one reveals the gap.
    append_and_publish(&stack, &job_id, &[token(3, "three ")], &[]).await;
    let second = [token(4, "four "), token(5, "five ")];
    append_and_publish(&stack, &job_id, &second, &second).await;
    // A repeat of 5 (a retried publish) in front of 6, then the end.
    let done = protocol::StreamEvent::Done {
        seq: 7,
        usage: protocol::Usage { prompt_tokens: 1, completion_tokens: 6, total_tokens: 7 },
        finish_reason: "stop".to_owned(),
    };
    append_and_publish(
        &stack,
        &job_id,
        &[token(6, "six"), done.clone()],
        &[token(5, "five "), token(6, "six")],
    )
    .await;
    append_and_publish(&stack, &job_id, &[], std::slice::from_ref(&done)).await;

    let all = events.collect_all_within(STREAM_LIMIT).await;
    let relayed: Vec<(String, String)> = all
        .iter()
        .filter(|event| event.event != "queued")
        .map(|event| (event.id.clone().expect("id"), event.event.clone()))
        .collect();
    let expected: Vec<(String, String)> =
        (1..=7).map(|seq| (seq.to_string(), if seq == 7 { "done" } else { "token" }.to_owned())).collect();
    assert_eq!(relayed, expected, "each event once, in order");
    let text: String = all
        .iter()
        .filter(|event| event.event == "token")
        .map(|event| data(event)["text"].as_str().expect("text").to_owned())
        .collect();
    assert_eq!(text, "one two\nlines three four five six");
    // The data is the stored JSON itself.
    assert_eq!(
        all.iter().find(|event| event.id.as_deref() == Some("2")).expect("event 2").data,
        first[1].encode()
    );
}

#[tokio::test]
async fn the_page_its_assets_and_the_chat_limits_are_served_by_a_gateway_alone() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let base = stack.gateway_url(0);

    let page = stack.http.get(format!("{base}/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["content-security-policy"],
        gateway::chat_page::CHAT_PAGE_CONTENT_SECURITY_POLICY
    );
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.expect("html");
    let script_path =
        html.split('"').find(|part| part.starts_with("/static/chat.js?v=")).expect("script named");

    let versioned = stack.http.get(format!("{base}{script_path}")).send().await.expect("script");
    assert_eq!(versioned.status(), 200);
    assert_eq!(versioned.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(versioned.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(versioned.headers()["x-content-type-options"], "nosniff");
    let unversioned = stack.http.get(format!("{base}/static/chat.css")).send().await.expect("style");
    assert_eq!(unversioned.headers()["cache-control"], "public, max-age=3600");
    let missing = stack.http.get(format!("{base}/static/chat.html")).send().await.expect("missing");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.expect("json")["error"]["code"], "route_not_found");

    let limits: Value = stack
        .http
        .get(format!("{base}/api/chat-limits"))
        .send()
        .await
        .expect("limits")
        .json()
        .await
        .expect("json");
    let settings = &stack.settings;
    assert_eq!(
        limits,
        json!({
            "max_messages": settings.chat.max_messages,
            "max_message_chars": settings.chat.max_message_chars,
            "max_body_bytes": settings.gateway.max_body_bytes,
        })
    );
}
