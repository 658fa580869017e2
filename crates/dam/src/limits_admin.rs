//! Reading and changing the live limits: `{prefix}limits` holds them (absent means the configured ones), and a
//! change is announced on the control channel so every gateway and worker applies it at once. Validation is
//! `protocol::limits`'s, so the dam refuses exactly what the services would.

use protocol::control::ControlMessage;
use protocol::limits::Limits;
use serde::{Deserialize, Serialize};

use crate::app_state::AdminState;
use crate::error::AdminError;

/// Where the limits in force come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsSource {
    /// Set by an operator and stored in Redis.
    Live,
    /// Nothing stored: the `[limits]` settings.
    Settings,
}

/// The limits in force and where they come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsInForce {
    pub source: LimitsSource,
    pub limits: Limits,
}

/// Reads the stored limits text into the limits in force. Unreadable or invalid text (written by hand, or by an
/// older build) is logged and ignored: the configured limits are shown and become the base of the next change.
pub fn limits_in_force(stored: Option<&str>, configured: &Limits) -> LimitsInForce {
    let decoded = stored.map(|text| {
        let limits = Limits::decode(text).map_err(|error| error.to_string())?;
        limits.validate().map_err(|error| error.to_string())?;
        Ok::<_, String>(limits)
    });
    match decoded {
        Some(Ok(limits)) => LimitsInForce { source: LimitsSource::Live, limits },
        Some(Err(error)) => {
            tracing::warn!(%error, "the stored live limits are unreadable; the configured ones apply");
            LimitsInForce { source: LimitsSource::Settings, limits: configured.clone() }
        }
        None => LimitsInForce { source: LimitsSource::Settings, limits: configured.clone() },
    }
}

pub async fn read_limits_in_force(state: &AdminState) -> Result<LimitsInForce, AdminError> {
    let key = state.keys.live_limits();
    let stored: Option<String> = state
        .redis
        .run(|mut connection| async move { redis::cmd("GET").arg(key).query_async(&mut connection).await })
        .await?;
    Ok(limits_in_force(stored.as_deref(), &state.settings.limits))
}

/// Applies a whole or partial update (JSON merge patch) to the limits in force, stores the result and announces
/// it. A refused value changes nothing and names its field.
pub async fn update_limits(
    state: &AdminState,
    patch: &serde_json::Value,
) -> Result<LimitsInForce, AdminError> {
    let current = read_limits_in_force(state).await?;
    let updated = current.limits.with_patch(patch)?;
    let mut store_and_announce = redis::pipe();
    store_and_announce
        .atomic()
        .cmd("SET")
        .arg(state.keys.live_limits())
        .arg(updated.encode())
        .ignore()
        .cmd("PUBLISH")
        .arg(state.keys.control_channel())
        .arg(ControlMessage::LimitsChanged.encode())
        .ignore();
    state
        .redis
        .run(|mut connection| async move { store_and_announce.query_async::<()>(&mut connection).await })
        .await?;
    tracing::info!(%patch, "live limits changed");
    metrics::counter!("dam_admin_changes_total", "change" => "limits").increment(1);
    Ok(LimitsInForce { source: LimitsSource::Live, limits: updated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_limits_win_and_unreadable_ones_fall_back_to_the_settings() {
        let configured = Limits::default();
        let stored = Limits { max_queue_depth: 3, ..Limits::default() };
        assert_eq!(limits_in_force(Some(&stored.encode()), &configured).limits, stored);
        let fallback = limits_in_force(Some("{garbage"), &configured);
        assert_eq!((fallback.source, fallback.limits), (LimitsSource::Settings, configured.clone()));
        let invalid = Limits { max_queue_depth: 0, ..Limits::default() };
        assert_eq!(limits_in_force(Some(&invalid.encode()), &configured).source, LimitsSource::Settings);
        assert_eq!(limits_in_force(None, &configured).source, LimitsSource::Settings);
    }
}
