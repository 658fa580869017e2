//! How a relay ends when its events do not end it: its gateway begins to stop (the stream ends at once, or
//! finishes within the drain, by flow), or the chat outlives anything it could legitimately take.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ChatRelay;
use super::relayed_event::RelayedEvent;
use crate::app_state::AppState;

/// What a relay does when its gateway begins to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGatewayStop {
    /// End at once: the client resumes on another gateway from the replay log (the browser flow's event stream).
    ResumeElsewhere,
    /// Keep relaying until the chat ends or the drain time is over: the client cannot resume (an
    /// OpenAI-compatible stream).
    FinishWithinDrain,
}

/// How a stream ends when its events do not end it.
pub(super) enum RelayEnding {
    /// The gateway's shutdown drain is over: the client may resume elsewhere.
    Shutdown,
    /// The chat outlived anything it could legitimately take.
    Deadline,
}

/// The deadline and the shutdown drain, in one future made once per stream (not one timer per event).
pub(super) type RelayEndingFuture = Pin<Box<dyn Future<Output = RelayEnding> + Send>>;

/// The ending of a relay that starts now: the chat's longest possible life from here, or the stop of this
/// gateway that concerns the flow.
pub(super) fn relay_ending_from_now(state: &AppState, on_gateway_stop: OnGatewayStop) -> RelayEndingFuture {
    let longest_life =
        Duration::from_secs(state.settings.chat.queue_deadline_s + state.settings.llm.request_timeout_s + 30);
    let stop_token = match on_gateway_stop {
        OnGatewayStop::ResumeElsewhere => &state.resumable_stream_shutdown,
        OnGatewayStop::FinishWithinDrain => &state.stream_shutdown,
    };
    Box::pin(relay_ending(Instant::now() + longest_life, stop_token.clone()))
}

async fn relay_ending(deadline: Instant, shutdown: CancellationToken) -> RelayEnding {
    tokio::select! {
        _ = shutdown.cancelled() => RelayEnding::Shutdown,
        _ = tokio::time::sleep_until(deadline) => RelayEnding::Deadline,
    }
}

impl ChatRelay {
    /// Ends the relay: silently when its gateway stops (the client may resume elsewhere from `last_seq`), with
    /// a `stream_timeout` error past the deadline.
    pub(super) fn end_by(&mut self, ending: RelayEnding) -> Option<RelayedEvent> {
        self.finished = true;
        match ending {
            RelayEnding::Shutdown => {
                self.ended_by_gateway_stop = true;
                None
            }
            RelayEnding::Deadline => {
                Some(self.end_with_error("stream_timeout", "the chat took longer than its deadline"))
            }
        }
    }
}
