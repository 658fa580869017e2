//! The admission decision every chat passes before any work is queued: today it builds the job envelope and
//! enqueues it atomically (one Lua script, one round trip); the rate, concurrency and queue limits join that same
//! script, so limits hold across any number of gateway instances.

use protocol::job::JOB_ENVELOPE_VERSION;
use protocol::job_lifecycle::enqueue_job;
use protocol::{JobEnvelope, JobId, Lane, unix_time_ms};

use crate::app_state::AppState;
use crate::caller_identity::CallerIdentity;
use crate::chat_request::ValidatedChat;
use crate::error::GatewayError;

/// A chat that was accepted and now waits in a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmittedChat {
    pub job_id: JobId,
    pub lane: Lane,
    pub ticket: u64,
    /// 1 = next in its lane.
    pub position: u64,
}

/// Admits a validated chat and enqueues it.
pub async fn admit_chat_request(
    state: &AppState,
    chat: ValidatedChat,
    caller: &CallerIdentity,
    flow: &'static str,
) -> Result<AdmittedChat, GatewayError> {
    let settings = &state.settings;
    let now_ms = unix_time_ms();
    let envelope = JobEnvelope {
        version: JOB_ENVELOPE_VERSION,
        id: JobId::new_random(),
        identity: caller.as_str().to_owned(),
        lane: Lane::Standard,
        messages: chat.messages,
        model: chat.model,
        parameters: chat.parameters,
        created_at_ms: now_ms,
        deadline_ms: now_ms + settings.chat.queue_deadline_s * 1000,
        attempt: 1,
        trace_context: Default::default(),
    };
    let (job_id, lane) = (envelope.id, envelope.lane);
    // The state outlives the longest possible wait plus run, then stays for replays.
    let state_ttl_s =
        settings.chat.queue_deadline_s + settings.llm.request_timeout_s + settings.chat.replay_ttl_s;
    let keys = state.keys.clone();
    let enqueued = state
        .redis
        .run(
            |mut connection| async move { enqueue_job(&mut connection, &keys, &envelope, state_ttl_s).await },
        )
        .await?
        .ok_or_else(|| GatewayError::Internal("a freshly generated job id already existed".to_owned()))?;
    metrics::counter!("dam_gateway_chats_admitted_total", "flow" => flow).increment(1);
    tracing::debug!(%job_id, ticket = enqueued.ticket, "chat admitted");
    Ok(AdmittedChat { job_id, lane, ticket: enqueued.ticket, position: enqueued.position })
}
