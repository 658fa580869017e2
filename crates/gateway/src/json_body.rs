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

    fn wrong_shape(path: &str) -> GatewayError {
        GatewayError::from(JsonBodyFailure::WrongShape {
            path: path.to_owned(),
            reason: "invalid type".to_owned(),
        })
    }

    #[test]
    fn a_wrong_field_is_invalid_field_with_its_path_as_the_param() {
        let error = wrong_shape("items[1].count");
        assert_eq!(error.code(), "invalid_field");
        assert!(error.to_string().contains("items[1].count"), "{error}");
        assert_eq!(error.body().error.param.as_deref(), Some("items[1].count"));
        assert_eq!(wrong_shape(".").body().error.param, None, "the body itself names no param");
    }

    #[test]
    fn broken_json_is_malformed_a_stalled_body_timed_out_and_a_big_one_too_large() {
        let code = |failure| GatewayError::from(failure).code().to_owned();
        assert_eq!(code(JsonBodyFailure::NotJson("eof".to_owned())), "invalid_json");
        assert_eq!(code(JsonBodyFailure::Incomplete("reset".to_owned())), "request_timeout");
        assert_eq!(code(JsonBodyFailure::TooLarge { limit_bytes: 10 }), "body_too_large");
    }
}
