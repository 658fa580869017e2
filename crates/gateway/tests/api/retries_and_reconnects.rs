//! What clients that retry and reconnect meet: an SDK's automatic retry after its dropped connection cancelled
//! the chat gets a fresh chat, an `Idempotency-Key` reused for another body is refused, and an event stream tells
//! EventSource how soon to reconnect.

use std::time::Duration;

use futures::StreamExt;
use protocol::keys::job_state_field;
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::{StackOptions, TestStack};

fn completions_url(stack: &TestStack) -> String {
    format!("{}/v1/chat/completions", stack.gateway_url(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_retry_after_its_dropped_connection_cancelled_the_chat_gets_a_new_answer() {
    let mut stack =
        TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
            settings.limits.duplicate_window_s = 30;
        })
        .await;
    let body = json!({"messages": [{"role": "user", "content": "retried by the SDK"}], "stream": true});

    // The first attempt is queued (no worker yet); its connection drops, which cancels the chat.
    let response = stack.http.post(completions_url(&stack)).json(&body).send().await.expect("response");
    assert_eq!(response.status(), 200);
    let mut first_bytes = response.bytes_stream();
    let opening =
        tokio::time::timeout(Duration::from_secs(10), first_bytes.next()).await.expect("a first chunk");
    assert!(opening.is_some(), "the stream opened");
    let mut redis = stack.redis_connection().await;
    let keys = stack.keys();
    let active: Vec<String> = redis.zrange(keys.active_chats("ip:127.0.0.1"), 0, -1).await.expect("zrange");
    let [first_id] = <[String; 1]>::try_from(active).expect("one chat queued");
    drop(first_bytes);
    let first_state = keys.job_state(&first_id.parse().expect("job id"));
    stack
        .wait_until("the departed client's chat is cancelled", Duration::from_secs(10), || {
            let mut redis = redis.clone();
            let first_state = first_state.clone();
            async move {
                let status: Option<String> =
                    redis.hget(&first_state, job_state_field::STATUS).await.expect("hget");
                status.as_deref() == Some("cancelled")
            }
        })
        .await;

    // The SDK's automatic retry: the same body, within the duplicate window.
    stack.add_worker();
    let retry_body =
        json!({"messages": [{"role": "user", "content": "retried by the SDK"}], "stream": false});
    let retry = stack.http.post(completions_url(&stack)).json(&retry_body).send().await.expect("response");
    let status = retry.status();
    let answer: Value = retry.json().await.expect("json");
    assert_eq!(status, 200, "the retry is answered, not told its chat was cancelled: {answer}");
    assert_ne!(answer["id"], json!(format!("chatcmpl-{first_id}")), "a new chat, not the cancelled one");
    assert!(!answer["choices"][0]["message"]["content"].as_str().unwrap_or("").is_empty(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_with_a_different_body_is_refused_with_422() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let post = |message: &str| {
        stack
            .http
            .post(format!("{}/api/chats", stack.gateway_url(0)))
            .header("idempotency-key", "order-7")
            .json(&json!({ "message": message }))
            .send()
    };
    let first = post("first body").await.expect("response");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");

    let reused = post("another body").await.expect("response");
    assert_eq!(reused.status(), 422);
    let error: Value = reused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "idempotency_key_reused", "{error}");

    let same = post("first body").await.expect("response");
    assert_eq!(same.status(), 202);
    let same: Value = same.json().await.expect("json");
    assert_eq!((same["id"].clone(), same["joined"].clone()), (first["id"].clone(), json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_starts_by_setting_eventsources_reconnect_delay() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let created: Value = stack.post_chat(0, &json!({"message": "hello"})).await.json().await.expect("json");
    let url = format!("{}{}", stack.gateway_url(0), created["events_url"].as_str().expect("url"));
    let response = stack.http.get(url).send().await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    // Only the first few bytes matter; the stream itself stays open while the chat waits.
    while received.len() < 14 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("bytes within the limit")
            .expect("the stream is open")
            .expect("a chunk");
        received.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("retry: 2000\n"), "the stream opens with the reconnect delay: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_addresses_of_one_ipv6_network_share_one_callers_limits() {
    let stack = TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
        settings.limits.tiers.anonymous.max_active_chats = 1;
    })
    .await;
    let body = |message: &str| json!({ "message": message });
    let first = stack.post_chat_from(0, "2001:db8:7:7::1", &body("one")).await;
    assert_eq!(first.status(), 202);
    let neighbour = stack.post_chat_from(0, "2001:db8:7:7:abcd::2", &body("two")).await;
    assert_eq!(neighbour.status(), 429, "the same /64 is the same caller");
    assert_eq!(neighbour.headers()["x-dam-reason"], "too_many_active_chats");
    let elsewhere = stack.post_chat_from(0, "2001:db8:7:8::1", &body("three")).await;
    assert_eq!(elsewhere.status(), 202, "another /64 is another caller");
}
