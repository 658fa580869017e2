//! `ChatRelay`: one chat's events in order, for one client. It subscribes to the job's channel first, then reads
//! the replay log, then relays live events; it drops duplicates by `seq`, fills gaps from the log, and while the
//! job waits it interleaves `queued` updates computed from the process-wide queue snapshot. Both the browser
//! flow and the OpenAI flow format what it yields.

use std::collections::VecDeque;
use std::time::Duration;

use protocol::{JobId, Lane, StreamEvent};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app_state::AppState;
use crate::error::GatewayError;
use crate::queue_watch::QueueSnapshot;
use crate::stream_router::{RouterMessage, StreamSubscription};

/// Where a relay starts.
#[derive(Debug, Clone, Copy)]
pub struct RelayStart {
    pub job_id: JobId,
    /// Relay only events after this `seq` (0 for all; a reconnecting client's `Last-Event-ID`).
    pub resume_after_seq: u64,
    /// Set while the job waits: its lane, ticket and exact current position.
    pub queued: Option<QueuedJob>,
}

#[derive(Debug, Clone, Copy)]
pub struct QueuedJob {
    pub lane: Lane,
    pub ticket: u64,
    pub position: u64,
}

/// One client's ordered view of one chat.
#[derive(Debug)]
pub struct ChatRelay {
    replay_log_key: String,
    redis: protocol::RedisConnections,
    subscription: StreamSubscription,
    last_seq: u64,
    ready: VecDeque<StreamEvent>,
    finished: bool,
    waiting: Option<QueuedJob>,
    queue_watch: watch::Receiver<QueueSnapshot>,
    deadline: Instant,
    shutdown: CancellationToken,
}

impl ChatRelay {
    /// Subscribes and catches up with the replay log. The first event is a `queued` one if the job waits.
    pub async fn open(state: &AppState, start: RelayStart) -> Result<Self, GatewayError> {
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
        let mut relay = Self {
            replay_log_key: state.keys.job_replay_log(&start.job_id),
            redis: state.redis.clone(),
            subscription,
            last_seq: start.resume_after_seq,
            ready: VecDeque::new(),
            finished: false,
            waiting: start.queued,
            queue_watch: state.queue_watch.clone(),
            deadline: Instant::now() + longest_life,
            shutdown: state.stream_shutdown.clone(),
        };
        relay.queue_watch.mark_unchanged();
        relay.catch_up_from_log().await?;
        if let Some(queued) = relay.waiting.filter(|_| relay.ready.is_empty()) {
            let snapshot = relay.queue_watch.borrow().clone();
            relay.ready.push_back(queued_event(&snapshot, queued.lane, queued.position));
        }
        Ok(relay)
    }

    /// The `seq` of the last log event relayed (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The next event, or `None` after a terminal event or when the gateway shuts down (the client may then
    /// resume elsewhere from `last_seq`).
    pub async fn next_event(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                if event.is_terminal() {
                    self.finished = true;
                    self.ready.clear();
                }
                return Some(event);
            }
            if self.finished {
                return None;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.finished = true;
                    return None;
                }
                message = self.subscription.next_message() => match message {
                    Some(RouterMessage::Published(payload)) => self.accept_published(&payload).await,
                    Some(RouterMessage::Resync) => {
                        let _ = self.catch_up_from_log().await;
                    }
                    None => return Some(self.end_with_error("stream_interrupted", "the gateway stopped relaying")),
                },
                changed = self.queue_watch.changed(), if self.waiting.is_some() => {
                    if changed.is_ok() {
                        self.report_queue_position();
                    }
                }
                _ = tokio::time::sleep_until(self.deadline) => {
                    return Some(self.end_with_error("stream_timeout", "the chat took longer than its deadline"));
                }
            }
        }
    }

    async fn accept_published(&mut self, payload: &str) {
        let event = match StreamEvent::decode(payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "undecodable stream event ignored");
                return;
            }
        };
        let Some(seq) = event.seq() else { return };
        if seq <= self.last_seq {
            metrics::counter!("dam_gateway_duplicate_events_dropped_total").increment(1);
        } else if seq == self.last_seq + 1 {
            self.push_log_event(event);
        } else {
            // A gap: something was published before this relay subscribed, or was lost; the log has it all.
            metrics::counter!("dam_gateway_stream_gaps_filled_total").increment(1);
            let _ = self.catch_up_from_log().await;
        }
    }

    async fn catch_up_from_log(&mut self) -> Result<(), GatewayError> {
        let key = self.replay_log_key.clone();
        let start = self.last_seq as isize;
        let entries: Vec<String> = self
            .redis
            .run(|mut connection| async move {
                redis::cmd("LRANGE").arg(&key).arg(start).arg(-1).query_async(&mut connection).await
            })
            .await?;
        for entry in entries {
            match StreamEvent::decode(&entry) {
                Ok(event) if event.seq().is_some_and(|seq| seq > self.last_seq) => self.push_log_event(event),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "undecodable replay log entry ignored"),
            }
        }
        Ok(())
    }

    fn push_log_event(&mut self, event: StreamEvent) {
        self.last_seq = event.seq().unwrap_or(self.last_seq);
        self.waiting = None;
        self.ready.push_back(event);
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
                self.ready.push_back(queued_event(&snapshot, queued.lane, queued.position));
            }
        }
    }

    fn end_with_error(&mut self, code: &str, message: &str) -> StreamEvent {
        self.finished = true;
        self.ready.clear();
        StreamEvent::Error { seq: self.last_seq, code: code.to_owned(), message: message.to_owned() }
    }
}

fn queued_event(snapshot: &QueueSnapshot, lane: Lane, position: u64) -> StreamEvent {
    StreamEvent::Queued {
        position,
        ahead: position.saturating_sub(1),
        eta_ms: snapshot.eta_ms(lane, position),
    }
}

/// Finds a chat by id for a client that (re)connects to its events: 404 when unknown, and its exact queue
/// position when it still waits. One round trip.
pub async fn locate_chat(
    state: &AppState,
    job_id: JobId,
    resume_after_seq: u64,
) -> Result<RelayStart, GatewayError> {
    use protocol::keys::job_state_field;

    let mut pipeline = redis::pipe();
    pipeline.cmd("HMGET").arg(state.keys.job_state(&job_id)).arg(&[
        job_state_field::STATUS,
        job_state_field::LANE,
        job_state_field::TICKET,
    ]);
    for lane in Lane::ALL {
        pipeline.cmd("GET").arg(state.keys.lane_served_tickets(lane));
    }
    type Found = (Vec<Option<String>>, Option<u64>, Option<u64>);
    let (fields, served_premium, served_standard): Found =
        state.redis.run(|mut connection| async move { pipeline.query_async(&mut connection).await }).await?;
    let [status, lane, ticket] = <[Option<String>; 3]>::try_from(fields).unwrap_or_default();
    let Some(status) = status else {
        return Err(GatewayError::ChatNotFound(job_id.to_string()));
    };
    let lane = lane.and_then(|lane| lane.parse::<Lane>().ok());
    let ticket = ticket.and_then(|ticket| ticket.parse::<u64>().ok());
    let queued = match (status.as_str(), lane, ticket) {
        ("queued", Some(lane), Some(ticket)) => {
            let served = match lane {
                Lane::Premium => served_premium,
                Lane::Standard => served_standard,
            }
            .unwrap_or(0);
            (ticket > served).then(|| QueuedJob { lane, ticket, position: ticket - served })
        }
        _ => None,
    };
    Ok(RelayStart { job_id, resume_after_seq, queued })
}
