//! How the gateway takes JSON bodies: `protocol`'s `JsonBody` extractor, with its failures in the gateway's words
//! (413 past the size limit, 408 for a body that stopped arriving, 400 `invalid_json` for bad JSON, 400
//! `invalid_field` naming the field for a wrong or missing one) instead of axum's plain-text rejections.

pub use protocol::json_body::{JsonBody, parse_json_body};
use protocol::json_body::{JsonBodyFailure, JsonBodyService};

use crate::app_state::AppState;
use crate::error::GatewayError;

impl JsonBodyService for AppState {
    type Rejection = GatewayError;

    fn body_limit_bytes(&self) -> usize {
        self.settings.gateway.max_body_bytes
    }
}

/// A wrong field is `invalid_field` with its path as OpenAI's `param`; a body that stopped arriving was cut off
/// by the router's body-read timeout.
impl From<JsonBodyFailure> for GatewayError {
    fn from(failure: JsonBodyFailure) -> Self {
        match failure {
            JsonBodyFailure::TooLarge { limit_bytes } => GatewayError::BodyTooLarge { limit_bytes },
            JsonBodyFailure::Incomplete(_) => GatewayError::BodyTimeout,
            JsonBodyFailure::NotJson(reason) => GatewayError::MalformedJson(reason),
            JsonBodyFailure::WrongShape { path, reason } if path == "." => {
                GatewayError::invalid("invalid_field", reason, None)
            }
            JsonBodyFailure::WrongShape { path, reason } => {
                GatewayError::invalid("invalid_field", format!("field `{path}`: {reason}"), Some(&path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        #[expect(dead_code, reason = "only deserialization is under test")]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Item {
        #[expect(dead_code, reason = "only deserialization is under test")]
        count: u32,
    }

    fn gateway_error(body: &[u8]) -> GatewayError {
        parse_json_body::<Sample>(body).map_err(GatewayError::from).expect_err("refused")
    }

    #[test]
    fn a_wrong_type_names_the_field_path() {
        let error = gateway_error(br#"{"items":[{"count":1},{"count":"x"}]}"#);
        assert_eq!(error.code(), "invalid_field");
        assert!(error.to_string().contains("items[1].count"), "{error}");
    }

    #[test]
    fn broken_json_and_empty_bodies_are_malformed() {
        assert_eq!(gateway_error(b"{\"items\":").code(), "invalid_json");
        assert_eq!(gateway_error(b"  ").code(), "invalid_json");
        assert_eq!(gateway_error(b"{\"items\":[]} x").code(), "invalid_json");
    }
}
