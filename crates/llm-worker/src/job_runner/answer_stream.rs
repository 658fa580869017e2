//! One upstream answer relayed as it streams: each piece of text is written as soon as no write of the job is in
//! flight, pieces arriving meanwhile join the next write (`group_commit`), and a silent upstream (no first token,
//! or too long a gap) is cut. The writes themselves are `stream_writer`'s.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use protocol::{StreamEvent, Usage};
use tokio::time::{Instant, Sleep};

use super::running_job::RunningJob;
use crate::error::WorkerError;
use crate::group_commit::GroupCommit;
use crate::provider::openai::ProviderStream;
use crate::provider::{ProviderError, ProviderEvent};

/// How one upstream answer ended.
pub(super) enum AnswerOutcome {
    Completed { usage: Usage, finish_reason: String },
    Failed { error: ProviderError, text_started: bool, pieces: u64 },
    Cancelled { reason: &'static str, pieces: u64 },
}

/// A stream write under way while the job goes on reading its upstream. Not `Sync`: the job's async methods
/// take `&mut self`, so the job stays `Send` while one is pending.
pub(super) type WriteInFlight<'a> = Pin<Box<dyn Future<Output = Result<(), WorkerError>> + Send + 'a>>;

/// What an answer has told so far.
struct AnswerSoFar {
    call_started: Instant,
    last_event_at: Instant,
    text_started: bool,
    pieces: u64,
    finish_reason: Option<String>,
    reported_usage: Option<Usage>,
}

/// The silence an answer is allowed: until its first token, then between two tokens.
#[derive(Clone, Copy)]
struct SilenceLimits {
    first_token: Duration,
    gap: Duration,
}

impl AnswerSoFar {
    /// When the silence since the last event becomes too long.
    fn silence_limit(&self, limits: SilenceLimits) -> Instant {
        if self.text_started {
            self.last_event_at + limits.gap
        } else {
            self.call_started + limits.first_token
        }
    }
}

impl RunningJob<'_> {
    /// Calls upstream once and relays the answer. The text no write took yet goes out before this returns, unless
    /// the answer was cancelled.
    pub(super) async fn stream_one_answer(&mut self) -> Result<AnswerOutcome, WorkerError> {
        let llm = &self.context.settings.llm;
        let limits = SilenceLimits {
            first_token: Duration::from_millis(llm.first_token_timeout_ms),
            gap: Duration::from_millis(llm.token_gap_timeout_ms),
        };
        if !self.start_recorded {
            self.start_recorded = true;
            let own_time = self.claimed_at.elapsed().saturating_sub(self.waited_not_overhead);
            self.context.metrics.record_start_latency(own_time);
        }
        let call_started = Instant::now();
        let opened = tokio::select! {
            _ = self.stop.cancelled() => return Err(WorkerError::Stopped),
            _ = self.cancel.cancelled() => {
                return Ok(AnswerOutcome::Cancelled { reason: self.registration.reason(), pieces: 0 });
            }
            opened = tokio::time::timeout(limits.first_token, self.context.provider.stream_completion(self.envelope)) => opened,
        };
        let upstream = match opened {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(error)) => return Ok(AnswerOutcome::Failed { error, text_started: false, pieces: 0 }),
            Err(_) => {
                let error = ProviderError::Timeout("no first token in time");
                return Ok(AnswerOutcome::Failed { error, text_started: false, pieces: 0 });
            }
        };
        let mut commit = GroupCommit::new(self.context.settings.worker.batch_max_tokens);
        // The upstream stream is dropped when the relay returns, which closes the connection and so stops
        // generation (and its cost) at once.
        let answer = self.relay_answer(upstream, &mut commit, call_started, limits).await?;
        self.wait_for_write_in_flight().await?;
        // Text the last write did not take goes out with the ending; a cancelled answer's rest is not needed.
        if let Some(rest) = commit.take_rest().filter(|_| !matches!(answer, AnswerOutcome::Cancelled { .. }))
        {
            let token = self.writer.token(rest);
            self.start_write_of(vec![token]);
            self.wait_for_write_in_flight().await?;
        }
        Ok(answer)
    }

    /// Reads `upstream` to its end (or until it stalls, fails or is cancelled), writing its text through `commit`.
    async fn relay_answer(
        &mut self,
        mut upstream: ProviderStream,
        commit: &mut GroupCommit,
        call_started: Instant,
        limits: SilenceLimits,
    ) -> Result<AnswerOutcome, WorkerError> {
        let mut so_far = AnswerSoFar {
            call_started,
            last_event_at: call_started,
            text_started: false,
            pieces: 0,
            finish_reason: None,
            reported_usage: None,
        };
        // Made once per answer, not once per token: each `cancelled()` future registers a waiter, and each new
        // timer is an insertion into the timer wheel.
        let (stop, cancel) = (self.stop, self.cancel.clone());
        let stopped = stop.cancelled();
        let cancelled = cancel.cancelled();
        // The silence timer is armed for the deadline of the last event seen when it was set, and re-armed
        // only when it fires early (events came meanwhile): once per silence period rather than once per token.
        let silence = tokio::time::sleep_until(call_started + limits.first_token);
        tokio::pin!(stopped, cancelled, silence);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => return Err(WorkerError::Stopped),
                _ = &mut cancelled => {
                    return Ok(AnswerOutcome::Cancelled { reason: self.registration.reason(), pieces: so_far.pieces });
                }
                written = async { self.write_in_flight.as_mut().expect("polled only while a write is in flight").await },
                    if self.write_in_flight.is_some() =>
                {
                    self.write_in_flight = None;
                    written?;
                    if let Some(batch) = commit.write_returned() {
                        self.start_write(batch);
                    }
                }
                _ = &mut silence => {
                    let silence_limit = so_far.silence_limit(limits);
                    if Instant::now() < silence_limit {
                        silence.as_mut().reset(silence_limit);
                        continue;
                    }
                    let error = ProviderError::Timeout(if so_far.text_started { "the answer stalled" } else { "no first token in time" });
                    return Ok(AnswerOutcome::Failed { error, text_started: so_far.text_started, pieces: so_far.pieces });
                }
                next = upstream.next(), if commit.accepts_more() => {
                    if let Some(ended) = self.take_upstream_event(next, &mut so_far, commit, silence.as_mut(), limits) {
                        return Ok(ended);
                    }
                }
            }
        }
    }

    /// Takes one event of the upstream stream (`None`: the stream ended); returns how the answer ended, if it did.
    fn take_upstream_event(
        &mut self,
        next: Option<Result<ProviderEvent, ProviderError>>,
        so_far: &mut AnswerSoFar,
        commit: &mut GroupCommit,
        silence: Pin<&mut Sleep>,
        limits: SilenceLimits,
    ) -> Option<AnswerOutcome> {
        so_far.last_event_at = Instant::now();
        match next {
            Some(Ok(ProviderEvent::Text(text))) => {
                if !so_far.text_started {
                    so_far.text_started = true;
                    // From the first token on, the limit is the gap between tokens.
                    silence.reset(so_far.last_event_at + limits.gap);
                }
                so_far.pieces += 1;
                if let Some(batch) = commit.push(&text) {
                    self.start_write(batch);
                }
                None
            }
            Some(Ok(ProviderEvent::Finished { finish_reason })) => {
                so_far.finish_reason = Some(finish_reason);
                None
            }
            Some(Ok(ProviderEvent::Usage(usage))) => {
                so_far.reported_usage = Some(usage);
                None
            }
            Some(Err(error)) => Some(AnswerOutcome::Failed {
                error,
                text_started: so_far.text_started,
                pieces: so_far.pieces,
            }),
            None => {
                let usage = so_far.reported_usage.unwrap_or_else(|| self.estimated_usage(so_far.pieces));
                let finish_reason = so_far.finish_reason.take().unwrap_or_else(|| "stop".to_owned());
                Some(AnswerOutcome::Completed { usage, finish_reason })
            }
        }
    }

    /// Numbers `batch` as the next token event and starts writing it.
    fn start_write(&mut self, batch: String) {
        let token = self.writer.token(batch);
        self.start_write_of(vec![token]);
    }

    fn start_write_of(&mut self, events: Vec<StreamEvent>) {
        self.write_in_flight = Some(Box::pin(self.writer.append(events)));
    }

    pub(super) async fn wait_for_write_in_flight(&mut self) -> Result<(), WorkerError> {
        match self.write_in_flight.take() {
            Some(write) => write.await,
            None => Ok(()),
        }
    }
}
