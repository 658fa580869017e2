//! What the gateway tells about itself: `X-Dam-Instance` and `X-Dam-Layer` on every answer, `Server-Timing` on
//! chat answers, and the metrics of the catalog (`docs/observability.md`) counted after real chats, refused ones
//! included.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use test_support::{SseReader, StackOptions, TestStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::own_process::{in_a_process_of_its_own, run_in_a_process_of_its_own};

const INSTANCE: &str = "gateway-under-test";
const LIMIT: Duration = Duration::from_secs(20);

/// `Server-Timing` as metric name -> duration in ms; panics on anything unparseable.
fn server_timing(response: &reqwest::Response) -> HashMap<String, f64> {
    let header = response.headers().get("server-timing").expect("a Server-Timing header");
    let header = header.to_str().expect("ASCII");
    header
        .split(',')
        .map(|metric| {
            let mut parameters = metric.trim().split(';');
            let name = parameters.next().expect("a metric name").to_owned();
            let duration = parameters
                .find_map(|parameter| parameter.strip_prefix("dur="))
                .unwrap_or_else(|| panic!("{name} has a dur in {header:?}"));
            let milliseconds: f64 = duration.parse().unwrap_or_else(|_| panic!("a number in {header:?}"));
            assert!(milliseconds.is_finite() && milliseconds >= 0.0, "{header:?}");
            (name, milliseconds)
        })
        .collect()
}

/// The answering instance; every gateway answer also says it comes from the gate layer (nginx's own say edge).
fn instance_of(response: &reqwest::Response) -> &str {
    assert_eq!(response.headers().get("x-dam-layer").map(|layer| layer.as_bytes()), Some(&b"gate"[..]));
    response.headers().get("x-dam-instance").expect("an X-Dam-Instance header").to_str().expect("ASCII")
}

async fn post_completion(stack: &TestStack, body: Value) -> reqwest::Response {
    stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
        .json(&body)
        .send()
        .await
        .expect("POST /v1/chat/completions reaches the gateway")
}

/// Sends `request` as is on a fresh connection and reads until the gateway closes it.
async fn raw_exchange(stack: &TestStack, request: &[u8]) -> String {
    let mut connection =
        TcpStream::connect(stack.gateways[0].address.expect("address")).await.expect("connect");
    connection.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, connection.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request whose header block is over the default limit: refused with 431 before any routing.
fn oversized_head() -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n", "a".repeat(64 * 1024)).into_bytes()
}

#[tokio::test]
async fn every_answer_names_the_instance_and_chat_answers_say_where_their_time_went() {
    let stack = TestStack::start_with(StackOptions::default(), |settings| {
        settings.telemetry.instance = INSTANCE.to_owned();
        settings.limits.tiers.anonymous.rate_per_second = 0.001;
        settings.limits.tiers.anonymous.burst = 4;
    })
    .await;

    // A browser chat: admitted at once, so its queue wait is not known yet when the head goes out.
    let created = stack.post_chat(0, &json!({"message": "timed [[mock tokens=3]]"})).await;
    assert_eq!(created.status(), 202);
    assert_eq!(instance_of(&created), INSTANCE);
    let timing = server_timing(&created);
    assert!(timing.contains_key("admission") && timing.contains_key("gateway"), "{timing:?}");
    assert!(!timing.contains_key("queue"), "{timing:?}");
    let events_url =
        created.json::<Value>().await.expect("json")["events_url"].as_str().expect("url").to_owned();

    let events = stack.http.get(format!("{}{events_url}", stack.gateway_url(0))).send().await.expect("get");
    assert_eq!(events.status(), 200);
    assert_eq!(instance_of(&events), INSTANCE);
    assert!(server_timing(&events).contains_key("gateway"));
    let received = SseReader::new(events).collect_all_within(LIMIT).await;
    assert_eq!(received.last().expect("events").event, "done");

    // Once a worker has started the chat, a stream that opens knows its queue wait from the job's state.
    let replayed = stack.http.get(format!("{}{events_url}", stack.gateway_url(0))).send().await.expect("get");
    let timing = server_timing(&replayed);
    assert!(timing.contains_key("queue") && timing.contains_key("gateway"), "{timing:?}");

    // A whole OpenAI answer is sent after the chat ran: all three parts are known.
    let whole = post_completion(
        &stack,
        json!({"messages": [{"role": "user", "content": "whole [[mock tokens=2]]"}]}),
    )
    .await;
    assert_eq!(whole.status(), 200);
    assert_eq!(instance_of(&whole), INSTANCE);
    let timing = server_timing(&whole);
    for part in ["admission", "queue", "gateway"] {
        assert!(timing.contains_key(part), "{part} in {timing:?}");
    }
    assert_eq!(whole.json::<Value>().await.expect("json")["object"], "chat.completion");

    let streamed = post_completion(
        &stack,
        json!({"messages": [{"role": "user", "content": "streamed [[mock tokens=2]]"}], "stream": true}),
    )
    .await;
    assert_eq!(streamed.status(), 200);
    let timing = server_timing(&streamed);
    assert!(timing.contains_key("admission") && timing.contains_key("gateway"), "{timing:?}");
    assert_eq!(
        SseReader::new(streamed).collect_all_within(LIMIT).await.last().expect("events").data,
        "[DONE]"
    );

    // Past the caller's burst the refusal says where its time went too.
    let refused = stack.post_chat(0, &json!({"message": "one too many"})).await;
    let refused =
        if refused.status() == 202 { stack.post_chat(0, &json!({"message": "over"})).await } else { refused };
    assert_eq!(refused.status(), 429);
    assert_eq!(instance_of(&refused), INSTANCE);
    let timing = server_timing(&refused);
    assert!(timing.contains_key("admission") && timing.contains_key("gateway"), "{timing:?}");

    // Answers that are no chat name the instance as well: an unknown route, and a head refused before routing.
    let unknown =
        stack.http.get(format!("{}/no/such/route", stack.gateway_url(0))).send().await.expect("get");
    assert_eq!(unknown.status(), 404);
    assert_eq!(instance_of(&unknown), INSTANCE);
    let refused_head = raw_exchange(&stack, &oversized_head()).await.to_ascii_lowercase();
    assert!(refused_head.starts_with("http/1.1 431"), "{refused_head}");
    assert!(refused_head.contains(&format!("x-dam-instance: {INSTANCE}\r\n")), "{refused_head}");
    assert!(refused_head.contains("x-dam-layer: gate\r\n"), "{refused_head}");
}

/// The metrics registry is one per process and every test of this binary runs gateways in it, so the requests
/// run in a process of their own (this test binary again, running only the ignored test below).
#[tokio::test]
async fn gateway_metrics_count_exactly_what_this_test_caused() {
    run_in_a_process_of_its_own("observability::gateway_metrics_in_a_process_of_their_own").await;
}

/// The samples of a Prometheus text exposition: `name{labels}` (labels sorted) -> value.
fn parse_samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let mut labels: Vec<&str> =
                labels.trim_end_matches('}').split(',').filter(|label| !label.is_empty()).collect();
            labels.sort_unstable();
            Some((format!("{name}{{{}}}", labels.join(",")), value.parse().ok()?))
        })
        .collect()
}

/// The key [`parse_samples`] gives the series `name` with exactly `labels`.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> =
        labels.iter().map(|(label, value)| format!("{label}=\"{value}\"")).collect();
    labels.sort_unstable();
    format!("{name}{{{}}}", labels.join(","))
}

async fn scrape(stack: &TestStack) -> HashMap<String, f64> {
    let response = stack.http.get(format!("{}/metrics", stack.gateway_url(0))).send().await.expect("get");
    assert_eq!(response.status(), 200);
    parse_samples(&response.text().await.expect("text"))
}

fn requests(route: &str, method: &str, status: &str) -> String {
    series("dam_gateway_http_requests_total", &[("route", route), ("method", method), ("status", status)])
}

fn decisions(decision: &str, reason: &str, flow: &str) -> String {
    series(
        "dam_gateway_admission_decisions_total",
        &[("decision", decision), ("reason", reason), ("flow", flow)],
    )
}

#[tokio::test]
#[ignore = "runs only inside gateway_metrics_count_exactly_what_this_test_caused, in a process of its own"]
async fn gateway_metrics_in_a_process_of_their_own() {
    if !in_a_process_of_its_own() {
        return;
    }
    let stack = TestStack::start_with(StackOptions::default(), |settings| {
        settings.limits.tiers.anonymous.rate_per_second = 0.001;
        settings.limits.tiers.anonymous.burst = 3;
    })
    .await;

    // Before any chat: the series dashboards and alerts read exist, at zero.
    let before = scrape(&stack).await;
    for series in [
        decisions("rejected", "rate_limited", "openai"),
        decisions("too_many_connections", "too_many_connections", "browser"),
        decisions("admitted", "none", "openai"),
        requests("/api/chats", "POST", "429"),
        series("dam_gateway_time_to_first_token_seconds_count", &[("flow", "browser")]),
        series("dam_gateway_added_latency_seconds_count", &[("stage", "relay")]),
    ] {
        assert_eq!(before.get(&series), Some(&0.0), "{series} registered at zero: {before:?}");
    }

    stream_an_openai_chat_and_a_browser_chat_slowly(&stack).await;
    spend_the_burst_and_make_error_answers(&stack).await;
    ask_for_the_models_over_http2(&stack).await;
    assert_counted_exactly_what_happened(&scrape(&stack).await);
}

/// An OpenAI stream and a browser chat whose tokens arrive while their streams are open, so that they are
/// relayed from published messages.
async fn stream_an_openai_chat_and_a_browser_chat_slowly(stack: &TestStack) {
    let slow = "[[mock tokens=4 ttft_ms=300 inter_token_ms=200]]";
    let streamed = post_completion(
        stack,
        json!({"messages": [{"role": "user", "content": format!("streamed {slow}")}], "stream": true}),
    )
    .await;
    assert_eq!(streamed.status(), 200);
    assert_eq!(
        SseReader::new(streamed).collect_all_within(LIMIT).await.last().expect("events").data,
        "[DONE]"
    );
    let created = stack.post_chat(0, &json!({"message": format!("browser {slow}")})).await;
    assert_eq!(created.status(), 202);
    let events_url =
        created.json::<Value>().await.expect("json")["events_url"].as_str().expect("url").to_owned();
    let received = stack.open_events(0, &events_url).await.collect_all_within(LIMIT).await;
    assert_eq!(received.last().expect("events").event, "done");
}

/// The caller's burst of 3 is spent by the third chat, so the fourth is refused; then a route that does not
/// exist and a head too large.
async fn spend_the_burst_and_make_error_answers(stack: &TestStack) {
    assert_eq!(stack.post_chat(0, &json!({"message": "third"})).await.status(), 202);
    assert_eq!(stack.post_chat(0, &json!({"message": "fourth"})).await.status(), 429);
    let unknown =
        stack.http.get(format!("{}/no/such/route", stack.gateway_url(0))).send().await.expect("get");
    assert_eq!(unknown.status(), 404);
    assert!(raw_exchange(stack, &oversized_head()).await.starts_with("HTTP/1.1 431"));
}

/// HTTP/2 requests pass the same router, and are counted the same way.
async fn ask_for_the_models_over_http2(stack: &TestStack) {
    use http_body_util::{BodyExt, Empty};

    let io = hyper_util::rt::TokioIo::new(
        TcpStream::connect(stack.gateways[0].address.expect("address")).await.expect("connect"),
    );
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2");
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("{}/v1/models", stack.gateway_url(0)))
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-dam-instance"], stack.settings.telemetry.instance_name().as_str());
    response.into_body().collect().await.expect("body");
}

fn assert_counted_exactly_what_happened(after: &HashMap<String, f64>) {
    let expected = [
        (requests("/v1/chat/completions", "POST", "200"), 1.0),
        (requests("/api/chats", "POST", "202"), 2.0),
        (requests("/api/chats", "POST", "429"), 1.0),
        (requests("/api/chats/{id}/events", "GET", "200"), 1.0),
        (requests("unmatched", "GET", "404"), 1.0),
        (requests("unmatched", "unknown", "431"), 1.0),
        (requests("/v1/models", "GET", "200"), 1.0),
        (decisions("admitted", "none", "openai"), 1.0),
        (decisions("admitted", "none", "browser"), 2.0),
        (decisions("rejected", "rate_limited", "browser"), 1.0),
        (decisions("rejected", "rate_limited", "openai"), 0.0),
        (series("dam_gateway_time_to_first_token_seconds_count", &[("flow", "browser")]), 1.0),
        (series("dam_gateway_time_to_first_token_seconds_count", &[("flow", "openai")]), 1.0),
        // Every chat POST the handlers answered: the OpenAI one, three browser ones (the refused one too).
        (series("dam_gateway_added_latency_seconds_count", &[("stage", "admission")]), 4.0),
    ];
    for (series, value) in expected {
        assert_eq!(after.get(&series), Some(&value), "{series}: {after:?}");
    }
    let relayed = series("dam_gateway_added_latency_seconds_count", &[("stage", "relay")]);
    assert!(
        after.get(&relayed).is_some_and(|count| *count >= 2.0),
        "both streams relayed live tokens: {after:?}"
    );
    // A first token takes at least the upstream's delay before it: a plausible time, not a zero.
    let first_token_sum = series("dam_gateway_time_to_first_token_seconds_sum", &[("flow", "browser")]);
    assert!(after.get(&first_token_sum).is_some_and(|seconds| *seconds >= 0.3), "{after:?}");
}
