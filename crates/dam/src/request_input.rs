//! The admin API's extractors: JSON bodies (`protocol`'s `JsonBody`, its failures told here in the dam's words),
//! query parameters and path segments whose failures are `AdminError`s (400 naming the field, 413 over the body
//! limit), so bad input gets the same JSON error shape as everything else.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
pub use protocol::json_body::JsonBody;
use protocol::json_body::{JsonBodyFailure, JsonBodyService};
use serde::de::DeserializeOwned;

use crate::app_state::AdminState;
use crate::error::AdminError;

/// Largest admin request body: limits, key and block bodies are a few hundred bytes.
pub const ADMIN_BODY_LIMIT_BYTES: usize = 64 * 1024;

impl JsonBodyService for AdminState {
    type Rejection = AdminError;

    fn body_limit_bytes(&self) -> usize {
        ADMIN_BODY_LIMIT_BYTES
    }
}

/// A body that is not JSON (or did not arrive whole) is 400 `invalid_json`; JSON of the wrong shape is 400
/// `invalid_field` naming the dotted path of the field, missing and unknown ones included.
impl From<JsonBodyFailure> for AdminError {
    fn from(failure: JsonBodyFailure) -> Self {
        match failure {
            JsonBodyFailure::TooLarge { limit_bytes } => AdminError::BodyTooLarge { limit_bytes },
            JsonBodyFailure::Incomplete(reason) | JsonBodyFailure::NotJson(reason) => {
                AdminError::InvalidJson(reason)
            }
            JsonBodyFailure::WrongShape { path, reason } => {
                AdminError::invalid_field(field_of_body_error(&path, &reason), reason)
            }
        }
    }
}

/// Reads `bytes` as JSON into `T`, naming the offending field on failure, as the extractor does.
pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    Ok(protocol::json_body::parse_json_body(bytes)?)
}

/// The dotted path of the field a body error is about. A missing or unknown field is reported by serde at its
/// parent, with the name only in the message (``missing field `reason` ``), so the name is taken from there.
fn field_of_body_error(path: &str, reason: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|start| reason.strip_prefix(start)?.split('`').next())
        .filter(|name| !name.is_empty());
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "(body)".to_owned(),
        (path, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (path, None) => path.to_owned(),
    }
}

/// The query string as name/value pairs, read field by field so each error names its parameter.
#[derive(Debug, Default)]
pub struct AdminQuery(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for AdminQuery {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map_err(|rejection| AdminError::invalid_field("(query)", rejection.body_text()))?;
        Ok(Self(pairs))
    }
}

impl AdminQuery {
    pub fn new(pairs: HashMap<String, String>) -> Self {
        Self(pairs)
    }

    /// Refuses parameters the route does not know, so a typo (`limt=5`) is not silently ignored.
    pub fn allow_only(&self, known: &[&str]) -> Result<(), AdminError> {
        match self.0.keys().find(|name| !known.contains(&name.as_str())) {
            Some(unknown) => Err(AdminError::invalid_field(
                unknown.clone(),
                format!("unknown query parameter; this route takes {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    pub fn number(&self, name: &str, default: u64, allowed: RangeInclusive<u64>) -> Result<u64, AdminError> {
        let Some(text) = self.0.get(name) else {
            return Ok(default);
        };
        match text.parse::<u64>() {
            Ok(value) if allowed.contains(&value) => Ok(value),
            _ => Err(AdminError::invalid_field(
                name,
                format!("must be a whole number from {} to {}", allowed.start(), allowed.end()),
            )),
        }
    }

    pub fn flag(&self, name: &str) -> Result<bool, AdminError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(_) => Err(AdminError::invalid_field(name, "must be true or false")),
        }
    }
}

/// One path segment (`{id}`, `{key}`, `{identity}`), percent-decoded.
#[derive(Debug)]
pub struct AdminPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for AdminPath {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(segment) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| AdminError::invalid_field("(path)", rejection.body_text()))?;
        Ok(Self(segment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialization is under test")]
    struct Sample {
        ttl_s: u64,
    }

    #[test]
    fn body_errors_name_the_field_or_say_it_is_not_json() {
        assert!(matches!(parse_json_body::<Sample>(b"{"), Err(AdminError::InvalidJson(_))));
        assert!(matches!(parse_json_body::<Sample>(b"  "), Err(AdminError::InvalidJson(_))));
        let wrong_type = parse_json_body::<Sample>(br#"{"ttl_s": "soon"}"#).expect_err("refused");
        assert_eq!(wrong_type.field(), Some("ttl_s"));
        let unknown = parse_json_body::<Sample>(br#"{"ttl_s": 1, "ttl": 2}"#).expect_err("refused");
        assert_eq!(unknown.field(), Some("ttl"));
        let missing = parse_json_body::<Sample>(br#"{}"#).expect_err("refused");
        assert_eq!(missing.field(), Some("ttl_s"));
        let not_an_object = parse_json_body::<Sample>(br#""text""#).expect_err("refused");
        assert_eq!(not_an_object.field(), Some("(body)"));
    }

    #[test]
    fn query_numbers_and_flags_are_checked_by_name() {
        let query = AdminQuery::new(HashMap::from([
            ("limit".to_owned(), "0".to_owned()),
            ("dry_run".to_owned(), "yes".to_owned()),
        ]));
        assert_eq!(query.number("limit", 50, 1..=500).expect_err("refused").field(), Some("limit"));
        assert_eq!(query.number("offset", 7, 0..=10).expect("default"), 7);
        assert_eq!(query.flag("dry_run").expect_err("refused").field(), Some("dry_run"));
        assert_eq!(query.allow_only(&["limit"]).expect_err("refused").field(), Some("dry_run"));
    }
}
