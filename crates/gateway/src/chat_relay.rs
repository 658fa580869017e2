//! `ChatRelay`: one chat's events in order, for one client. It subscribes to the job's channel first, then reads
//! the replay log, then relays live events; it drops duplicates by `seq`, fills gaps from the log, and while the
//! job waits it interleaves `queued` updates computed from the process-wide queue snapshot. Stored events keep
//! the JSON the worker wrote, so a format can send it on as is. Both the browser flow and the OpenAI flow format
//! what it yields.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use protocol::stream_event::published_event_ranges;
use protocol::telemetry::trace_context::{continue_trace, trace_context_from_headers};
use protocol::{JobId, Lane, StreamEvent};
use redis::RedisResult;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::app_state::AppState;
use crate::error::GatewayError;
use crate::queue_watch::QueueSnapshot;
use crate::stream_router::{RouterMessage, StreamSubscription};

/// Reads of the replay log tried in a row (after a lost pub/sub connection or a gap) before the stream gives up
/// on this gateway: with the pauses below and the command timeout, about 6 s, which rides out a Redis stall of a
/// couple of seconds. Past it the client is told `stream_interrupted` and resumes with `Last-Event-ID`.
const LOG_READ_ATTEMPTS: u32 = 6;
/// The pause after the first failed read; it doubles with each failure up to [`LOG_READ_RETRY_MAX_DELAY`], and
/// each pause is jittered (between half and all of it) so streams that failed together do not retry together.
const LOG_READ_RETRY_FIRST_DELAY: Duration = Duration::from_millis(100);
const LOG_READ_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Where a relay starts.
#[derive(Debug, Clone)]
pub struct RelayStart {
    pub job_id: JobId,
    /// Relay only events after this `seq` (0 for all; a reconnecting client's `Last-Event-ID`).
    pub resume_after_seq: u64,
    /// Set while the job waits: its lane, ticket and current position.
    pub queued: Option<QueuedJob>,
    /// The chat's admission `traceparent` when the relay starts in a request of its own (a browser's event
    /// stream), so the relay's span joins the chat's trace; `None` inside the admitting request.
    pub traceparent: Option<String>,
    /// When the chat was created (ms since the epoch), where its time to first token starts; `None` if unknown.
    pub created_at_ms: Option<u64>,
    /// When a worker last started the chat (ms since the epoch); `None` while it waits.
    pub started_at_ms: Option<u64>,
}

impl RelayStart {
    /// How long the chat waited in its queue, once a worker has started it.
    pub fn queue_wait(&self) -> Option<Duration> {
        queue_wait(self.created_at_ms, self.started_at_ms)
    }
}

/// A start after a creation: the queue wait (0 when the two hosts' clocks disagree that far).
fn queue_wait(created_at_ms: Option<u64>, started_at_ms: Option<u64>) -> Option<Duration> {
    Some(Duration::from_millis(started_at_ms?.saturating_sub(created_at_ms?)))
}

#[derive(Debug, Clone, Copy)]
pub struct QueuedJob {
    pub lane: Lane,
    pub ticket: u64,
    pub position: u64,
}

/// One event as the relay hands it to a format.
#[derive(Debug, Clone)]
pub enum RelayedEvent {
    /// An event of the chat's stream, exactly as the worker stored and published it.
    Stored(StoredEvent),
    /// An event this gateway made: a `queued` update, or the error that ends a stream it can no longer relay.
    Made(StreamEvent),
}

impl RelayedEvent {
    pub fn is_terminal(&self) -> bool {
        match self {
            RelayedEvent::Stored(stored) => {
                matches!(stored.kind, StoredEventKind::Done | StoredEventKind::Error)
            }
            RelayedEvent::Made(made) => made.is_terminal(),
        }
    }

    /// The whole event; a stored one is decoded from its JSON (`None`, with a warning, if it does not decode).
    pub fn to_stream_event(&self) -> Option<StreamEvent> {
        match self {
            RelayedEvent::Stored(stored) => stored
                .decode()
                .inspect_err(
                    |error| tracing::warn!(%error, seq = stored.seq, "undecodable stream event skipped"),
                )
                .ok(),
            RelayedEvent::Made(made) => Some(made.clone()),
        }
    }
}

/// A stored event: its `seq` and type, read from its JSON, and the JSON itself, shared with every other client of
/// the same chat on this gateway (a slice of the published message, not a copy).
#[derive(Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub kind: StoredEventKind,
    message: Arc<str>,
    start: usize,
    end: usize,
}

impl fmt::Debug for StoredEvent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("StoredEvent").field("json", &self.json()).finish()
    }
}

/// The types of stored events (`queued` is never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredEventKind {
    Token,
    Done,
    Error,
    Reset,
}

impl StoredEventKind {
    /// The SSE `event:` name, which is also the JSON `type`.
    pub fn name(self) -> &'static str {
        match self {
            StoredEventKind::Token => "token",
            StoredEventKind::Done => "done",
            StoredEventKind::Error => "error",
            StoredEventKind::Reset => "reset",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "token" => Some(StoredEventKind::Token),
            "done" => Some(StoredEventKind::Done),
            "error" => Some(StoredEventKind::Error),
            "reset" => Some(StoredEventKind::Reset),
            _ => None,
        }
    }
}

/// What a relay needs to read from each event: its type and place, not its text.
#[derive(Deserialize)]
struct StoredEventHeader<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    seq: u64,
}

/// Why a stored event cannot be relayed.
#[derive(Debug, thiserror::Error)]
enum StoredEventError {
    #[error("undecodable stream event: {0}")]
    Undecodable(#[from] serde_json::Error),
    #[error("stream event {seq} has an unknown type {kind:?}")]
    UnknownKind { seq: u64, kind: String },
}

impl StoredEvent {
    /// Reads the event at `start..end` of `message`.
    fn read(message: &Arc<str>, start: usize, end: usize) -> Result<Self, StoredEventError> {
        let header: StoredEventHeader<'_> = serde_json::from_str(&message[start..end])?;
        let kind = StoredEventKind::from_name(header.kind)
            .ok_or_else(|| StoredEventError::UnknownKind { seq: header.seq, kind: header.kind.to_owned() })?;
        Ok(Self { seq: header.seq, kind, message: message.clone(), start, end })
    }

    /// The event's JSON, as the worker wrote it (one line: JSON text holds no raw newline).
    pub fn json(&self) -> &str {
        &self.message[self.start..self.end]
    }

    pub fn decode(&self) -> Result<StreamEvent, serde_json::Error> {
        StreamEvent::decode(self.json())
    }
}

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
enum RelayEnding {
    /// The gateway's shutdown drain is over: the client may resume elsewhere.
    Shutdown,
    /// The chat outlived anything it could legitimately take.
    Deadline,
}

type LogRead = Pin<Box<dyn Future<Output = RedisResult<Vec<String>>> + Send>>;

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
    ending: Pin<Box<dyn Future<Output = RelayEnding> + Send>>,
    ended_by_gateway_stop: bool,
    /// A read of the replay log under way, after a gap or a lost pub/sub connection. It lives here rather than in
    /// `next_event`'s future, so that dropping that future (a keep-alive tick won the race) loses nothing.
    log_read: Option<LogRead>,
    /// Failed reads of the replay log in a row, and the pause before the next try (set only after a failure).
    log_read_failures: u32,
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
        let chat = &state.settings.chat;
        let longest_life =
            Duration::from_secs(chat.queue_deadline_s + state.settings.llm.request_timeout_s + 30);
        let stop_token = match on_gateway_stop {
            OnGatewayStop::ResumeElsewhere => &state.resumable_stream_shutdown,
            OnGatewayStop::FinishWithinDrain => &state.stream_shutdown,
        };
        let mut relay = Self {
            state: state.clone(),
            replay_log_key: state.keys.job_replay_log(&start.job_id),
            subscription,
            last_seq: start.resume_after_seq,
            ready: VecDeque::new(),
            finished: false,
            waiting: start.queued,
            queue_watch: state.queue_watch.clone(),
            ending: Box::pin(relay_ending(Instant::now() + longest_life, stop_token.clone())),
            ended_by_gateway_stop: false,
            log_read: None,
            log_read_failures: 0,
            log_read_retry: None,
            _relay_span: relay_span,
            oldest_message_received_at: None,
        };
        relay.queue_watch.mark_unchanged();
        // The subscription is confirmed, so whatever was published before it is in the log by now: reading the
        // log after subscribing leaves no gap, and anything read twice is dropped by seq.
        let entries =
            read_replay_log(relay.state.clone(), relay.replay_log_key.clone(), relay.last_seq).await?;
        relay.accept_log_entries(entries);
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
            tokio::select! {
                biased;
                ending = self.ending.as_mut() => {
                    self.finished = true;
                    return match ending {
                        RelayEnding::Shutdown => {
                            self.ended_by_gateway_stop = true;
                            None
                        }
                        RelayEnding::Deadline => {
                            Some(self.end_with_error("stream_timeout", "the chat took longer than its deadline"))
                        }
                    };
                }
                entries = poll_log_read(&mut self.log_read), if reading_log => {
                    self.log_read = None;
                    match entries {
                        Ok(entries) => {
                            self.log_read_failures = 0;
                            self.accept_log_entries(entries);
                        }
                        // The events the read was for may never be published again (they were missed while the
                        // pub/sub connection was down): the read itself is tried again, a bounded number of times.
                        Err(error) => {
                            self.log_read_failures += 1;
                            tracing::warn!(%error, failures = self.log_read_failures, "reading a replay log failed");
                            if self.log_read_failures >= LOG_READ_ATTEMPTS {
                                return Some(self.end_with_error(
                                    "stream_interrupted",
                                    "the chat's events could not be read; reconnect to resume",
                                ));
                            }
                            let pause = log_read_retry_delay(self.log_read_failures);
                            self.log_read_retry = Some(Box::pin(tokio::time::sleep(pause)));
                        }
                    }
                }
                _ = poll_retry_pause(&mut self.log_read_retry), if retry_pending => {
                    self.log_read_retry = None;
                    self.start_log_read();
                }
                // While the log is read (or a read waits to be tried again), messages wait in the subscription:
                // applied after the log, they are either duplicates or the events that follow it.
                message = self.subscription.next_message(), if !reading_log && !retry_pending => match message {
                    Some(RouterMessage::Published { message, received_at }) => {
                        if self.accept_published(&message) {
                            self.oldest_message_received_at.get_or_insert(received_at);
                        }
                    }
                    Some(RouterMessage::Resync) => self.start_log_read(),
                    // The router stopped, or dropped this stream for falling too far behind its client.
                    None => {
                        return Some(self.end_with_error(
                            "stream_interrupted",
                            "the gateway stopped relaying this stream; reconnect to resume",
                        ));
                    }
                },
                changed = self.queue_watch.changed(), if waiting => {
                    if changed.is_ok() {
                        self.report_queue_position();
                    }
                }
            }
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

    fn start_log_read(&mut self) {
        if self.log_read.is_none() {
            let read = read_replay_log(self.state.clone(), self.replay_log_key.clone(), self.last_seq);
            self.log_read = Some(Box::pin(read));
        }
    }

    fn accept_log_entries(&mut self, entries: Vec<String>) {
        for entry in entries {
            let message: Arc<str> = entry.into();
            match StoredEvent::read(&message, 0, message.len()) {
                Ok(event) if event.seq > self.last_seq => self.push_log_event(event),
                Ok(_) => {}
                Err(StoredEventError::UnknownKind { seq, kind }) => {
                    tracing::warn!(seq, kind, "stream event of an unknown type skipped");
                    self.last_seq = self.last_seq.max(seq);
                }
                Err(error) => tracing::warn!(%error, "replay log entry ignored"),
            }
        }
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

async fn relay_ending(deadline: Instant, shutdown: CancellationToken) -> RelayEnding {
    tokio::select! {
        _ = shutdown.cancelled() => RelayEnding::Shutdown,
        _ = tokio::time::sleep_until(deadline) => RelayEnding::Deadline,
    }
}

/// The replay log's events after `after_seq` (the log's index is seq - 1).
async fn read_replay_log(state: AppState, key: String, after_seq: u64) -> RedisResult<Vec<String>> {
    let start = after_seq as isize;
    state
        .redis
        .run(|mut connection| async move {
            redis::cmd("LRANGE").arg(&key).arg(start).arg(-1).query_async(&mut connection).await
        })
        .await
}

fn poll_retry_pause(pause: &mut Option<Pin<Box<Sleep>>>) -> impl Future<Output = ()> + '_ {
    poll_fn(move |context| match pause {
        Some(sleep) => sleep.as_mut().poll(context),
        None => Poll::Pending,
    })
}

/// The pause before retry `failures` of a log read: doubling from the first delay, capped, and jittered.
fn log_read_retry_delay(failures: u32) -> Duration {
    let full = LOG_READ_RETRY_FIRST_DELAY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(LOG_READ_RETRY_MAX_DELAY);
    // A random fraction from a fresh v4 UUID: no random-number crate for one number per failure.
    let fraction = (uuid::Uuid::new_v4().as_u128() % 1024) as f64 / 1024.0;
    full.mul_f64(0.5 + fraction / 2.0)
}

fn poll_log_read(log_read: &mut Option<LogRead>) -> impl Future<Output = RedisResult<Vec<String>>> + '_ {
    poll_fn(move |context| match log_read {
        Some(read) => read.as_mut().poll(context),
        None => Poll::Pending,
    })
}

fn queued_event(snapshot: &QueueSnapshot, lane: Lane, position: u64) -> StreamEvent {
    StreamEvent::Queued {
        position,
        ahead: position.saturating_sub(1),
        eta_ms: snapshot.eta_ms(lane, position),
    }
}

/// Finds a chat by id for a client that (re)connects to its events: 404 when unknown, its queue position when
/// it still waits, its creation and start times. One command (HMGET); the position comes from this process's queue snapshot, which is at
/// most one update interval old, so it may start a little high and is corrected by the next update. Only before
/// the first snapshot does it read the lane's served counter too.
pub async fn locate_chat(
    state: &AppState,
    job_id: JobId,
    resume_after_seq: u64,
) -> Result<RelayStart, GatewayError> {
    use protocol::keys::job_state_field;

    let state_key = state.keys.job_state(&job_id);
    let fields: Vec<Option<String>> = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("HMGET")
                .arg(&state_key)
                .arg(&[
                    job_state_field::STATUS,
                    job_state_field::LANE,
                    job_state_field::TICKET,
                    job_state_field::TRACEPARENT,
                    job_state_field::CREATED_AT_MS,
                    job_state_field::STARTED_AT_MS,
                ])
                .query_async(&mut connection)
                .await
        })
        .await?;
    let [status, lane, ticket, traceparent, created_at_ms, started_at_ms] =
        <[Option<String>; 6]>::try_from(fields).unwrap_or_default();
    let Some(status) = status else {
        return Err(GatewayError::ChatNotFound(job_id.to_string()));
    };
    let lane = lane.and_then(|lane| lane.parse::<Lane>().ok());
    let ticket = ticket.and_then(|ticket| ticket.parse::<u64>().ok());
    let queued = match (status.as_str(), lane, ticket) {
        ("queued", Some(lane), Some(ticket)) => {
            let served = served_tickets(state, lane).await?;
            (ticket > served).then(|| QueuedJob { lane, ticket, position: ticket - served })
        }
        _ => None,
    };
    Ok(RelayStart {
        job_id,
        resume_after_seq,
        queued,
        created_at_ms: created_at_ms.and_then(|ms| ms.parse().ok()),
        started_at_ms: started_at_ms.and_then(|ms| ms.parse().ok()),
        traceparent,
    })
}

/// A chat's queue wait from its state (one HMGET), for an answer whose head waits for the whole answer; `None`
/// when the state cannot be read, which costs the answer nothing but this figure.
pub async fn read_queue_wait(state: &AppState, job_id: JobId) -> Option<Duration> {
    use protocol::keys::job_state_field;

    let state_key = state.keys.job_state(&job_id);
    let times: (Option<u64>, Option<u64>) = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("HMGET")
                .arg(&state_key)
                .arg(&[job_state_field::CREATED_AT_MS, job_state_field::STARTED_AT_MS])
                .query_async(&mut connection)
                .await
        })
        .await
        .inspect_err(|error| tracing::debug!(%error, "the queue wait of a finished chat could not be read"))
        .ok()?;
    queue_wait(times.0, times.1)
}

/// The lane's served-ticket counter: from the queue snapshot once there is one, else from Redis.
async fn served_tickets(state: &AppState, lane: Lane) -> Result<u64, GatewayError> {
    let snapshot_served = {
        let snapshot = state.queue_watch.borrow();
        (snapshot.reading > 0).then(|| snapshot.lane(lane).served_tickets)
    };
    if let Some(served) = snapshot_served {
        return Ok(served);
    }
    let counter_key = state.keys.lane_served_tickets(lane);
    let served: Option<u64> = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("GET").arg(&counter_key).query_async(&mut connection).await
        })
        .await?;
    Ok(served.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_read_retries_back_off_with_jitter_and_stay_bounded() {
        for failures in 1..=LOG_READ_ATTEMPTS {
            let full = (LOG_READ_RETRY_FIRST_DELAY * 2_u32.pow(failures - 1)).min(LOG_READ_RETRY_MAX_DELAY);
            let delay = log_read_retry_delay(failures);
            assert!(
                delay >= full / 2 && delay <= full,
                "retry {failures}: {delay:?} within half of {full:?}"
            );
        }
        assert!(log_read_retry_delay(60) <= LOG_READ_RETRY_MAX_DELAY);
    }

    #[test]
    fn a_stored_event_keeps_its_json_and_reads_only_its_type_and_seq() {
        let message: Arc<str> =
            r#"{"type":"token","seq":3,"text":"a \"quoted\" line"}
{"type":"done","seq":4,"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"finish_reason":"stop"}"#
                .into();
        let newline = message.find('\n').expect("two events");
        let token = StoredEvent::read(&message, 0, newline).expect("token");
        assert_eq!((token.seq, token.kind), (3, StoredEventKind::Token));
        assert_eq!(token.json(), &message[..newline]);
        assert_eq!(
            token.decode().expect("decodes"),
            StreamEvent::Token { seq: 3, text: "a \"quoted\" line".into() }
        );
        let done = StoredEvent::read(&message, newline + 1, message.len()).expect("done");
        assert!(RelayedEvent::Stored(done).is_terminal());
        assert!(matches!(
            StoredEvent::read(&Arc::from(r#"{"type":"later","seq":5}"#), 0, 24),
            Err(StoredEventError::UnknownKind { seq: 5, .. })
        ));
    }
}
