//! Messages on the control channel (`{prefix}control`): announcements that shared state changed, so every
//! gateway and worker reloads it at once instead of waiting for its next periodic read.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// `{prefix}limits` was written.
    LimitsChanged,
    /// The `{prefix}api-keys` hash was written.
    ApiKeysChanged,
    /// Intake was paused or resumed.
    IntakeChanged,
}

impl ControlMessage {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a control message serializes")
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_have_a_stable_wire_shape() {
        assert_eq!(ControlMessage::LimitsChanged.encode(), r#"{"type":"limits_changed"}"#);
        assert_eq!(
            ControlMessage::decode(r#"{"type":"api_keys_changed"}"#).expect("decodes"),
            ControlMessage::ApiKeysChanged
        );
    }
}
