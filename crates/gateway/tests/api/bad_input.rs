//! Bad input gets a clear status and `{"error": {"code", "message"}}`, and never reaches Redis.

use serde_json::Value;
use test_support::{StackOptions, TestStack};

async fn post_raw(stack: &TestStack, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = stack
        .http
        .post(format!("{}{path}", stack.gateway_url(0)))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request reaches the gateway");
    let status = response.status().as_u16();
    (status, response.json().await.expect("error bodies are JSON"))
}

fn assert_error(status_and_body: &(u16, Value), status: u16, code: &str) {
    let (actual_status, body) = status_and_body;
    assert_eq!(*actual_status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{body}");
}

#[tokio::test]
async fn malformed_missing_empty_and_oversized_input_get_clear_errors_on_both_flows() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    for path in ["/api/chats", "/v1/chat/completions"] {
        assert_error(&post_raw(&stack, path, "{\"message\": ").await, 400, "invalid_json");
        assert_error(&post_raw(&stack, path, "").await, 400, "invalid_json");
        let oversized =
            format!("{{\"message\": \"{}\"}}", "x".repeat(stack.settings.gateway.max_body_bytes + 1));
        assert_error(&post_raw(&stack, path, oversized).await, 413, "body_too_large");
    }
    assert_error(&post_raw(&stack, "/api/chats", "{}").await, 400, "missing_message");
    assert_error(&post_raw(&stack, "/api/chats", r#"{"message": ""}"#).await, 400, "empty_message");
    assert_error(&post_raw(&stack, "/api/chats", r#"{"message": 42}"#).await, 400, "invalid_field");
    let long = format!("{{\"message\": \"{}\"}}", "y".repeat(stack.settings.chat.max_message_chars + 1));
    assert_error(&post_raw(&stack, "/api/chats", long).await, 413, "message_too_long");
    let many =
        vec![serde_json::json!({"role": "user", "content": "hi"}); stack.settings.chat.max_messages + 1];
    let many = serde_json::json!({ "messages": many }).to_string();
    assert_error(&post_raw(&stack, "/api/chats", many).await, 400, "too_many_messages");
    assert_error(
        &post_raw(&stack, "/v1/chat/completions", r#"{"messages": []}"#).await,
        400,
        "missing_message",
    );
    assert_error(
        &post_raw(&stack, "/v1/chat/completions", r#"{"model":"mock-1"}"#).await,
        400,
        "invalid_field",
    );
    let unknown_model = post_raw(
        &stack,
        "/v1/chat/completions",
        r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_error(&unknown_model, 400, "model_not_found");
    assert_eq!(unknown_model.1["error"]["param"], "model");

    // None of it was queued.
    let mut redis = stack.redis_connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", stack.settings.redis.key_prefix))
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert!(keys.is_empty(), "rejected requests left no trace: {keys:?}");
}

#[tokio::test]
async fn unknown_chat_ids_unknown_routes_and_wrong_methods_get_json_errors() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let base = stack.gateway_url(0);
    for id in ["0192f0c1-7b7e-7cc0-8b5e-3f7d2a9b1c00", "not-an-id"] {
        let response = stack.http.get(format!("{base}/api/chats/{id}/events")).send().await.expect("get");
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "chat_not_found");
    }
    let response = stack.http.get(format!("{base}/nowhere")).send().await.expect("get");
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.expect("json")["error"]["code"], "route_not_found");
    let response = stack.http.get(format!("{base}/api/chats")).send().await.expect("get");
    assert_eq!(response.status(), 405);
    assert_eq!(response.json::<Value>().await.expect("json")["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn oversized_headers_slow_headers_and_slow_bodies_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stack = TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
        settings.gateway.header_read_timeout_ms = 300;
        settings.gateway.body_read_timeout_ms = 300;
    })
    .await;
    let address = stack.gateways[0].address.expect("address");

    let huge = "x".repeat(stack.settings.gateway.max_header_bytes + 1024);
    let response =
        stack.http.get(format!("{}/healthz", stack.gateway_url(0))).header("x-padding", huge).send().await;
    assert_eq!(response.expect("an answer").status(), 431);

    // Slowloris: half a header block, then nothing.
    let mut slow_headers = tokio::net::TcpStream::connect(address).await.expect("connect");
    slow_headers.write_all(b"POST /api/chats HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let mut buffer = Vec::new();
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(5), slow_headers.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the connection is closed after the header timeout");

    // A body promised but sent too slowly.
    let mut slow_body = tokio::net::TcpStream::connect(address).await.expect("connect");
    slow_body
        .write_all(b"POST /api/chats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mess")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), slow_body.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway answers and closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}
