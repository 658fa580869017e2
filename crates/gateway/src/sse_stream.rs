//! Turns a `ChatRelay` into a `text/event-stream` response: every burst of events the relay has ready goes out as
//! one body chunk (one write), in a `StreamFormat` that decides what each chat event looks like on the wire (the
//! browser's typed events or OpenAI's chunks), and a comment keeps a quiet stream alive through proxies.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use tokio::time::{Instant, Sleep};

use crate::app_state::{GatewayCounters, OpenStreamGuard};
use crate::chat_relay::{ChatRelay, RelayStart, RelayedEvent, StoredEventKind};

/// First capacity of a body chunk: a token event takes 100 to 300 bytes on the wire.
const CHUNK_CAPACITY_BYTES: usize = 1024;
/// The keep-alive: an SSE comment line, which clients ignore.
const KEEP_ALIVE_COMMENT: &[u8] = b":\n\n";

/// What each chat event becomes on the wire.
pub trait StreamFormat: Send + 'static {
    /// Appends `event` to `output` as SSE text; returns true when the response ends after it. `last_seq` is the
    /// last stored event relayed, the point a client resumes from.
    fn write_event(&mut self, event: &RelayedEvent, last_seq: u64, output: &mut BytesMut) -> bool;

    /// What the stream opens with, sent at once before any event (nothing unless a format says so).
    fn opening(&self) -> &'static [u8] {
        b""
    }

    /// What the stream ends with when the relay ended because the gateway is stopping (nothing unless a format
    /// says so).
    fn gateway_stop_notice(&self) -> &'static [u8] {
        b""
    }
}

/// EventSource's reconnect delay, set by the browser stream's opening `retry:` field: a dropped stream is resumed
/// (with `Last-Event-ID`) after 2 s, well within the workers' abandonment grace, so the chat is still there.
pub const EVENTSOURCE_RETRY: &[u8] = b"retry: 2000\n\n";

/// How a browser stream ends when its gateway stops: a comment saying why, and a reconnect delay short enough that
/// the client resumes on another gateway at once (its next stream's opening sets the delay back to 2 s).
pub const EVENTSOURCE_RESUME_ELSEWHERE: &[u8] =
    b": this gateway is stopping; resume on another\nretry: 100\n\n";

struct SseStream<F> {
    relay: ChatRelay,
    format: F,
    keep_alive: Duration,
    /// One timer for the stream's life. It is not pushed back at every write (a timer-wheel update per event):
    /// when it fires it checks `last_write`, and re-arms itself if the stream was not quiet for long enough.
    keep_alive_timer: Pin<Box<Sleep>>,
    last_write: Instant,
    /// Whether the format's opening went out.
    opened: bool,
    ended: bool,
    metrics: StreamMetrics,
    _open_stream: OpenStreamGuard,
}

/// What a stream measures, with handles resolved before it opens: nothing is looked up or allocated per event.
#[derive(Debug)]
pub struct StreamMetrics {
    pub events_relayed: metrics::Counter,
    /// `dam_gateway_added_latency_seconds{stage="relay"}`, recorded once per body chunk that carries events of a
    /// published message.
    pub relay_added_latency: metrics::Histogram,
    /// Set until the chat's first token is written, when this stream is one to measure it.
    pub first_token: Option<FirstTokenClock>,
}

/// Where a chat's time to first token starts, and where it goes.
#[derive(Debug)]
pub struct FirstTokenClock {
    /// The chat's creation, in ms since the epoch (the gateway that admitted it read its own clock).
    pub created_at_ms: u64,
    pub histogram: metrics::Histogram,
}

impl StreamMetrics {
    /// The metrics of a stream relaying from `start`, in `flow`. Only a stream that starts at the beginning
    /// measures the time to first token: a resume after the first token would count the chat twice.
    pub fn for_stream(counters: &GatewayCounters, flow: &str, start: &RelayStart) -> Self {
        let first_token = match (start.resume_after_seq, start.created_at_ms) {
            (0, Some(created_at_ms)) => {
                Some(FirstTokenClock { created_at_ms, histogram: counters.time_to_first_token(flow).clone() })
            }
            _ => None,
        };
        Self {
            events_relayed: counters.stream_events_relayed.clone(),
            relay_added_latency: counters.relay_added_latency.clone(),
            first_token,
        }
    }

    /// After a chunk is handed to the connection: the relay latency of the message it carried, and the time to
    /// first token if it carried the first token.
    fn chunk_written(&mut self, oldest_message_received_at: Option<std::time::Instant>, carried_token: bool) {
        if let Some(received_at) = oldest_message_received_at {
            self.relay_added_latency.record(received_at.elapsed().as_secs_f64());
        }
        if carried_token && let Some(clock) = self.first_token.take() {
            let waited_ms = protocol::unix_time_ms().saturating_sub(clock.created_at_ms);
            clock.histogram.record(waited_ms as f64 / 1000.0);
        }
    }
}

impl<F: StreamFormat> SseStream<F> {
    /// The next piece of the body: every event ready now, or a keep-alive; `None` once the stream has ended.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        // Room for a few events, so that a typical burst costs one allocation.
        let mut chunk = BytesMut::with_capacity(CHUNK_CAPACITY_BYTES);
        if !self.opened {
            // Sent on its own, at once: a client that drops before the first event still knows its delay.
            self.opened = true;
            chunk.extend_from_slice(self.format.opening());
        }
        while chunk.is_empty() && !self.ended {
            tokio::select! {
                biased;
                event = self.relay.next_event() => {
                    let Some(event) = event else {
                        self.ended = true;
                        if self.relay.ended_by_gateway_stop() {
                            chunk.extend_from_slice(self.format.gateway_stop_notice());
                        }
                        break;
                    };
                    let mut events = 1;
                    let mut carried_token = is_token(&event);
                    self.ended = self.format.write_event(&event, self.relay.last_seq(), &mut chunk);
                    while !self.ended && let Some(event) = self.relay.next_ready_event() {
                        events += 1;
                        carried_token |= is_token(&event);
                        self.ended = self.format.write_event(&event, self.relay.last_seq(), &mut chunk);
                    }
                    self.metrics.events_relayed.increment(events);
                    // The chunk goes to the connection as soon as this returns: that is when it counts as written.
                    self.metrics.chunk_written(self.relay.take_oldest_message_received_at(), carried_token);
                }
                _ = self.keep_alive_timer.as_mut() => {
                    let due = self.last_write + self.keep_alive;
                    if Instant::now() >= due {
                        chunk.extend_from_slice(KEEP_ALIVE_COMMENT);
                        self.keep_alive_timer.as_mut().reset(Instant::now() + self.keep_alive);
                    } else {
                        self.keep_alive_timer.as_mut().reset(due);
                    }
                }
            }
        }
        self.last_write = Instant::now();
        (!chunk.is_empty()).then(|| chunk.freeze())
    }
}

/// Whether `event` is answer text (a stored `token`).
fn is_token(event: &RelayedEvent) -> bool {
    matches!(event, RelayedEvent::Stored(stored) if stored.kind == StoredEventKind::Token)
}

/// The SSE response for one relay.
pub fn relay_as_sse<F: StreamFormat>(
    relay: ChatRelay,
    format: F,
    metrics: StreamMetrics,
    open_stream: OpenStreamGuard,
    keep_alive: Duration,
) -> Response {
    let stream = SseStream {
        relay,
        format,
        keep_alive,
        keep_alive_timer: Box::pin(tokio::time::sleep(keep_alive)),
        last_write: Instant::now(),
        opened: false,
        ended: false,
        metrics,
        _open_stream: open_stream,
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), stream))
    });
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        // Proxies other than ours (which never buffers) must not hold events back either.
        (header::HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    (headers, Body::from_stream(body)).into_response()
}

/// Appends one SSE event. `data` is one JSON document; should it hold line breaks (JSON allows them between
/// tokens), each line becomes its own `data:` line, which a client joins back with newlines.
pub fn write_sse_event(output: &mut BytesMut, id: Option<u64>, kind: Option<&str>, data: &str) {
    if let Some(id) = id {
        let _ = writeln!(output, "id: {id}");
    }
    if let Some(kind) = kind {
        output.extend_from_slice(b"event: ");
        output.extend_from_slice(kind.as_bytes());
        output.extend_from_slice(b"\n");
    }
    for line in data.split(['\n', '\r']) {
        output.extend_from_slice(b"data: ");
        output.extend_from_slice(line.as_bytes());
        output.extend_from_slice(b"\n");
    }
    output.extend_from_slice(b"\n");
}

/// Appends one SSE comment line (ignored by clients and SDKs).
pub fn write_sse_comment(output: &mut BytesMut, comment: &str) {
    output.extend_from_slice(b": ");
    output.extend_from_slice(comment.as_bytes());
    output.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_its_id_type_and_data_lines() {
        let mut output = BytesMut::new();
        write_sse_event(&mut output, Some(7), Some("token"), r#"{"type":"token"}"#);
        assert_eq!(&output[..], b"id: 7\nevent: token\ndata: {\"type\":\"token\"}\n\n");
        let mut output = BytesMut::new();
        write_sse_event(&mut output, None, None, "{\r\"a\":1}");
        assert_eq!(&output[..], b"data: {\ndata: \"a\":1}\n\n");
        let mut output = BytesMut::new();
        write_sse_comment(&mut output, "queued position=2");
        assert_eq!(&output[..], b": queued position=2\n\n");
    }
}
