//! The relay's reads of a chat's replay log: the catch-up when it opens, and the reads that fill a gap or follow
//! a lost pub/sub connection, retried with a jittered back-off a bounded number of times. Live events are taken
//! in `chat_relay.rs`.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};
use redis::RedisResult;
use tokio::time::Sleep;

use super::ChatRelay;
use super::relayed_event::{RelayedEvent, StoredEvent, StoredEventError};
use crate::app_state::AppState;
use crate::error::GatewayError;

/// Reads of the replay log tried in a row (after a lost pub/sub connection or a gap) before the stream gives up
/// on this gateway: with the pauses below and the command timeout, about 6 s, which rides out a Redis stall of a
/// couple of seconds. Past it the client is told `stream_interrupted` and resumes with `Last-Event-ID`.
const LOG_READ_ATTEMPTS: u32 = 6;
/// The pause after the first failed read is at most 100 ms; it doubles with each failure up to 2 s, and each pause
/// is jittered (between half and all of it) so streams that failed together do not retry together.
const LOG_READ_RETRY_POLICY: RetryPolicy =
    RetryPolicy::doubling(Duration::from_millis(100), Duration::from_secs(2), Jitter::Equal);

/// A read of the replay log under way.
pub(super) type LogRead = Pin<Box<dyn Future<Output = RedisResult<Vec<String>>> + Send>>;

impl ChatRelay {
    /// Reads the log once the subscription is confirmed: whatever was published before it is in the log by
    /// now, so reading the log after subscribing leaves no gap, and anything read twice is dropped by seq.
    pub(super) async fn catch_up_with_replay_log(&mut self) -> Result<(), GatewayError> {
        let entries = read_replay_log(self.state.clone(), self.replay_log_key.clone(), self.last_seq).await?;
        self.accept_log_entries(entries);
        Ok(())
    }

    /// Starts a read of the events after the last one relayed, unless one is already under way.
    pub(super) fn start_log_read(&mut self) {
        if self.log_read.is_none() {
            let read = read_replay_log(self.state.clone(), self.replay_log_key.clone(), self.last_seq);
            self.log_read = Some(Box::pin(read));
        }
    }

    /// Takes the outcome of a read: its events, or a failure that schedules the next try. Returns the error
    /// that ends the stream once the reads have failed too many times in a row.
    pub(super) fn finish_log_read(&mut self, entries: RedisResult<Vec<String>>) -> Option<RelayedEvent> {
        self.log_read = None;
        match entries {
            Ok(entries) => {
                self.log_read_backoff = None;
                self.accept_log_entries(entries);
                None
            }
            // The events the read was for may never be published again (they were missed while the pub/sub
            // connection was down): the read itself is tried again, a bounded number of times.
            Err(error) => {
                let backoff =
                    self.log_read_backoff.get_or_insert_with(|| RetryBackoff::new(LOG_READ_RETRY_POLICY));
                let pause = backoff.next_delay();
                let failures = backoff.failures();
                tracing::warn!(%error, failures, "reading a replay log failed");
                if failures >= LOG_READ_ATTEMPTS {
                    return Some(self.end_with_error(
                        "stream_interrupted",
                        "the chat's events could not be read; reconnect to resume",
                    ));
                }
                self.log_read_retry = Some(Box::pin(tokio::time::sleep(pause)));
                None
            }
        }
    }

    /// The pause before the next read is over: tries the read again.
    pub(super) fn retry_log_read(&mut self) {
        self.log_read_retry = None;
        self.start_log_read();
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

/// The read under way, as a future a `select!` can wait on; never ready when there is none.
pub(super) fn poll_log_read(
    log_read: &mut Option<LogRead>,
) -> impl Future<Output = RedisResult<Vec<String>>> + '_ {
    poll_fn(move |context| match log_read {
        Some(read) => read.as_mut().poll(context),
        None => Poll::Pending,
    })
}

/// The pause before the next read, as a future a `select!` can wait on; never ready when there is none.
pub(super) fn poll_retry_pause(pause: &mut Option<Pin<Box<Sleep>>>) -> impl Future<Output = ()> + '_ {
    poll_fn(move |context| match pause {
        Some(sleep) => sleep.as_mut().poll(context),
        None => Poll::Pending,
    })
}
