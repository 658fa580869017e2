//! `JsonBody<T>`: a JSON request-body extractor whose failures are `GatewayError`s (413 past the size limit, 400
//! for bad JSON, 400 naming the field for a wrong or missing field) instead of axum's plain-text rejections.
//! Any content type is accepted, so `curl -d` works without a header.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::app_state::AppState;
use crate::error::GatewayError;

/// A deserialized JSON body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit_bytes = state.settings.gateway.max_body_bytes;
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                GatewayError::BodyTooLarge { limit_bytes }
            }
            // The body timed out (too slow a sender) or broke off.
            BytesRejection::FailedToBufferBody(_) => GatewayError::BodyTimeout,
            other => GatewayError::MalformedJson(other.body_text()),
        })?;
        parse_json_body(&bytes).map(JsonBody)
    }
}

/// Parses a body, naming the path of the offending field when the shape is wrong.
pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::MalformedJson("the body is empty".to_owned()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            GatewayError::MalformedJson(inner.to_string())
        } else if path == "." {
            GatewayError::invalid("invalid_field", inner.to_string(), None)
        } else {
            GatewayError::invalid("invalid_field", format!("field `{path}`: {inner}"), Some(&path))
        }
    })?;
    deserializer.end().map_err(|error| GatewayError::MalformedJson(error.to_string()))?;
    Ok(parsed)
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

    #[test]
    fn a_wrong_type_names_the_field_path() {
        let error = parse_json_body::<Sample>(br#"{"items":[{"count":1},{"count":"x"}]}"#).expect_err("bad");
        assert_eq!(error.code(), "invalid_field");
        assert!(error.to_string().contains("items[1].count"), "{error}");
    }

    #[test]
    fn broken_json_and_empty_bodies_are_malformed() {
        assert_eq!(parse_json_body::<Sample>(b"{\"items\":").expect_err("eof").code(), "invalid_json");
        assert_eq!(parse_json_body::<Sample>(b"  ").expect_err("empty").code(), "invalid_json");
        assert_eq!(
            parse_json_body::<Sample>(b"{\"items\":[]} x").expect_err("trailing").code(),
            "invalid_json"
        );
    }
}
