//! Turns a `ChatRelay` into an SSE response with keep-alives, through a `StreamFormat` that decides what each
//! chat event looks like on the wire (the browser's typed events or OpenAI's chunks).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use protocol::StreamEvent;

use crate::app_state::OpenStreamGuard;
use crate::chat_relay::ChatRelay;

/// What one chat event becomes on the wire.
#[derive(Debug, Default)]
pub struct FormattedEvents {
    pub events: Vec<Event>,
    /// Ends the response after these events even if the relay has more.
    pub end_stream: bool,
}

pub trait StreamFormat: Send + 'static {
    fn format(&mut self, event: &StreamEvent, last_seq: u64) -> FormattedEvents;
}

struct StreamState<F> {
    relay: ChatRelay,
    format: F,
    ended: bool,
    _open_stream: OpenStreamGuard,
}

/// The SSE response for one relay.
pub fn relay_as_sse<F: StreamFormat>(
    relay: ChatRelay,
    format: F,
    open_stream: OpenStreamGuard,
    keep_alive: Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = StreamState { relay, format, ended: false, _open_stream: open_stream };
    let events = futures::stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        let event = state.relay.next_event().await?;
        let formatted = state.format.format(&event, state.relay.last_seq());
        state.ended = formatted.end_stream;
        metrics::counter!("dam_gateway_stream_events_relayed_total").increment(1);
        Some((futures::stream::iter(formatted.events.into_iter().map(Ok)), state))
    });
    Sse::new(futures::StreamExt::flatten(events)).keep_alive(KeepAlive::new().interval(keep_alive))
}
