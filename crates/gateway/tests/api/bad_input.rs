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

/// One bad request and the answer it must get.
struct BadInputCase {
    what: &'static str,
    path: &'static str,
    body: String,
    status: u16,
    code: &'static str,
}

fn bad_input_cases(settings: &protocol::settings::Settings) -> Vec<BadInputCase> {
    let case = |what, path, body: &str, status, code| BadInputCase {
        what,
        path,
        body: body.to_owned(),
        status,
        code,
    };
    let oversized = format!("{{\"message\": \"{}\"}}", "x".repeat(settings.gateway.max_body_bytes + 1));
    let long = format!("{{\"message\": \"{}\"}}", "y".repeat(settings.chat.max_message_chars + 1));
    let many = serde_json::json!({
        "messages": vec![serde_json::json!({"role": "user", "content": "hi"}); settings.chat.max_messages + 1]
    })
    .to_string();
    let mut cases = Vec::new();
    for path in ["/api/chats", "/v1/chat/completions"] {
        cases.push(case("cut-off JSON", path, "{\"message\": ", 400, "invalid_json"));
        cases.push(case("an empty body", path, "", 400, "invalid_json"));
        cases.push(case("a body over gateway.max_body_bytes", path, &oversized, 413, "body_too_large"));
    }
    cases.extend([
        case("no message", "/api/chats", "{}", 400, "missing_message"),
        case("a blank message", "/api/chats", r#"{"message": ""}"#, 400, "empty_message"),
        case("a message of the wrong type", "/api/chats", r#"{"message": 42}"#, 400, "invalid_field"),
        case("a message over chat.max_message_chars", "/api/chats", &long, 413, "message_too_long"),
        case("more than chat.max_messages", "/api/chats", &many, 400, "too_many_messages"),
        case("an empty message list", "/v1/chat/completions", r#"{"messages": []}"#, 400, "missing_message"),
        case("no messages field", "/v1/chat/completions", r#"{"model":"mock-1"}"#, 400, "invalid_field"),
        case(
            "an unknown model",
            "/v1/chat/completions",
            r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#,
            400,
            "model_not_found",
        ),
    ]);
    cases
}

#[tokio::test]
async fn malformed_missing_empty_and_oversized_input_get_clear_errors_on_both_flows() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    for case in bad_input_cases(&stack.settings) {
        let answer = post_raw(&stack, case.path, case.body).await;
        let (status, body) = &answer;
        assert_eq!(*status, case.status, "{} on {}: {body}", case.what, case.path);
        assert_error(&answer, case.status, case.code);
        if case.code == "model_not_found" {
            assert_eq!(body["error"]["param"], "model", "{}: {body}", case.what);
        }
    }

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
