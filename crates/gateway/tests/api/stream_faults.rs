//! Streams under faults, against a real Redis: a catch-up read that fails after a pub/sub reconnection is tried
//! again (and, if Redis stays away, the client is told to reconnect), and a stream whose client stopped reading
//! is dropped by the router instead of holding memory or slowing the others.

use std::time::Duration;

use gateway::stream_router::{RouterMessage, STREAM_QUEUE_CAPACITY, StreamRouter};
use protocol::{JobId, RedisKeys, StreamEvent, Usage};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use test_support::{RedisServer, SseEvent, SseReader, StackOptions, TestStack, unique_key_prefix};
use tokio_util::sync::CancellationToken;

/// How many commands Redis refused with WRONGTYPE so far (`INFO errorstats`).
async fn wrongtype_errors(redis: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("errorstats").query_async(redis).await.expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix("errorstat_WRONGTYPE:count="))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

/// The next event that is not a `queued` update (those go on while the chat waits), or `None` when the stream
/// ended; panics if none comes within `limit` in all.
async fn next_chat_event(reader: &mut SseReader, limit: Duration) -> Option<SseEvent> {
    let next = async {
        loop {
            match reader.next_event().await {
                Some(event) if event.event == "queued" => continue,
                other => return other,
            }
        }
    };
    tokio::time::timeout(limit, next).await.expect("a chat event within the time limit")
}

/// A queued chat (no workers) with its event stream open past the first `queued` event.
async fn open_waiting_stream(stack: &TestStack) -> (JobId, SseReader) {
    let created: Value =
        stack.post_chat(0, &json!({"message": "catch me up"})).await.json().await.expect("json");
    let job_id: JobId = created["id"].as_str().expect("id").parse().expect("job id");
    let mut reader = stack.open_events(0, created["events_url"].as_str().expect("url")).await;
    let first = reader.next_event_within(Duration::from_secs(10)).await.expect("an event");
    assert_eq!(first.event, "queued");
    (job_id, reader)
}

/// Breaks the replay log (so every read of it fails), drops the gateway's pub/sub connection so that it
/// reconnects and asks every stream to catch up from the log, and waits until that catch-up read has failed.
async fn fail_the_catch_up_read(stack: &TestStack, redis: &mut MultiplexedConnection, job_id: &JobId) {
    let keys = stack.keys();
    let _: () = redis.set(keys.job_replay_log(job_id), "not a list").await.expect("set");
    let failed_before = wrongtype_errors(redis).await;
    let _: () =
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(redis).await.expect("kill");
    stack
        .wait_until("the catch-up read after the reconnection failed", Duration::from_secs(10), || {
            let mut redis = redis.clone();
            async move { wrongtype_errors(&mut redis).await > failed_before }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_read_that_fails_after_a_pubsub_reconnection_is_tried_again() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let (job_id, mut reader) = open_waiting_stream(&stack).await;
    let mut redis = stack.redis_connection().await;
    fail_the_catch_up_read(&stack, &mut redis, &job_id).await;

    // Redis answers again, and the log holds events that were never published (lost with the connection): only
    // a read of the log can find them.
    let log = stack.keys().job_replay_log(&job_id);
    let events = [
        StreamEvent::Token { seq: 1, text: "found".to_owned() },
        StreamEvent::Done { seq: 2, usage: Usage::default(), finish_reason: "stop".to_owned() },
    ];
    let _: () = redis::pipe()
        .del(&log)
        .rpush(&log, events.iter().map(StreamEvent::encode).collect::<Vec<_>>())
        .query_async(&mut redis)
        .await
        .expect("arrange the log");

    let token = next_chat_event(&mut reader, Duration::from_secs(15)).await.expect("the token");
    assert_eq!((token.event.as_str(), token.id.as_deref()), ("token", Some("1")));
    let done = next_chat_event(&mut reader, Duration::from_secs(15)).await.expect("done");
    assert_eq!((done.event.as_str(), done.id.as_deref()), ("done", Some("2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_read_that_keeps_failing_ends_the_stream_with_an_error_to_reconnect_on() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let (job_id, mut reader) = open_waiting_stream(&stack).await;
    let mut redis = stack.redis_connection().await;
    fail_the_catch_up_read(&stack, &mut redis, &job_id).await;

    // The log stays unreadable: after its bounded retries the stream ends with an error naming the point to
    // resume from, rather than leaving the client waiting until the chat's deadline.
    let ending = next_chat_event(&mut reader, Duration::from_secs(30)).await.expect("an ending");
    assert_eq!(ending.event, "error");
    let error: Value = serde_json::from_str(&ending.data).expect("json");
    assert_eq!(error["code"], "stream_interrupted", "{error}");
    assert_eq!(ending.id.as_deref(), Some("0"), "resume from the start: nothing was relayed");
    assert!(next_chat_event(&mut reader, Duration::from_secs(10)).await.is_none(), "the stream ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_reader_stopped_is_dropped_while_the_others_flow() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let shutdown = CancellationToken::new();
    let router = StreamRouter::start(
        redis.client(),
        Duration::from_secs(2),
        metrics::Counter::noop(),
        shutdown.clone(),
    );
    let (stalled_channel, flowing_channel) =
        (keys.job_event_channel(&JobId::new_random()), keys.job_event_channel(&JobId::new_random()));
    let mut stalled = router.subscribe(stalled_channel.clone()).await.expect("subscribe");
    let mut flowing = router.subscribe(flowing_channel.clone()).await.expect("subscribe");

    // Far more than a stream may hold, for a reader that takes nothing; then one message for another stream.
    let published = STREAM_QUEUE_CAPACITY + 100;
    let mut pipe = redis::pipe();
    for index in 0..published {
        pipe.publish(&stalled_channel, index.to_string()).ignore();
    }
    pipe.publish(&flowing_channel, "still flowing").ignore();
    let _: () = pipe.query_async(&mut connection).await.expect("publish");

    let message = tokio::time::timeout(Duration::from_secs(10), flowing.next_message())
        .await
        .expect("the other stream is not held up");
    assert!(
        matches!(message, Some(RouterMessage::Published { message: text, .. }) if &*text == "still flowing")
    );

    // The stalled stream kept what it could hold, in order, and was then dropped: it ends instead of growing.
    let mut received = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), stalled.next_message()).await {
            Ok(Some(RouterMessage::Published { message: text, .. })) => {
                assert_eq!(&*text, received.to_string(), "in order");
                received += 1;
            }
            Ok(Some(RouterMessage::Resync)) => panic!("no reconnection happened"),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    assert!(ended, "the stalled stream was dropped (it received {received} of {published})");
    assert_eq!(received, STREAM_QUEUE_CAPACITY, "it held at most its capacity");
    shutdown.cancel();
}

#[tokio::test]
async fn a_stream_asked_for_while_redis_is_away_asks_the_client_to_resume_instead_of_failing() {
    let mut stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let created: Value = stack.post_chat(0, &json!({"message": "wait"})).await.json().await.expect("json");
    let url = created["events_url"].as_str().expect("url").to_owned();

    // An error status would make EventSource give up for good; the stream must ask it to come back instead.
    stack.redis.stop();
    let response = stack
        .http
        .get(format!("{}{url}", stack.gateway_url(0)))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.expect("body");
    assert!(body.starts_with("retry: 2000\n\n"), "{body}");
    let event = body.trim_start_matches("retry: 2000\n\n");
    assert!(event.starts_with("id: 3\nevent: error\ndata: "), "{body}");
    let data: Value =
        serde_json::from_str(event.lines().nth(2).expect("data").trim_start_matches("data: ")).expect("json");
    assert_eq!(data["code"], "stream_interrupted");
    assert_eq!(data["seq"], 3);
}
