//! Closing and opening the floodgate: while `{prefix}intake:paused` exists, gateways answer new chats with 503
//! `maintenance`; queued and running chats carry on. Changes are announced on the control channel.

use protocol::control::ControlMessage;
use protocol::unix_time_ms;
use serde::{Deserialize, Serialize};

use crate::app_state::AdminState;
use crate::error::AdminError;

/// Whether new chats are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeState {
    pub paused: bool,
    /// When the pause began (ms since the epoch), if known.
    pub paused_at_ms: Option<u64>,
}

/// The value stored under the pause key.
#[derive(Debug, Serialize, Deserialize)]
struct PauseRecord {
    paused_at_ms: u64,
}

/// Reads the pause key's value (`None`: the key is absent). Any value pauses, even an unreadable one.
pub fn intake_state(stored: Option<&str>) -> IntakeState {
    match stored {
        None => IntakeState { paused: false, paused_at_ms: None },
        Some(text) => IntakeState {
            paused: true,
            paused_at_ms: serde_json::from_str::<PauseRecord>(text).ok().map(|record| record.paused_at_ms),
        },
    }
}

/// Pauses intake. Pausing twice keeps the first pause's time.
pub async fn pause_intake(state: &AdminState) -> Result<IntakeState, AdminError> {
    let record = serde_json::to_string(&PauseRecord { paused_at_ms: unix_time_ms() }).expect("serializes");
    let mut pause = redis::pipe();
    pause
        .atomic()
        .cmd("SET")
        .arg(state.keys.intake_paused())
        .arg(record)
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(state.keys.intake_paused())
        .cmd("PUBLISH")
        .arg(state.keys.control_channel())
        .arg(ControlMessage::IntakeChanged.encode())
        .ignore();
    let (stored,): (Option<String>,) =
        state.redis.run(|mut connection| async move { pause.query_async(&mut connection).await }).await?;
    tracing::warn!("intake paused: new chats are refused with 503 maintenance");
    metrics::counter!("dam_admin_changes_total", "change" => "intake_paused").increment(1);
    Ok(intake_state(Some(stored.as_deref().unwrap_or("{}"))))
}

/// Opens intake again.
pub async fn resume_intake(state: &AdminState) -> Result<IntakeState, AdminError> {
    let mut resume = redis::pipe();
    resume
        .atomic()
        .cmd("DEL")
        .arg(state.keys.intake_paused())
        .ignore()
        .cmd("PUBLISH")
        .arg(state.keys.control_channel())
        .arg(ControlMessage::IntakeChanged.encode())
        .ignore();
    state.redis.run(|mut connection| async move { resume.query_async::<()>(&mut connection).await }).await?;
    tracing::info!("intake resumed");
    metrics::counter!("dam_admin_changes_total", "change" => "intake_resumed").increment(1);
    Ok(IntakeState { paused: false, paused_at_ms: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_stored_value_pauses_and_its_time_is_read_when_it_can_be() {
        assert_eq!(intake_state(None), IntakeState { paused: false, paused_at_ms: None });
        assert_eq!(
            intake_state(Some(r#"{"paused_at_ms":5}"#)),
            IntakeState { paused: true, paused_at_ms: Some(5) }
        );
        assert_eq!(intake_state(Some("1")), IntakeState { paused: true, paused_at_ms: None });
    }
}
