//! Per-request knobs, as `x-mock-*` headers and as `[[mock ...]]` directives: length, delays, injected errors,
//! failures and hangs.

use std::time::{Duration, Instant};

use mock_llm::{KnobOverrides, MockLlmStats, answer_text, markup_answer_tokens, spawn_mock_llm};
use protocol::settings::MockLlmSettings;
use serde_json::Value;

use crate::helpers::{chat_body, fast_settings, post_chat, read_sse, spawn_fast_mock, wait_for_stats};

async fn answer_content(response: reqwest::Response) -> String {
    let completion: Value = response.json().await.expect("JSON");
    completion["choices"][0]["message"]["content"].as_str().expect("content").to_owned()
}

#[tokio::test]
async fn header_knobs_set_the_answer_length() {
    let mock = spawn_fast_mock().await;

    let response = post_chat(&mock, &chat_body("Header knobs", false), &[("x-mock-tokens", "3")]).await;

    assert_eq!(answer_content(response).await, answer_text("Header knobs", 3));
}

#[tokio::test]
async fn directive_knobs_are_obeyed_and_stripped_from_the_prompt() {
    let mock = spawn_fast_mock().await;
    let message =
        format!("Say hi {}", KnobOverrides { tokens: Some(5), ..KnobOverrides::default() }.to_directive());

    let completion: Value =
        post_chat(&mock, &chat_body(&message, false), &[]).await.json().await.expect("JSON");

    assert_eq!(completion["choices"][0]["message"]["content"], answer_text("Say hi", 5));
    assert_eq!(completion["choices"][0]["message"]["content"], answer_text(&message, 5));
    // "You are terse." plus "Say hi": the directive is not part of the prompt.
    assert_eq!(completion["usage"]["prompt_tokens"], 5);
}

#[tokio::test]
async fn the_markup_knob_answers_with_html_and_script_fragments() {
    let mock = spawn_fast_mock().await;

    let whole = post_chat(&mock, &chat_body("Markup [[mock markup=true tokens=5]]", false), &[]).await;
    let streamed =
        post_chat(&mock, &chat_body("Markup", true), &[("x-mock-markup", "true"), ("x-mock-tokens", "5")])
            .await;

    let expected = markup_answer_tokens(5).concat();
    assert!(expected.starts_with("<script>") && expected.contains("<img src=x onerror="), "{expected}");
    assert_eq!(answer_content(whole).await, expected);
    assert_eq!(read_sse(streamed).await.content(), expected);
}

#[tokio::test]
async fn the_directive_wins_over_a_header() {
    let mock = spawn_fast_mock().await;

    let response =
        post_chat(&mock, &chat_body("Both [[mock tokens=2]]", false), &[("x-mock-tokens", "6")]).await;

    assert_eq!(answer_content(response).await, answer_text("Both", 2));
}

#[tokio::test]
async fn only_the_last_user_message_carries_directives() {
    let mock = spawn_fast_mock().await;
    let body = serde_json::json!({
        "model": "mock-1",
        "messages": [
            {"role": "user", "content": "old [[mock status=500]]"},
            {"role": "assistant", "content": "an earlier answer"},
            {"role": "user", "content": "new question"},
        ],
    });

    let response = post_chat(&mock, &body, &[]).await;

    assert_eq!(response.status(), 200);
    assert_eq!(answer_content(response).await, answer_text("new question", 8));
}

#[tokio::test]
async fn status_knob_answers_an_openai_error_with_retry_after() {
    let mock = spawn_fast_mock().await;

    let response = post_chat(
        &mock,
        &chat_body("Rate limit me", true),
        &[("x-mock-status", "429"), ("x-mock-retry-after-s", "2")],
    )
    .await;

    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let error: Value = response.json().await.expect("JSON error");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(error["error"]["message"].is_string());
    assert!(error["error"]["param"].is_null());
    let stats = wait_for_stats(&mock, |stats| stats.failed == 1).await;
    assert_eq!((stats.requests, stats.completed, stats.in_flight), (1, 0, 0));
}

#[tokio::test]
async fn status_knob_works_as_a_directive_and_without_retry_after() {
    let mock = spawn_fast_mock().await;

    for (status, error_type) in
        [(400, "invalid_request_error"), (401, "authentication_error"), (503, "server_error")]
    {
        let message = format!("Fail [[mock status={status}]]");
        let response = post_chat(&mock, &chat_body(&message, false), &[]).await;

        assert_eq!(response.status(), status);
        assert!(response.headers().get("retry-after").is_none());
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(error["error"]["type"], error_type);
    }
}

#[tokio::test]
async fn failure_rate_one_always_answers_500_and_counts_failed() {
    let mock = spawn_fast_mock().await;

    for _ in 0..3 {
        let response = post_chat(&mock, &chat_body("Flaky", true), &[("x-mock-failure-rate", "1.0")]).await;
        assert_eq!(response.status(), 500);
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(error["error"]["type"], "server_error");
    }

    let stats = wait_for_stats(&mock, |stats| stats.failed == 3).await;
    assert_eq!((stats.requests, stats.completed, stats.prompt_tokens_total), (3, 0, 0));
}

#[tokio::test]
async fn failure_rate_from_settings_repeats_with_the_same_seed() {
    let settings = MockLlmSettings { failure_rate: 0.5, seed: 11, ..fast_settings() };
    let mut status_sequences = Vec::new();
    for _ in 0..2 {
        let mock = spawn_mock_llm(settings.clone()).await.expect("mock starts");
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(post_chat(&mock, &chat_body("Dice", false), &[]).await.status().as_u16());
        }
        status_sequences.push(statuses);
    }

    assert_eq!(status_sequences[0], status_sequences[1]);
    assert!(status_sequences[0].contains(&200) && status_sequences[0].contains(&500), "{status_sequences:?}");
}

#[tokio::test]
async fn a_hung_request_dropped_by_the_client_counts_as_hung_and_cancelled() {
    let mock = spawn_fast_mock().await;

    for (round, stream) in [(1, true), (2, false)] {
        let body = chat_body("Never answered [[mock hang=true]]", stream);
        let base_url = mock.base_url();
        let client_request = tokio::spawn(async move {
            let _never =
                reqwest::Client::new().post(format!("{base_url}/chat/completions")).json(&body).send().await;
        });
        wait_for_stats(&mock, |stats| stats.hung == round && stats.in_flight == 1).await;
        assert!(!client_request.is_finished(), "no response may arrive");

        client_request.abort();

        let stats = wait_for_stats(&mock, |stats| stats.cancelled_by_client == round).await;
        assert_eq!((stats.in_flight, stats.completed, stats.failed), (0, 0, 0));
    }
}

#[tokio::test]
async fn hang_rate_one_from_a_header_hangs_too() {
    let mock = spawn_fast_mock().await;
    let request = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("x-mock-hang-rate", "1")
        .json(&chat_body("Hang", false))
        .send();
    let client_request = tokio::spawn(request);

    wait_for_stats(&mock, |stats| stats.hung == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!client_request.is_finished(), "a hung request must not be answered");
    client_request.abort();

    let stats = wait_for_stats(&mock, |stats| stats.cancelled_by_client == 1).await;
    assert_eq!((stats.hung, stats.in_flight, stats.failed), (1, 0, 0));
}

#[tokio::test]
async fn malformed_knobs_are_refused_with_400_naming_the_knob() {
    let mock = spawn_fast_mock().await;
    let cases = [
        (chat_body("x", false), vec![("x-mock-tokens", "lots")], "x-mock-tokens"),
        (chat_body("x", false), vec![("x-mock-failure-rate", "1.5")], "x-mock-failure-rate"),
        (chat_body("x", false), vec![("x-mock-colour", "red")], "x-mock-colour"),
        (chat_body("x [[mock ttft_ms=soon]]", false), vec![], "ttft_ms"),
        (chat_body("x [[mock status=200]]", true), vec![], "status"),
        (chat_body("x [[mock hang=perhaps]]", true), vec![], "hang"),
    ];

    for (body, headers, knob) in &cases {
        let response = post_chat(&mock, body, headers).await;

        assert_eq!(response.status(), 400, "{knob}");
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["code"], "invalid_mock_knob");
        assert_eq!(error["error"]["param"], *knob);
        assert!(error["error"]["message"].as_str().is_some_and(|message| message.contains(knob)), "{error}");
    }
    let stats = wait_for_stats(&mock, |stats| stats.failed == cases.len() as u64).await;
    assert_eq!(stats, MockLlmStats { requests: 6, failed: 6, max_in_flight: 1, ..stats });
}

/// Reads a streamed completion, noting when each piece of content arrived (measured from `started`).
async fn content_arrivals(mut response: reqwest::Response, started: Instant) -> Vec<(Duration, String)> {
    let mut buffer = String::new();
    let mut arrivals = Vec::new();
    while let Some(bytes) = response.chunk().await.expect("the stream reads") {
        let arrived = started.elapsed();
        buffer.push_str(std::str::from_utf8(&bytes).expect("SSE is UTF-8"));
        while let Some(event_end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..event_end + 2).collect();
            let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: ")) else { continue };
            if data == "[DONE]" {
                continue;
            }
            let chunk: Value = serde_json::from_str(data).expect("every chunk is JSON");
            if let Some(content) =
                chunk["choices"][0]["delta"]["content"].as_str().filter(|text| !text.is_empty())
            {
                arrivals.push((arrived, content.to_owned()));
            }
        }
    }
    arrivals
}

#[tokio::test]
async fn time_to_first_token_and_inter_token_delay_shape_the_stream() {
    let mock = spawn_fast_mock().await;
    let started = Instant::now();

    let response = post_chat(
        &mock,
        &chat_body("Timed", true),
        &[("x-mock-ttft-ms", "80"), ("x-mock-inter-token-ms", "20"), ("x-mock-tokens", "4")],
    )
    .await;
    let arrivals = content_arrivals(response, started).await;

    // The knobs promise when each token is sent at the earliest: 80 ms before the first, 20 ms more before each
    // next one. No token may arrive before its time.
    assert_eq!(arrivals.len(), 4, "one chunk per token: {arrivals:?}");
    for (index, (arrived, _)) in arrivals.iter().enumerate() {
        let earliest = Duration::from_millis(80 + 20 * index as u64);
        assert!(
            *arrived >= earliest,
            "token {index} arrived at {arrived:?}, before {earliest:?}: {arrivals:?}"
        );
    }
    let content: String = arrivals.into_iter().map(|(_, text)| text).collect();
    assert_eq!(content, answer_text("Timed", 4));
}
