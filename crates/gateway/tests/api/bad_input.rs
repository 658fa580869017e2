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
