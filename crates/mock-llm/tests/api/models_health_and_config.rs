//! The endpoints around chat completions: model list, health, request validation, runtime config and shutdown.

use std::time::Duration;

use mock_llm::{answer_text, spawn_mock_llm};
use protocol::settings::MockLlmSettings;
use serde_json::{Value, json};

use crate::helpers::{chat_body, fast_settings, post_chat, spawn_fast_mock, wait_for_stats};

#[tokio::test]
async fn models_are_listed_from_settings() {
    let settings =
        MockLlmSettings { models: vec!["mock-1".to_owned(), "mock-large".to_owned()], ..fast_settings() };
    let mock = spawn_mock_llm(settings).await.expect("mock starts");

    let models: Value =
        reqwest::get(format!("{}/models", mock.base_url())).await.expect("GET").json().await.expect("JSON");

    assert_eq!(models["object"], "list");
    let data = models["data"].as_array().expect("a list");
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["id"], "mock-large");
    for model in data {
        assert_eq!(model["object"], "model");
        assert_eq!(model["owned_by"], "mock-llm");
        assert!(model["created"].is_u64());
    }
}

#[tokio::test]
async fn health_check_answers_200() {
    let mock = spawn_fast_mock().await;

    let response = reqwest::get(format!("http://{}/healthz", mock.address())).await.expect("GET");

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn invalid_bodies_get_400_in_openai_shape() {
    let mock = spawn_fast_mock().await;
    let http = reqwest::Client::new();
    let bodies = [
        "not json".to_owned(),
        json!({"model": "mock-1"}).to_string(),
        json!({"model": "mock-1", "messages": "hello"}).to_string(),
        json!({"model": "mock-1", "messages": []}).to_string(),
        json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(),
        json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0})
            .to_string(),
    ];

    for body in &bodies {
        let response = http
            .post(format!("{}/chat/completions", mock.base_url()))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("POST");

        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.expect("JSON error");
        assert!(error["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["param"], Value::Null);
        assert_eq!(error["error"]["code"], "invalid_request_body");
    }
    let stats = wait_for_stats(&mock, |stats| stats.failed == bodies.len() as u64).await;
    assert_eq!(stats.requests, bodies.len() as u64);
}

#[tokio::test]
async fn unknown_request_fields_and_any_authorization_are_accepted() {
    let mock = spawn_fast_mock().await;
    let mut body = chat_body("Extra fields", false);
    body["temperature"] = json!(0.2);
    body["tools"] = json!([]);
    body["user"] = json!("someone");

    let response = post_chat(&mock, &body, &[("authorization", "Bearer whatever")]).await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn config_replaces_the_default_knobs_at_runtime() {
    let mock = spawn_fast_mock().await;
    let http = reqwest::Client::new();
    let config_url = format!("http://{}/config", mock.address());

    let updated: MockLlmSettings = http
        .put(&config_url)
        .json(&json!({"tokens_per_answer": 2, "models": ["renamed"]}))
        .send()
        .await
        .expect("PUT")
        .json()
        .await
        .expect("settings JSON");
    let completion: Value =
        post_chat(&mock, &chat_body("Reconfigured", false), &[]).await.json().await.expect("JSON");
    let models: Value = http
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let refused = http.put(&config_url).json(&json!({"hang_rate": 3})).send().await.expect("PUT");
    let current: MockLlmSettings =
        http.get(&config_url).send().await.expect("GET").json().await.expect("JSON");

    assert_eq!(updated.tokens_per_answer, 2);
    assert_eq!(completion["choices"][0]["message"]["content"], answer_text("Reconfigured", 2));
    assert_eq!(models["data"][0]["id"], "renamed");
    assert_eq!(refused.status(), 400);
    assert_eq!(current, updated);
}

#[tokio::test]
async fn shutdown_releases_hung_requests_with_503() {
    let mock = spawn_fast_mock().await;
    let hung_request = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&chat_body("Hold [[mock hang=true]]", false))
        .send();
    let hung_request = tokio::spawn(async move { hung_request.await.expect("a response").status() });
    wait_for_stats(&mock, |stats| stats.hung == 1).await;
    let address = mock.address();

    tokio::time::timeout(Duration::from_secs(2), mock.shutdown()).await.expect("shutdown is quick");

    assert_eq!(hung_request.await.expect("the request task"), 503);
    assert!(reqwest::get(format!("http://{address}/healthz")).await.is_err(), "the listener is closed");
}
