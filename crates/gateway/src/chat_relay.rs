//! `ChatRelay`: one chat's events in order, for one client. It subscribes to the job's channel first, then reads
//! the replay log, then relays live events; it drops duplicates by `seq`, fills gaps from the log, and while the
//! job waits it interleaves `queued` updates computed from the process-wide queue snapshot. Stored events keep
//! the JSON the worker wrote, so a format can send it on as is. Both the browser flow and the OpenAI flow format
//! what it yields. Where a relay starts, the events it yields, its log reads and its endings have files of their
//! own under `chat_relay/`.

mod relay_ending;
mod relay_start;
mod relayed_event;
mod replay_log;

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use protocol::retry_backoff::RetryBackoff;
use protocol::stream_event::published_event_ranges;
use protocol::telemetry::trace_context::{continue_trace, trace_context_from_headers};
use protocol::{Lane, StreamEvent};
use tokio::sync::watch;
use tokio::time::Sleep;

pub use self::relay_ending::OnGatewayStop;
use self::relay_ending::{RelayEndingFuture, relay_ending_from_now};
pub use self::relay_start::{QueuedJob, RelayStart, locate_chat, read_queue_wait};
use self::relayed_event::StoredEventError;
pub use self::relayed_event::{RelayedEvent, StoredEvent, StoredEventKind};
use self::replay_log::{LogRead, poll_log_read, poll_retry_pause};
use crate::app_state::AppState;
use crate::error::GatewayError;
use crate::queue_watch::QueueSnapshot;
use crate::stream_router::{RouterMessage, StreamSubscription};

/// One client's ordered view of one chat.
pub struct ChatRelay {
    state: AppState,
    replay_log_key: String,
    subscription: StreamSubscription,
    last_seq: u64,
    ready: VecDeque<RelayedEvent>,
    finished: bool,
    waiting: Option<QueuedJob>,
    queue_watch: watch::Receiver<QueueSnapshot>,
    /// The deadline and the shutdown drain, in one future made once per stream (not one timer per event).
    ending: RelayEndingFuture,
    ended_by_gateway_stop: bool,
    /// A read of the replay log under way, after a gap or a lost pub/sub connection. It lives here rather than in
    /// `next_event`'s future, so that dropping that future (a keep-alive tick won the race) loses nothing.
    log_read: Option<LogRead>,
    /// The pauses between failed reads of the replay log in a row (made at the first failure, dropped at the
    /// next success, so a healthy stream carries none), and the pause under way.
    log_read_backoff: Option<RetryBackoff>,
    log_read_retry: Option<Pin<Box<Sleep>>>,
    /// `chat.relay`: open from the subscription to the relay's end, so a trace shows how long the answer took
    /// to reach this client.
    _relay_span: tracing::Span,
    /// When the router received the oldest published message whose events are ready but not yet taken by the
    /// format: the start of the relay's added latency.
    oldest_message_received_at: Option<std::time::Instant>,
}

impl fmt::Debug for ChatRelay {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ChatRelay")
            .field("replay_log_key", &self.replay_log_key)
            .field("last_seq", &self.last_seq)
            .field("ready", &self.ready.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ChatRelay {
    /// Subscribes and catches up with the replay log. The first event is a `queued` one if the job waits.
    pub async fn open(
        state: &AppState,
        start: &RelayStart,
        on_gateway_stop: OnGatewayStop,
    ) -> Result<Self, GatewayError> {
        let relay_span = tracing::info_span!("chat.relay", job_id = %start.job_id);
        if let Some(traceparent) = start.traceparent.as_deref() {
            continue_trace(&relay_span, &trace_context_from_headers(Some(traceparent), None));
        }
        let channel = state.keys.job_event_channel(&start.job_id);
        let subscription = state.stream_router.subscribe(channel).await.map_err(|error| {
            GatewayError::BackendUnavailable(redis::RedisError::from((
                redis::ErrorKind::Io,
                "pub/sub unavailable",
                error.to_string(),
            )))
        })?;
        let mut relay = Self {
            state: state.clone(),
            replay_log_key: state.keys.job_replay_log(&start.job_id),
            subscription,
            last_seq: start.resume_after_seq,
            ready: VecDeque::new(),
            finished: false,
            waiting: start.queued,
            queue_watch: state.queue_watch.clone(),
            ending: relay_ending_from_now(state, on_gateway_stop),
            ended_by_gateway_stop: false,
            log_read: None,
            log_read_backoff: None,
            log_read_retry: None,
            _relay_span: relay_span,
            oldest_message_received_at: None,
        };
        relay.queue_watch.mark_unchanged();
        relay.catch_up_with_replay_log().await?;
        if let Some(queued) = relay.waiting.filter(|_| relay.ready.is_empty()) {
            let snapshot = relay.queue_watch.borrow().clone();
            relay.ready.push_back(RelayedEvent::Made(queued_event(&snapshot, queued.lane, queued.position)));
        }
        Ok(relay)
    }

    /// The `seq` of the last log event relayed (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether the relay ended because its gateway is stopping, not because the chat ended.
    pub fn ended_by_gateway_stop(&self) -> bool {
        self.ended_by_gateway_stop
    }

    /// When the router received the oldest published message among the events taken since the last call (`None`
    /// if they all came from the replay log): the stream measures its relay latency from it.
    pub fn take_oldest_message_received_at(&mut self) -> Option<std::time::Instant> {
        self.oldest_message_received_at.take()
    }

    /// The next event already received, without waiting: lets a format write a burst of events at once.
    pub fn next_ready_event(&mut self) -> Option<RelayedEvent> {
        let event = self.ready.pop_front()?;
        if event.is_terminal() {
            self.finished = true;
            self.ready.clear();
        }
        Some(event)
    }

    /// The next event, or `None` after a terminal event or when the gateway shuts down (the client may then
    /// resume elsewhere from `last_seq`). Cancel-safe: dropping the future loses no event.
    pub async fn next_event(&mut self) -> Option<RelayedEvent> {
        loop {
            if let Some(event) = self.next_ready_event() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            let reading_log = self.log_read.is_some();
            let retry_pending = self.log_read_retry.is_some();
            let waiting = self.waiting.is_some();
            // Each branch either leaves events in `ready` for the next turn, or returns the event that ends the
            // stream (or `None` when it ends silently).
            let ending_event = tokio::select! {
                biased;
                ending = self.ending.as_mut() => return self.end_by(ending),
                entries = poll_log_read(&mut self.log_read), if reading_log => self.finish_log_read(entries),
                _ = poll_retry_pause(&mut self.log_read_retry), if retry_pending => {
                    self.retry_log_read();
                    None
                }
                // While the log is read (or a read waits to be tried again), messages wait in the subscription:
                // applied after the log, they are either duplicates or the events that follow it.
                message = self.subscription.next_message(), if !reading_log && !retry_pending => {
                    self.accept_router_message(message)
                }
                changed = self.queue_watch.changed(), if waiting => {
                    if changed.is_ok() {
                        self.report_queue_position();
                    }
                    None
                }
            };
            if ending_event.is_some() {
                return ending_event;
            }
        }
    }

    /// Takes what the stream router delivered; returns the error that ends the stream when the router stopped
    /// relaying it.
    fn accept_router_message(&mut self, message: Option<RouterMessage>) -> Option<RelayedEvent> {
        match message {
            Some(RouterMessage::Published { message, received_at }) => {
                if self.accept_published(&message) {
                    self.oldest_message_received_at.get_or_insert(received_at);
                }
                None
            }
            Some(RouterMessage::Resync) => {
                self.start_log_read();
                None
            }
            // The router stopped, or dropped this stream for falling too far behind its client.
            None => Some(self.end_with_error(
                "stream_interrupted",
                "the gateway stopped relaying this stream; reconnect to resume",
            )),
        }
    }

    /// Takes one published message: the events of one batch, in seq order (one event is a batch of one). Returns
    /// whether any of them is relayed.
    fn accept_published(&mut self, message: &Arc<str>) -> bool {
        let mut relayed = false;
        for range in published_event_ranges(message) {
            let event = match StoredEvent::read(message, range.start, range.end) {
                Ok(event) => event,
                Err(StoredEventError::UnknownKind { seq, kind }) if seq == self.last_seq + 1 => {
                    tracing::warn!(seq, kind, "stream event of an unknown type skipped");
                    self.last_seq = seq;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "published stream event ignored");
                    continue;
                }
            };
            if event.seq <= self.last_seq {
                self.state.counters.duplicate_events_dropped.increment(1);
            } else if event.seq == self.last_seq + 1 {
                self.push_log_event(event);
                relayed = true;
            } else {
                // A gap: something was published before this relay subscribed, or was lost. The batch was appended
                // to the log before it was published, so the log holds this event and the rest of its batch too.
                self.state.counters.stream_gaps_filled.increment(1);
                self.start_log_read();
                return relayed;
            }
        }
        relayed
    }

    fn push_log_event(&mut self, event: StoredEvent) {
        self.last_seq = event.seq;
        self.waiting = None;
        self.ready.push_back(RelayedEvent::Stored(event));
    }

    fn report_queue_position(&mut self) {
        let Some(mut queued) = self.waiting else { return };
        let snapshot = self.queue_watch.borrow_and_update().clone();
        match snapshot.position_of(queued.lane, queued.ticket) {
            // Taken by a worker: the next thing the client hears is the answer.
            None => self.waiting = None,
            Some(position) => {
                // Positions never go up, even when a reading is older than the one the job started from.
                queued.position = queued.position.min(position);
                self.waiting = Some(queued);
                self.ready.push_back(RelayedEvent::Made(queued_event(
                    &snapshot,
                    queued.lane,
                    queued.position,
                )));
            }
        }
    }

    fn end_with_error(&mut self, code: &str, message: &str) -> RelayedEvent {
        self.finished = true;
        self.ready.clear();
        RelayedEvent::Made(StreamEvent::Error {
            seq: self.last_seq,
            code: code.to_owned(),
            message: message.to_owned(),
        })
    }
}

fn queued_event(snapshot: &QueueSnapshot, lane: Lane, position: u64) -> StreamEvent {
    StreamEvent::Queued {
        position,
        ahead: position.saturating_sub(1),
        eta_ms: snapshot.eta_ms(lane, position),
    }
}
