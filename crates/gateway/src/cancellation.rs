//! Cancelling a chat whose client gave up (`DELETE /api/chats/{id}`, or an OpenAI client that disconnected
//! before its answer ended): a queued job never starts, a running job's worker is told to abort its upstream
//! stream, so no capacity or tokens are spent on answers nobody reads.

use protocol::job_lifecycle::{CancelOutcome, cancel_job};
use protocol::keys::job_state_field;
use protocol::{JobId, unix_time_ms};

use crate::app_state::AppState;
use crate::error::GatewayError;

/// What the client sees in the error event of a chat it cancelled.
const CANCELLED_MESSAGE: &str = "the chat was cancelled by its client";

/// Cancels `job_id`. Two round trips: find the caller the job is charged to, then cancel; plus one PUBLISH to
/// the worker when it runs.
pub async fn cancel_chat(state: &AppState, job_id: JobId) -> Result<CancelOutcome, GatewayError> {
    let state_key = state.keys.job_state(&job_id);
    let (identity, created_at_ms): (Option<String>, Option<u64>) = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("HMGET")
                .arg(&state_key)
                .arg(job_state_field::IDENTITY)
                .arg(job_state_field::CREATED_AT_MS)
                .query_async(&mut connection)
                .await
        })
        .await?;
    let identity = identity.ok_or_else(|| GatewayError::ChatNotFound(job_id.to_string()))?;
    // The budget day admission reserved on; a job whose state lacks it (none should) settles on today's.
    let created_at_ms = created_at_ms.unwrap_or_else(unix_time_ms);
    let keys = &state.keys;
    let replay_ttl_s = state.settings.chat.replay_ttl_s;
    let outcome = state
        .redis
        .run(|mut connection| async move {
            cancel_job(
                &mut connection,
                keys,
                &job_id,
                &identity,
                created_at_ms,
                CANCELLED_MESSAGE,
                replay_ttl_s,
                unix_time_ms(),
            )
            .await
        })
        .await?;
    if let CancelOutcome::Cancelling { worker_id } = &outcome {
        let channel = state.keys.worker_cancel_channel(worker_id);
        let _: i64 = state
            .redis
            .run(|mut connection| async move {
                redis::cmd("PUBLISH").arg(&channel).arg(job_id.to_string()).query_async(&mut connection).await
            })
            .await?;
    }
    metrics::counter!("dam_gateway_cancellations_total").increment(1);
    Ok(outcome)
}

/// Cancels the job when dropped while armed: held by an OpenAI-flow response for the chat it created, and
/// disarmed once the answer ended, so only a client that went away early cancels.
#[derive(Debug)]
pub struct CancelOnDrop {
    state: Option<AppState>,
    job_id: JobId,
}

impl CancelOnDrop {
    pub fn armed(state: &AppState, job_id: JobId) -> Self {
        Self { state: Some(state.clone()), job_id }
    }

    /// A guard that never cancels (for a client that joined someone else's chat).
    pub fn disarmed(job_id: JobId) -> Self {
        Self { state: None, job_id }
    }

    pub fn disarm(&mut self) {
        self.state = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let job_id = self.job_id;
            tokio::spawn(async move {
                // Many clients may leave at once (a proxy restarts): they wait their turn here, so that each
                // cancellation's Redis deadline starts when it is sent, not while thousands queue ahead of it.
                let _turn = state.departure_cancellations.acquire().await;
                if let Err(error) = cancel_chat(&state, job_id).await {
                    tracing::warn!(%job_id, %error, "could not cancel the chat of a departed client");
                }
            });
        }
    }
}
