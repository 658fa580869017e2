//! The JSON log line (`LOG_FORMAT=json`): one object per line with timestamp, level, service, instance,
//! trace_id, span_id, job_id and a stable event name, then the event's own fields. Log shippers (Loki, any
//! JSON pipeline) index these without parsing prose.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Span fields a log line inherits from the spans it happens in, nearest span first.
const INHERITED_SPAN_FIELDS: [&str; 4] = ["job_id", "lane", "identity_hash", "worker_id"];

/// Formats each event as one JSON object; see the module documentation for the fields.
#[derive(Debug, Clone)]
pub struct JsonLogFormat {
    pub service: &'static str,
    pub instance: String,
}

/// Keeps the [`INHERITED_SPAN_FIELDS`] of every span, for the log lines written inside it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFieldsLayer;

/// The inherited fields one span carries, as its extension.
#[derive(Debug, Default)]
struct InheritedFields(BTreeMap<&'static str, String>);

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut collector = FieldCollector::default();
        attributes.record(&mut collector);
        let inherited = inherited_fields(collector.fields);
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(InheritedFields(inherited));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        let mut collector = FieldCollector::default();
        values.record(&mut collector);
        let recorded = inherited_fields(collector.fields);
        if recorded.is_empty() {
            return;
        }
        if let Some(span) = context.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(InheritedFields(fields)) = extensions.get_mut::<InheritedFields>() {
                fields.extend(recorded);
            }
        }
    }
}

fn inherited_fields(fields: Map<String, Value>) -> BTreeMap<&'static str, String> {
    INHERITED_SPAN_FIELDS
        .iter()
        .filter_map(|name| fields.get(*name).map(|value| (*name, plain_text(value))))
        .collect()
}

fn plain_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl<S, N> FormatEvent<S, N> for JsonLogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut collector = FieldCollector::default();
        event.record(&mut collector);
        let mut fields = collector.fields;
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(event.metadata().level().as_str().to_ascii_lowercase()));
        line.insert("service".into(), Value::String(self.service.to_owned()));
        line.insert("instance".into(), Value::String(self.instance.clone()));
        let message = fields.remove("message").map(|message| plain_text(&message)).unwrap_or_default();
        let event_name = match fields.remove("event") {
            Some(name) => plain_text(&name),
            // Libraries' own events (OpenTelemetry's exporter) name themselves in `name` and may say nothing else.
            None if message.is_empty() => {
                fields.get("name").map(plain_text).unwrap_or_else(|| stable_event_name(&message))
            }
            None => stable_event_name(&message),
        };
        line.insert("event".into(), Value::String(event_name));
        line.insert("message".into(), Value::String(message));
        if let Some((trace_id, span_id)) = current_trace_and_span_ids() {
            line.insert("trace_id".into(), Value::String(trace_id));
            line.insert("span_id".into(), Value::String(span_id));
        }
        if let Some(scope) = context.event_scope() {
            for span in scope {
                if let Some(InheritedFields(inherited)) = span.extensions().get::<InheritedFields>() {
                    for (name, value) in inherited {
                        line.entry(name.to_string()).or_insert_with(|| Value::String(value.clone()));
                    }
                }
            }
        }
        line.insert("target".into(), Value::String(event.metadata().target().to_owned()));
        for (name, value) in fields {
            line.entry(name).or_insert(value);
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The trace and span ids of the current span, when the OpenTelemetry layer gave it valid ones.
fn current_trace_and_span_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let current = tracing::Span::current();
    if current.is_none() {
        return None;
    }
    let context = current.context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.span_id().to_string()))
}

/// A log line's event name when its call site names none: its message in snake case, cut before the first
/// punctuation, so "job attempt lost; handing the job back" is `job_attempt_lost`. Messages are constant
/// strings (values go in fields), so the name is stable.
pub fn stable_event_name(message: &str) -> String {
    let head = message.split([';', ':', ',', '(', '.']).next().unwrap_or_default();
    let mut name = String::with_capacity(head.len());
    for word in
        head.split(|character: char| !character.is_ascii_alphanumeric()).filter(|word| !word.is_empty())
    {
        if !name.is_empty() {
            name.push('_');
        }
        name.push_str(&word.to_ascii_lowercase());
    }
    if name.is_empty() { "log".to_owned() } else { name }
}

/// Collects an event's or span's fields as JSON values.
#[derive(Default)]
struct FieldCollector {
    fields: Map<String, Value>,
}

impl Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fields.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_owned(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_the_message_in_snake_case_up_to_the_first_punctuation() {
        assert_eq!(stable_event_name("job attempt lost; handing the job back"), "job_attempt_lost");
        assert_eq!(stable_event_name("worker starting"), "worker_starting");
        assert_eq!(stable_event_name("Redis: connection refused"), "redis");
        assert_eq!(stable_event_name(""), "log");
    }

    #[test]
    fn a_library_event_without_a_message_is_named_by_its_name_field() {
        let output = capture_json_lines(|| {
            tracing::error!(name = "BatchSpanProcessor.ExportError", error = "refused", "");
        });
        let line: Value = serde_json::from_str(output.trim()).expect("one JSON line");
        assert_eq!(line["event"], "BatchSpanProcessor.ExportError");
        assert_eq!(line["error"], "refused");
    }

    /// The JSON lines `emit` writes through a subscriber with the span fields layer.
    fn capture_json_lines(emit: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let format = JsonLogFormat { service: "gateway", instance: "gateway-1".to_owned() };
        let subscriber = tracing_subscriber::registry()
            .with(SpanFieldsLayer)
            .with(tracing_subscriber::fmt::layer().event_format(format).with_writer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8")
    }

    #[test]
    fn a_json_line_carries_service_instance_event_and_the_job_id_of_its_span() {
        let output = capture_json_lines(|| {
            let span = tracing::info_span!("chat.admission", job_id = "0190-abc", lane = "free");
            let _entered = span.enter();
            tracing::info!(position = 3, "chat admitted; waiting in line");
        });
        let line: Value = serde_json::from_str(output.trim()).expect("one JSON line");
        assert_eq!(line["service"], "gateway");
        assert_eq!(line["instance"], "gateway-1");
        assert_eq!(line["level"], "info");
        assert_eq!(line["event"], "chat_admitted");
        assert_eq!(line["job_id"], "0190-abc");
        assert_eq!(line["lane"], "free");
        assert_eq!(line["position"], 3);
        assert!(line["timestamp"].as_str().is_some_and(|timestamp| timestamp.contains('T')), "{line}");
    }
}
