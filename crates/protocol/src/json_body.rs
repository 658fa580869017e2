//! `JsonBody<T>`, the one JSON request-body extractor of every service's HTTP API: it reads the body, parses it
//! and says precisely what was wrong (`JsonBodyFailure`). Each service turns that failure into its own error
//! answer through `JsonBodyService`; no status, code or message shape is decided here.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

/// A service whose routes take JSON bodies: its router's state names the error a bad body becomes, and the body
/// limit that error quotes.
pub trait JsonBodyService: Send + Sync {
    type Rejection: From<JsonBodyFailure> + IntoResponse;

    /// The body limit in force (enforced by the router's `DefaultBodyLimit`), quoted by `TooLarge`.
    fn body_limit_bytes(&self) -> usize;
}

/// Why a request body is not the `T` a route expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonBodyFailure {
    /// The body is larger than the limit.
    TooLarge { limit_bytes: usize },
    /// The body did not arrive whole: the sender was too slow and timed out, or the connection broke off.
    Incomplete(String),
    /// The body is not JSON: empty, cut short, broken, or followed by more than whitespace.
    NotJson(String),
    /// The body is JSON of the wrong shape: a field of the wrong type, missing or unknown.
    WrongShape {
        /// The path of the value serde stopped at (`items[1].count`), `.` for the body itself. For a missing
        /// field this is the object that lacks it, and the field's name is only in `reason`.
        path: String,
        reason: String,
    },
}

/// A deserialized JSON body. Any content type is accepted, so `curl -d` works without a header (a service that
/// must insist on `application/json` checks the header itself).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: JsonBodyService, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = S::Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                JsonBodyFailure::TooLarge { limit_bytes: state.body_limit_bytes() }
            }
            BytesRejection::FailedToBufferBody(other) => JsonBodyFailure::Incomplete(other.body_text()),
            other => JsonBodyFailure::NotJson(other.body_text()),
        })?;
        Ok(JsonBody(parse_json_body(&bytes)?))
    }
}

/// Parses a body in one pass, naming the path of the offending value when the shape is wrong. The first problem
/// met is the one reported.
pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonBodyFailure> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(JsonBodyFailure::NotJson("the body is empty".to_owned()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            JsonBodyFailure::NotJson(inner.to_string())
        } else {
            JsonBodyFailure::WrongShape { path, reason: inner.to_string() }
        }
    })?;
    deserializer.end().map_err(|error| JsonBodyFailure::NotJson(error.to_string()))?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[expect(dead_code, reason = "only deserialization is under test")]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Item {
        #[expect(dead_code, reason = "only deserialization is under test")]
        count: u32,
    }

    fn shape_failure(body: &str) -> (String, String) {
        match parse_json_body::<Sample>(body.as_bytes()) {
            Err(JsonBodyFailure::WrongShape { path, reason }) => (path, reason),
            other => panic!("expected a wrong shape for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_the_path_of_the_value() {
        let (path, reason) = shape_failure(r#"{"items":[{"count":1},{"count":"x"}]}"#);
        assert_eq!(path, "items[1].count");
        assert!(reason.starts_with("invalid type: string \"x\""), "{reason}");
    }

    #[test]
    fn a_missing_field_is_reported_at_its_parent_and_an_unknown_one_at_itself() {
        let (path, reason) = shape_failure(r#"{"items":[{}]}"#);
        assert_eq!(path, "items[0]");
        assert!(reason.starts_with("missing field `count`"), "{reason}");
        let (path, reason) = shape_failure(r#"{"items":[],"extra":1}"#);
        assert_eq!(path, "extra");
        assert!(reason.starts_with("unknown field `extra`"), "{reason}");
    }

    #[test]
    fn broken_cut_short_trailing_and_empty_bodies_are_not_json() {
        for body in ["{\"items\":", "{\"items\" 1}", "{\"items\":[]} x", "  ", ""] {
            let failure = parse_json_body::<Sample>(body.as_bytes()).expect_err(body);
            assert!(matches!(failure, JsonBodyFailure::NotJson(_)), "{body:?}: {failure:?}");
        }
    }
}
