//! Cancellation of running jobs: a gateway that cancels a running job publishes its id on this worker's cancel
//! channel; one pub/sub connection per worker process listens and fires the job's cancellation token, so the
//! upstream stream is dropped (and generation stops) at once. Tokens are registered while jobs run, with the
//! job's event channel so that one process-wide check can also cancel jobs nobody listens to any more.
//! A cancellation published while the connection was down is not lost: each time the listener (re)subscribes,
//! it reads the `cancel_requested` flag of every job it runs, in one pipeline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use protocol::keys::job_state_field;
use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};
use protocol::{JobId, RedisConnections, RedisKeys};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Pauses before connecting again when the pub/sub connection could not be made: at most half a second, at least
/// half of that, jittered so that the workers which lost Redis together do not reconnect in the same instant.
const RECONNECT_RETRY: RetryPolicy = RetryPolicy::steady(Duration::from_millis(500), Jitter::Equal);

/// What the client of a cancelled job is told.
pub const CANCELLED_BY_CLIENT: &str = "the chat was cancelled by its client";
pub const ABANDONED: &str = "nobody was listening for the answer any more";

/// The running jobs' cancellation tokens.
#[derive(Debug, Clone, Default)]
pub struct CancelRegistry {
    jobs: Arc<Mutex<HashMap<JobId, RegisteredJob>>>,
}

#[derive(Debug)]
struct RegisteredJob {
    token: CancellationToken,
    reason: Arc<Mutex<&'static str>>,
    /// The job's event channel when it must have a listener (every job but an operator's replay).
    listened_channel: Option<ListenedChannel>,
    /// Told each time a check finds a listener, so a job waiting to know whether anyone listens can start.
    listener_heard: Arc<Notify>,
}

/// A job's event channel, and when a listener was last known to be there (at first: the job's creation, when its
/// client asked for it), from which the abandonment check counts its grace.
#[derive(Debug, Clone)]
pub struct ListenedChannel {
    pub channel: String,
    pub last_heard: Instant,
}

/// A registered job whose channel must have a listener, as the abandonment check sees it.
#[derive(Debug, Clone)]
pub struct ListenedJob {
    pub job_id: JobId,
    pub channel: String,
    /// When a listener was last known to be there before any check of this process counted.
    pub last_heard: Instant,
}

/// Keeps a job registered while it runs.
#[derive(Debug)]
pub struct CancelRegistration {
    registry: CancelRegistry,
    job_id: JobId,
    pub token: CancellationToken,
    reason: Arc<Mutex<&'static str>>,
    listener_heard: Arc<Notify>,
}

impl CancelRegistration {
    /// Why the job was cancelled, once its token fired.
    pub fn reason(&self) -> &'static str {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes once a check found a listener on the job's channel (at once when one did since the last wait).
    pub async fn listener_heard(&self) {
        self.listener_heard.notified().await;
    }
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        self.registry.jobs.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.job_id);
    }
}

impl CancelRegistry {
    /// Registers a job while it runs; `listened_channel` when it must have a listener.
    pub fn register(&self, job_id: JobId, listened_channel: Option<ListenedChannel>) -> CancelRegistration {
        let token = CancellationToken::new();
        let reason = Arc::new(Mutex::new(CANCELLED_BY_CLIENT));
        let listener_heard = Arc::new(Notify::new());
        let job = RegisteredJob {
            token: token.clone(),
            reason: reason.clone(),
            listened_channel,
            listener_heard: listener_heard.clone(),
        };
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).insert(job_id, job);
        CancelRegistration { registry: self.clone(), job_id, token, reason, listener_heard }
    }

    /// A check found a listener on the job's channel: wakes the job if it waits for one.
    pub fn listener_heard(&self, job_id: &JobId) {
        if let Some(job) = self.jobs.lock().unwrap_or_else(PoisonError::into_inner).get(job_id) {
            job.listener_heard.notify_one();
        }
    }

    /// Fires the job's token; returns whether the job runs here.
    pub fn cancel(&self, job_id: &JobId, reason: &'static str) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        match jobs.get(job_id) {
            Some(job) => {
                if !job.token.is_cancelled() {
                    *job.reason.lock().unwrap_or_else(PoisonError::into_inner) = reason;
                    job.token.cancel();
                }
                true
            }
            None => false,
        }
    }

    /// Every registered job.
    pub fn registered_jobs(&self) -> Vec<JobId> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    /// The running jobs that must have a listener, with their event channels.
    pub fn listened_jobs(&self) -> Vec<ListenedJob> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.iter()
            .filter_map(|(id, job)| {
                job.listened_channel.as_ref().map(|listened| ListenedJob {
                    job_id: *id,
                    channel: listened.channel.clone(),
                    last_heard: listened.last_heard,
                })
            })
            .collect()
    }
}

/// Listens on `channel` until `shutdown`, cancelling the jobs named there. Reconnects when the connection drops.
pub async fn listen_for_cancellations(
    redis: RedisConnections,
    keys: RedisKeys,
    channel: String,
    registry: CancelRegistry,
    shutdown: CancellationToken,
) {
    let client = redis.client().clone();
    let mut reconnect_backoff = RetryBackoff::new(RECONNECT_RETRY);
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = client.get_async_pubsub() => connected,
        };
        let subscribed = match connected {
            Ok(mut pubsub) => pubsub.subscribe(&channel).await.map(|()| pubsub),
            Err(error) => Err(error),
        };
        let Ok(mut pubsub) = subscribed else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(reconnect_backoff.next_delay()) => continue,
            }
        };
        reconnect_backoff.reset();
        cancel_jobs_flagged_while_unheard(&redis, &keys, &registry).await;
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else { break };
            let Ok(job_id) = message.get_payload::<String>() else { continue };
            if let Ok(job_id) = job_id.parse::<JobId>() {
                let found = registry.cancel(&job_id, CANCELLED_BY_CLIENT);
                tracing::info!(%job_id, found, "cancellation received");
            }
        }
        tracing::warn!("cancel channel connection lost; reconnecting");
    }
}

/// Cancels the registered jobs whose `cancel_requested` flag is set: cancellations published while this worker
/// was not subscribed (its first subscription, a reconnection) would otherwise go unheard.
async fn cancel_jobs_flagged_while_unheard(
    redis: &RedisConnections,
    keys: &RedisKeys,
    registry: &CancelRegistry,
) {
    let jobs = registry.registered_jobs();
    if jobs.is_empty() {
        return;
    }
    let mut flags = redis::pipe();
    for job_id in &jobs {
        flags.cmd("HGET").arg(keys.job_state(job_id)).arg(job_state_field::CANCEL_REQUESTED);
    }
    let read: redis::RedisResult<Vec<Option<String>>> =
        redis.run(|mut connection| async move { flags.query_async(&mut connection).await }).await;
    match read {
        Ok(flags) => {
            for (job_id, flag) in jobs.iter().zip(flags) {
                if flag.as_deref() == Some("1") && registry.cancel(job_id, CANCELLED_BY_CLIENT) {
                    tracing::info!(%job_id, "cancellation found after (re)subscribing");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not read the cancel flags of running jobs"),
    }
}
