//! How a chat's trace crosses the queue: the W3C trace context (`traceparent`, `tracestate`) of the span that
//! admitted it travels in the job envelope, and every later step (queue wait, the upstream call, the relay back)
//! becomes a child of it. Also what a span may say about a caller: a hash of the identity, never an API key.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The tracer name every Traffic Dam span is recorded under.
pub const TRACER_NAME: &str = "traffic-dam";

/// The W3C names of a trace context's two entries: HTTP headers, and the keys of the envelope's `trace_context`.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The W3C trace context of `span`, ready for the envelope; empty when tracing is off or the span not sampled.
pub fn trace_context_of(span: &tracing::Span) -> BTreeMap<String, String> {
    let context = span.context();
    let mut carrier = BTreeMap::new();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut EnvelopeCarrier(&mut carrier));
    }
    carrier
}

/// The remote parent described by a trace context (from an envelope or a caller's headers); an empty or
/// malformed one gives an empty context, so the step starts a trace of its own.
pub fn parent_from_trace_context(trace_context: &BTreeMap<String, String>) -> Context {
    if trace_context.is_empty() {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&EnvelopeCarrierView(trace_context))
}

/// The envelope's trace context map, written by the propagator.
struct EnvelopeCarrier<'a>(&'a mut BTreeMap<String, String>);

impl Injector for EnvelopeCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The envelope's trace context map, read by the propagator.
struct EnvelopeCarrierView<'a>(&'a BTreeMap<String, String>);

impl Extractor for EnvelopeCarrierView<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Makes `span` a child of the step described by `trace_context`, when there is one.
pub fn continue_trace(span: &tracing::Span, trace_context: &BTreeMap<String, String>) {
    let parent = parent_from_trace_context(trace_context);
    if parent.span().span_context().is_valid() {
        // Fails only when the span was already started, which a fresh span is not.
        let _ = span.set_parent(parent);
    }
}

/// The trace context a caller sent in its `traceparent` and `tracestate` headers, ready for [`continue_trace`].
pub fn trace_context_from_headers(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> BTreeMap<String, String> {
    let mut carrier = BTreeMap::new();
    if let Some(traceparent) = traceparent {
        carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
        if let Some(tracestate) = tracestate {
            carrier.insert(TRACESTATE.to_owned(), tracestate.to_owned());
        }
    }
    carrier
}

/// The hex trace id of a trace context, when it holds a valid one (for logs and `Server-Timing`-style hints).
pub fn trace_id_of(trace_context: &BTreeMap<String, String>) -> Option<String> {
    let parent = parent_from_trace_context(trace_context);
    let span_context = parent.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// Records the time a job waited in its lane as a span of its own, `chat.queue_wait`, from its admission
/// (`created_at_ms`) to `claimed_at`, a child of the admission's span. It is built with explicit times because it
/// starts in one process and ends in another. Costs nothing when tracing is off (the global tracer is a no-op).
pub fn record_queue_wait_span(
    trace_context: &BTreeMap<String, String>,
    created_at_ms: u64,
    claimed_at: SystemTime,
    attributes: Vec<KeyValue>,
) {
    let parent = parent_from_trace_context(trace_context);
    if !parent.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer(TRACER_NAME);
    let started_at = UNIX_EPOCH + Duration::from_millis(created_at_ms);
    let mut span = tracer
        .span_builder("chat.queue_wait")
        .with_start_time(started_at.min(claimed_at))
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    span.end_with_timestamp(claimed_at);
}

/// A caller's identity as spans and logs may show it: the first 16 hex digits of its SHA-256. An identity is an
/// API key's name or a client address, and neither belongs in a trace store in clear.
pub fn hashed_identity(identity: &str) -> String {
    let digest = Sha256::digest(identity.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_from_headers_is_read_and_a_malformed_one_is_ignored() {
        let good =
            trace_context_from_headers(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of(&good).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let bad = trace_context_from_headers(Some("not-a-traceparent"), Some("x=1"));
        assert_eq!(trace_id_of(&bad), None);
        assert_eq!(trace_id_of(&BTreeMap::new()), None);
    }

    #[test]
    fn a_hashed_identity_is_stable_short_and_not_the_identity() {
        let hashed = hashed_identity("key:partner");
        assert_eq!(hashed, hashed_identity("key:partner"));
        assert_eq!(hashed.len(), 16);
        assert!(!hashed.contains("partner"));
        assert_ne!(hashed, hashed_identity("key:other"));
    }
}
