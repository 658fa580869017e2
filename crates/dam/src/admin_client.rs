//! A client of the admin API, for the `dam` command line: one method per route, answers read into the same
//! types the service writes, and failures turned into errors an operator can act on (which URL could not be
//! reached, a refused token, the server's own message for a refused request).

use std::time::Duration;

use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api_keys_admin::{ApiKeyChange, ApiKeyDeleted, ApiKeyListing, ApiKeySaved};
use crate::blocks_admin::{ActiveBlock, BlockListing, BlockRemoved, BlockRequest};
use crate::dead_letters_admin::{DeadLetterPage, DroppedDeadLetter, ReplayAllReport, ReplayedJob};
use crate::error::ErrorBody;
use crate::intake_admin::IntakeState;
use crate::limits_admin::LimitsInForce;
use crate::status_report::StatusReport;

/// Longest wait for the dam to accept a connection, and for a whole answer (replaying a long dead-letter list
/// takes a while).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("{url:?} is not a usable admin URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "cannot reach the dam at {url}: {reason}. Is `dam serve` running there? Pass --url or set TRAFFIC_DAM_ADMIN_URL."
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "the dam at {url} refused the admin token (401 unauthorized): it is missing or wrong. Pass --token or set \
         DAM_DAM__ADMIN_TOKEN."
    )]
    Unauthorized { url: String },
    #[error("the dam refused the request ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String, field: Option<String> },
    #[error("the dam could not do it ({status} {code}): {message}")]
    Failed { status: u16, code: String, message: String },
    #[error("the answer from {url} could not be read ({status}): {reason}")]
    UnreadableAnswer { url: String, status: u16, reason: String },
}

impl AdminClientError {
    /// The process exit code: 1 refused or failed, 2 bad usage, 3 unreachable, 4 bad token.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminClientError::Refused { .. }
            | AdminClientError::Failed { .. }
            | AdminClientError::UnreadableAnswer { .. } => 1,
            AdminClientError::InvalidUrl { .. } => 2,
            AdminClientError::Unreachable { .. } => 3,
            AdminClientError::Unauthorized { .. } => 4,
        }
    }
}

/// The admin API of one dam.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base_url: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base_url: &str, token: Option<&str>) -> Result<Self, AdminClientError> {
        let invalid = |reason: &str| AdminClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = Url::parse(base_url).map_err(|error| invalid(&error.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.cannot_be_a_base()
            || parsed.host().is_none()
        {
            return Err(invalid("expected http://host:port or https://host:port"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| invalid(&error.to_string()))?;
        let token = token.map(str::trim).filter(|token| !token.is_empty()).map(str::to_owned);
        Ok(Self { base_url: parsed, token, http })
    }

    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    pub async fn status(&self) -> Result<StatusReport, AdminClientError> {
        self.call(Method::GET, &["admin", "status"], &[], None::<&()>).await
    }

    pub async fn limits(&self) -> Result<LimitsInForce, AdminClientError> {
        self.call(Method::GET, &["admin", "limits"], &[], None::<&()>).await
    }

    pub async fn update_limits(&self, patch: &serde_json::Value) -> Result<LimitsInForce, AdminClientError> {
        self.call(Method::PUT, &["admin", "limits"], &[], Some(patch)).await
    }

    pub async fn pause_intake(&self) -> Result<IntakeState, AdminClientError> {
        self.call(Method::POST, &["admin", "intake", "pause"], &[], None::<&()>).await
    }

    pub async fn resume_intake(&self) -> Result<IntakeState, AdminClientError> {
        self.call(Method::POST, &["admin", "intake", "resume"], &[], None::<&()>).await
    }

    pub async fn dead_letters(&self, limit: u64, offset: u64) -> Result<DeadLetterPage, AdminClientError> {
        let query = [("limit", limit.to_string()), ("offset", offset.to_string())];
        self.call(Method::GET, &["admin", "dead-letters"], &query, None::<&()>).await
    }

    pub async fn replay_dead_letter(&self, id: &str) -> Result<ReplayedJob, AdminClientError> {
        self.call(Method::POST, &["admin", "dead-letters", id, "replay"], &[], None::<&()>).await
    }

    pub async fn replay_all_dead_letters(&self, dry_run: bool) -> Result<ReplayAllReport, AdminClientError> {
        let query = [("dry_run", dry_run.to_string())];
        self.call(Method::POST, &["admin", "dead-letters", "replay"], &query, None::<&()>).await
    }

    pub async fn drop_dead_letter(&self, id: &str) -> Result<DroppedDeadLetter, AdminClientError> {
        self.call(Method::DELETE, &["admin", "dead-letters", id], &[], None::<&()>).await
    }

    pub async fn api_keys(&self) -> Result<ApiKeyListing, AdminClientError> {
        self.call(Method::GET, &["admin", "keys"], &[], None::<&()>).await
    }

    pub async fn put_api_key(
        &self,
        api_key: &str,
        change: &ApiKeyChange,
    ) -> Result<ApiKeySaved, AdminClientError> {
        self.call(Method::PUT, &["admin", "keys", api_key], &[], Some(change)).await
    }

    pub async fn delete_api_key(&self, key_or_hash: &str) -> Result<ApiKeyDeleted, AdminClientError> {
        self.call(Method::DELETE, &["admin", "keys", key_or_hash], &[], None::<&()>).await
    }

    pub async fn block(&self, request: &BlockRequest) -> Result<ActiveBlock, AdminClientError> {
        self.call(Method::POST, &["admin", "blocks"], &[], Some(request)).await
    }

    pub async fn blocks(&self) -> Result<BlockListing, AdminClientError> {
        self.call(Method::GET, &["admin", "blocks"], &[], None::<&()>).await
    }

    pub async fn unblock(&self, identity: &str) -> Result<BlockRemoved, AdminClientError> {
        self.call(Method::DELETE, &["admin", "blocks", identity], &[], None::<&()>).await
    }

    /// Sends one request; path segments are percent-encoded one by one, so keys and identities travel intact.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<T, AdminClientError> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| AdminClientError::InvalidUrl {
                url: self.base_url.to_string(),
                reason: "not a base URL".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|error| AdminClientError::Unreachable {
            url: self.base_url.to_string(),
            reason: error_chain(&error),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|error| AdminClientError::Unreachable {
            url: self.base_url.to_string(),
            reason: error_chain(&error),
        })?;
        if status.as_u16() == 401 {
            return Err(AdminClientError::Unauthorized { url: self.base_url.to_string() });
        }
        let unreadable = |reason: String| AdminClientError::UnreadableAnswer {
            url: url.to_string(),
            status: status.as_u16(),
            reason,
        };
        if !status.is_success() {
            let ErrorBody { error } = serde_json::from_str(&text).map_err(|_| {
                unreadable(format!("not a dam error body: {}", text.chars().take(200).collect::<String>()))
            })?;
            return Err(if status.is_client_error() {
                AdminClientError::Refused {
                    status: status.as_u16(),
                    code: error.code,
                    message: error.message,
                    field: error.field,
                }
            } else {
                AdminClientError::Failed { status: status.as_u16(), code: error.code, message: error.message }
            });
        }
        serde_json::from_str(&text).map_err(|error| unreadable(error.to_string()))
    }
}

/// An error and its causes on one line ("error sending request: ...: Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
