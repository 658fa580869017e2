//! Cancellation of running jobs: a gateway that cancels a running job publishes its id on this worker's cancel
//! channel; one pub/sub connection per worker process listens and fires the job's cancellation token, so the
//! upstream stream is dropped (and generation stops) at once. Tokens are registered while jobs run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use protocol::JobId;
use tokio_util::sync::CancellationToken;

/// Pause before reconnecting a lost pub/sub connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The running jobs' cancellation tokens.
#[derive(Debug, Clone, Default)]
pub struct CancelRegistry {
    tokens: Arc<Mutex<HashMap<JobId, CancellationToken>>>,
}

/// Keeps a job registered while it runs.
#[derive(Debug)]
pub struct CancelRegistration {
    registry: CancelRegistry,
    job_id: JobId,
    pub token: CancellationToken,
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        self.registry.tokens.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.job_id);
    }
}

impl CancelRegistry {
    pub fn register(&self, job_id: JobId) -> CancelRegistration {
        let token = CancellationToken::new();
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner).insert(job_id, token.clone());
        CancelRegistration { registry: self.clone(), job_id, token }
    }

    /// Fires the job's token; returns whether the job runs here.
    pub fn cancel(&self, job_id: &JobId) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match tokens.get(job_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// Listens on `channel` until `shutdown`, cancelling the jobs named there. Reconnects when the connection drops.
pub async fn listen_for_cancellations(
    client: redis::Client,
    channel: String,
    registry: CancelRegistry,
    shutdown: CancellationToken,
) {
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = client.get_async_pubsub() => connected,
        };
        let mut pubsub = match connected {
            Ok(pubsub) => pubsub,
            Err(_) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT_DELAY) => continue,
                }
            }
        };
        if pubsub.subscribe(&channel).await.is_err() {
            continue;
        }
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else { break };
            let Ok(job_id) = message.get_payload::<String>() else { continue };
            if let Ok(job_id) = job_id.parse::<JobId>() {
                let found = registry.cancel(&job_id);
                tracing::info!(%job_id, found, "cancellation received");
            }
        }
        tracing::warn!("cancel channel connection lost; reconnecting");
    }
}
