//! One chat, one trace: the spans of the gateway (admission, relay) and of the worker (queue wait, the run, its
//! upstream call) for one chat share one trace id, across the Redis queue, recorded by an in-memory exporter.
//! Its own test binary, because it installs the process's one tracing subscriber and tracer provider.

use std::time::Duration;

use opentelemetry::trace::{TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use test_support::{StackOptions, TestStack};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

/// The caller's own trace, as a browser or SDK would send it in `traceparent`.
const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Installs an in-memory exporter behind the same layer the services use, for the whole test binary.
fn record_spans_in_memory() -> (InMemorySpanExporter, SdkTracerProvider) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(protocol::telemetry::trace_context::TRACER_NAME))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("this test binary installs the only subscriber");
    (exporter, provider)
}

fn spans_named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|pair| pair.key.as_str() == key).map(|pair| pair.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chat_is_one_trace_from_the_callers_traceparent_through_the_queue_to_the_relay() {
    let (exporter, provider) = record_spans_in_memory();
    let stack = TestStack::start(StackOptions { gateways: 1, workers: 1, ..StackOptions::default() }).await;
    let browser_job_id = browser_chat_naming_its_own_trace(&stack).await;
    let openai_job_id = openai_chat_naming_no_trace(&stack).await;

    // Spans end when their step ends; the relay's ends when its stream closes, just after the last event.
    let spans = stack
        .wait_for("every step's span", Duration::from_secs(10), || {
            let provider = provider.clone();
            let exporter = exporter.clone();
            async move {
                let _ = provider.force_flush();
                let spans = exporter.get_finished_spans().unwrap_or_default();
                let complete =
                    ["chat.admission", "chat.queue_wait", "chat.run", "chat.upstream_call", "chat.relay"]
                        .iter()
                        .all(|name| spans_named(&spans, name).len() >= 2);
                complete.then_some(spans)
            }
        })
        .await;

    let caller_trace = TraceId::from_hex(CALLER_TRACE_ID).expect("trace id");
    assert_the_browser_chat_is_in_the_callers_trace(&spans_of_job(&spans, &browser_job_id), caller_trace);
    assert_the_openai_chat_is_in_one_trace_the_gateway_began(
        &spans_of_job(&spans, &openai_job_id),
        caller_trace,
    );

    // Identities are hashed: no attribute carries the caller's address in clear.
    for span in spans.iter() {
        for pair in &span.attributes {
            assert!(!pair.value.to_string().contains("127.0.0.1"), "{} carries {pair:?}", span.name);
        }
    }
}

/// A browser chat that names its own trace, streamed to its end; its job id.
async fn browser_chat_naming_its_own_trace(stack: &TestStack) -> String {
    let response = stack
        .http
        .post(format!("{}/api/chats", stack.gateway_url(0)))
        .header("traceparent", CALLER_TRACEPARENT)
        .json(&json!({ "messages": [{ "role": "user", "content": "trace me" }] }))
        .send()
        .await
        .expect("POST reaches the gateway");
    assert_eq!(response.status(), 202);
    let created: serde_json::Value = response.json().await.expect("JSON body");
    let mut events = stack.open_events(0, created["events_url"].as_str().expect("events url")).await;
    let received = events.collect_all_within(Duration::from_secs(30)).await;
    assert!(received.iter().any(|event| event.event == "done"), "the chat ends done: {received:?}");
    created["id"].as_str().expect("job id").to_owned()
}

/// An OpenAI-style chat that names no trace: the gateway starts one, and the worker continues it. Its job id.
async fn openai_chat_naming_no_trace(stack: &TestStack) -> String {
    let completion = stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
        .json(&json!({ "model": "mock-1", "messages": [{ "role": "user", "content": "and me" }] }))
        .send()
        .await
        .expect("POST reaches the gateway");
    assert_eq!(completion.status(), 200);
    let completion: serde_json::Value = completion.json().await.expect("JSON body");
    completion["id"].as_str().expect("id").trim_start_matches("chatcmpl-").to_owned()
}

fn spans_of_job<'a>(spans: &'a [SpanData], job_id: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| attribute(span, "job_id").as_deref() == Some(job_id)).collect()
}

fn assert_the_browser_chat_is_in_the_callers_trace(browser_spans: &[&SpanData], caller_trace: TraceId) {
    let names: Vec<&str> = browser_spans.iter().map(|span| span.name.as_ref()).collect();
    for step in [
        "chat.admission",
        "chat.queue_wait",
        "chat.run",
        "chat.permit_wait",
        "chat.upstream_call",
        "chat.relay",
    ] {
        assert!(names.contains(&step), "the browser chat has a {step} span: {names:?}");
    }
    for span in browser_spans {
        assert_eq!(span.span_context.trace_id(), caller_trace, "{} is in the caller's trace", span.name);
    }

    // The queue wait is a span of its own, a child of the admission, from admission to the worker's claim.
    let admission = browser_spans.iter().find(|span| span.name == "chat.admission").expect("admission");
    let queue_wait = browser_spans.iter().find(|span| span.name == "chat.queue_wait").expect("queue wait");
    assert_eq!(queue_wait.parent_span_id, admission.span_context.span_id());
    assert!(queue_wait.end_time >= queue_wait.start_time);
    assert_eq!(attribute(queue_wait, "lane").as_deref(), Some("standard"));
}

/// The worker's and the gateway's spans of the OpenAI chat share the trace the gateway began.
fn assert_the_openai_chat_is_in_one_trace_the_gateway_began(
    openai_spans: &[&SpanData],
    caller_trace: TraceId,
) {
    let openai_names: Vec<&str> = openai_spans.iter().map(|span| span.name.as_ref()).collect();
    for step in ["chat.admission", "chat.queue_wait", "chat.run", "chat.upstream_call", "chat.relay"] {
        assert!(openai_names.contains(&step), "the OpenAI chat has a {step} span: {openai_names:?}");
    }
    let openai_trace = openai_spans[0].span_context.trace_id();
    assert_ne!(openai_trace, caller_trace);
    assert!(openai_spans.iter().all(|span| span.span_context.trace_id() == openai_trace), "{openai_names:?}");
}
