//! A job's leave to call the upstream: it waits for the shared capacity (the global start rate, the token
//! budget, the circuit breaker), reserves its start slot and sleeps until it, and settles the call afterwards
//! with its real token use and outcome. The jobs of one worker ask one at a time, in arrival order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};
use protocol::upstream_capacity::{
    CallOutcome, PermitDecision, PermitRequest, UpstreamPermit, UpstreamPolicy, acquire_upstream_permit,
    settle_upstream_call,
};
use protocol::{JobEnvelope, unix_time_ms};
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::job_runner::JobContext;

/// Longest single pause while waiting for upstream capacity, so shutdown and deadlines are noticed.
const LONGEST_CAPACITY_PAUSE: Duration = Duration::from_millis(1_000);
/// Pauses before asking again when Redis did not answer a permit request: at most half a second, at least half of
/// that, jittered so that the workers which lost Redis together do not ask again together.
const PERMIT_RETRY: RetryPolicy = RetryPolicy::steady(Duration::from_millis(500), Jitter::Equal);
/// What is added to an open circuit's wait, from nothing to 20 ms: the workers it held back do not all ask again
/// at the instant it half-opens.
const CIRCUIT_OPEN_SPREAD: RetryPolicy = RetryPolicy::steady(Duration::from_millis(20), Jitter::Full);

/// This worker's jobs that wait for upstream capacity. They ask Redis one at a time, in arrival order: without
/// the turn every waiting job would ask again each time a place frees, a storm that grows with the backlog. And
/// while any waits, the worker claims no more jobs: they wait in their lane instead, where their clients see
/// their place in line and an ETA, and where any worker with capacity can take them.
#[derive(Debug, Default)]
pub struct PermitLine {
    turn: tokio::sync::Mutex<()>,
    waiting: AtomicUsize,
    emptied: tokio::sync::Notify,
}

impl PermitLine {
    /// Returns once no job of this worker waits for upstream capacity.
    pub async fn wait_until_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.waiting.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
    }

    /// A place in the line, held until dropped. A claimed job holds one from its claim until its first permit
    /// answer, so the worker does not claim more before it knows whether the upstream has room.
    pub fn take_seat(self: &Arc<Self>) -> PermitLineSeat {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        PermitLineSeat { line: self.clone() }
    }
}

/// A job's place in the permit line, left when dropped.
#[derive(Debug)]
pub struct PermitLineSeat {
    line: Arc<PermitLine>,
}

impl Drop for PermitLineSeat {
    fn drop(&mut self) {
        if self.line.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.line.emptied.notify_waiters();
        }
    }
}

/// What a permit wait can be interrupted by.
#[derive(Debug, Clone, Copy)]
pub struct PermitWait<'a> {
    pub stop: &'a CancellationToken,
    pub cancel: &'a CancellationToken,
}

/// The circuit breaker's judgement and the start spacing, from the settings.
pub fn upstream_policy(context: &JobContext) -> UpstreamPolicy {
    let llm = &context.settings.llm;
    UpstreamPolicy {
        window_s: llm.circuit_window_s,
        min_calls: llm.circuit_min_calls,
        failure_ratio: llm.circuit_failure_ratio,
        cool_down_ms: llm.circuit_cool_down_ms,
        probes: llm.circuit_probes,
        probe_timeout_ms: llm.first_token_timeout_ms + 1_000,
        start_jitter_allowance_ms: llm.start_jitter_allowance_ms,
        start_horizon_ms: llm.start_horizon_ms,
    }
}

/// A permit request for `reserve_tokens` under the limits in force now.
pub fn permit_request(context: &JobContext, reserve_tokens: u64) -> PermitRequest {
    PermitRequest { limits: context.limits.borrow().llm, policy: upstream_policy(context), reserve_tokens }
}

/// Waits until the shared upstream capacity lets `envelope`'s job call, reserving up to `reserve_tokens`, and
/// returns once its start slot has come. `first_answer` is an answer already had (asked together with the job's
/// start): a grant is used as it is, anything else means asking again in line. `None` when the job's deadline
/// passed first.
pub async fn wait_for_upstream_permit(
    context: &JobContext,
    envelope: &JobEnvelope,
    reserve_tokens: u64,
    first_answer: Option<PermitDecision>,
    interrupt: PermitWait<'_>,
) -> Result<Option<UpstreamPermit>, WorkerError> {
    if let Some(PermitDecision::Granted(permit)) = first_answer {
        return sleep_until_start_slot(context, permit, interrupt).await.map(Some);
    }
    let deadline_in = Duration::from_millis(envelope.deadline_ms.saturating_sub(unix_time_ms()));
    let _seat = context.permit_line.take_seat();
    // Only the first job in this worker's line asks Redis; the others wait their turn here.
    let turn = tokio::select! {
        _ = interrupt.stop.cancelled() => return Err(WorkerError::Stopped),
        _ = interrupt.cancel.cancelled() => return Err(WorkerError::CancelRequested),
        _ = tokio::time::sleep(deadline_in) => return Ok(None),
        turn = context.permit_line.turn.lock() => turn,
    };
    let (mut redis_backoff, mut circuit_spread) =
        (RetryBackoff::new(PERMIT_RETRY), RetryBackoff::new(CIRCUIT_OPEN_SPREAD));
    let permit = loop {
        if unix_time_ms() > envelope.deadline_ms {
            return Ok(None);
        }
        let (keys, request) = (&context.keys, permit_request(context, reserve_tokens));
        let decision =
            context
                .redis
                .run(|mut connection| async move {
                    acquire_upstream_permit(&mut connection, keys, &request).await
                })
                .await;
        if decision.is_ok() {
            redis_backoff.reset();
        }
        let pause = match decision {
            Ok(PermitDecision::Granted(permit)) => break permit,
            Ok(PermitDecision::Wait { ms }) => {
                metrics::counter!("dam_worker_capacity_waits_total", "reason" => "rate").increment(1);
                Duration::from_millis(ms)
            }
            Ok(PermitDecision::CircuitOpen { ms }) => {
                metrics::counter!("dam_worker_capacity_waits_total", "reason" => "circuit_open").increment(1);
                Duration::from_millis(ms) + circuit_spread.next_delay()
            }
            Err(error) => {
                tracing::warn!(%error, "could not ask for upstream capacity");
                redis_backoff.next_delay()
            }
        };
        tokio::select! {
            _ = interrupt.stop.cancelled() => return Err(WorkerError::Stopped),
            _ = interrupt.cancel.cancelled() => return Err(WorkerError::CancelRequested),
            _ = tokio::time::sleep(pause.min(LONGEST_CAPACITY_PAUSE)) => {}
        }
    };
    // The slot is reserved: the next job in line may reserve the one after it while this one sleeps.
    drop(turn);
    sleep_until_start_slot(context, permit, interrupt).await.map(Some)
}

/// Sleeps until a granted permit's start slot. A job interrupted meanwhile gives its reserved tokens back.
async fn sleep_until_start_slot(
    context: &JobContext,
    permit: UpstreamPermit,
    interrupt: PermitWait<'_>,
) -> Result<UpstreamPermit, WorkerError> {
    if permit.start_in_ms == 0 {
        return Ok(permit);
    }
    let interrupted = tokio::select! {
        _ = interrupt.stop.cancelled() => WorkerError::Stopped,
        _ = interrupt.cancel.cancelled() => WorkerError::CancelRequested,
        _ = tokio::time::sleep(Duration::from_millis(permit.start_in_ms)) => return Ok(permit),
    };
    settle_upstream_permit(context, &permit, 0, CallOutcome::Neutral).await;
    Err(interrupted)
}

/// Settles a permit with the call's real token use and what it says about the upstream's health.
pub async fn settle_upstream_permit(
    context: &JobContext,
    permit: &UpstreamPermit,
    tokens_used: u64,
    outcome: CallOutcome,
) {
    let (keys, policy) = (&context.keys, upstream_policy(context));
    let settled = context
        .redis
        .run(|mut connection| async move {
            // No clock of ours: the script reads Redis's, the one every worker shares.
            settle_upstream_call(&mut connection, keys, permit, tokens_used, outcome, &policy, None).await
        })
        .await;
    match settled {
        Ok(state) if state == "open" && outcome == CallOutcome::Failed => {
            tracing::warn!("the upstream circuit breaker is open");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not settle an upstream call"),
    }
}
