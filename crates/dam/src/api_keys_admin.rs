//! Managing API keys: the `{prefix}api-keys` hash maps each key's SHA-256 to its record (name, tier, optional
//! per-key limits). A key in clear is only ever seen on its way in; listings show a hash prefix and the identity
//! limits are charged to. Every write is announced on the control channel so gateways reload at once.

use protocol::access::{ApiKeyRecord, api_key_hash, api_key_identity};
use protocol::control::ControlMessage;
use protocol::limits::Tier;
use protocol::unix_time_ms;
use serde::{Deserialize, Deserializer, Serialize};

use crate::app_state::AdminState;
use crate::error::AdminError;

/// Hex digits of a key's hash shown in listings: enough to tell keys apart, useless to an attacker.
pub const HASH_PREFIX_HEX_DIGITS: usize = 12;

/// Shortest and longest API key accepted: short keys can be guessed.
const API_KEY_LENGTH: std::ops::RangeInclusive<usize> = 16..=256;

const MAX_NAME_CHARS: usize = 100;

/// A stored key, without the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeySummary {
    /// The first hex digits of the key's SHA-256.
    pub hash_prefix: String,
    /// The identity its limits and blocks apply to (`key:<16 hex>`).
    pub identity: String,
    /// `None` when the stored record is unreadable (it can still be deleted).
    pub record: Option<ApiKeyRecord>,
}

impl ApiKeySummary {
    fn new(key_hash: &str, record: Option<ApiKeyRecord>) -> Self {
        Self {
            hash_prefix: key_hash[..key_hash.len().min(HASH_PREFIX_HEX_DIGITS)].to_owned(),
            identity: api_key_identity(key_hash),
            record,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyListing {
    /// Sorted by name.
    pub keys: Vec<ApiKeySummary>,
}

/// The body of `PUT /admin/keys/{key}`. For an existing key, absent fields keep their value and `null` removes a
/// per-key limit (the tier's applies again).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Required for a new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub burst: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub daily_token_budget: Option<Option<u64>>,
}

/// A present field, even `null`, is `Some`; only an absent one stays `None` (through `#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeySaved {
    /// True when the key was new.
    pub created: bool,
    pub key: ApiKeySummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyDeleted {
    pub hash_prefix: String,
    pub identity: String,
}

pub async fn list_api_keys(state: &AdminState) -> Result<ApiKeyListing, AdminError> {
    let hash_key = state.keys.api_keys();
    let stored: Vec<(String, String)> = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("HGETALL").arg(hash_key).query_async(&mut connection).await
        })
        .await?;
    let mut keys: Vec<ApiKeySummary> = stored
        .into_iter()
        .map(|(key_hash, record)| ApiKeySummary::new(&key_hash, ApiKeyRecord::decode(&record).ok()))
        .collect();
    keys.sort_by(|left, right| {
        let name = |summary: &ApiKeySummary| summary.record.as_ref().map(|record| record.name.clone());
        name(left).cmp(&name(right)).then_with(|| left.hash_prefix.cmp(&right.hash_prefix))
    });
    Ok(ApiKeyListing { keys })
}

/// Creates or updates the key `api_key` (in clear; only its hash is stored).
pub async fn put_api_key(
    state: &AdminState,
    api_key: &str,
    change: ApiKeyChange,
) -> Result<ApiKeySaved, AdminError> {
    check_api_key_text(api_key)?;
    let key_hash = api_key_hash(api_key);
    let (hash_key, field) = (state.keys.api_keys(), key_hash.clone());
    let existing: Option<String> = state
        .redis
        .run(|mut connection| async move {
            redis::cmd("HGET").arg(hash_key).arg(field).query_async(&mut connection).await
        })
        .await?;
    let existing = existing.and_then(|text| ApiKeyRecord::decode(&text).ok());
    let created = existing.is_none();
    let record = apply_api_key_change(existing, change, &api_key_identity(&key_hash), unix_time_ms())?;

    let mut store_and_announce = redis::pipe();
    store_and_announce
        .atomic()
        .cmd("HSET")
        .arg(state.keys.api_keys())
        .arg(&key_hash)
        .arg(record.encode())
        .ignore()
        .cmd("PUBLISH")
        .arg(state.keys.control_channel())
        .arg(ControlMessage::ApiKeysChanged.encode())
        .ignore();
    state
        .redis
        .run(|mut connection| async move { store_and_announce.query_async::<()>(&mut connection).await })
        .await?;
    let summary = ApiKeySummary::new(&key_hash, Some(record));
    tracing::info!(identity = %summary.identity, created, "api key saved");
    metrics::counter!("dam_admin_changes_total", "change" => "api_key_saved").increment(1);
    Ok(ApiKeySaved { created, key: summary })
}

/// Deletes a key named either in clear or by its full SHA-256 (64 lowercase hex digits).
pub async fn delete_api_key(state: &AdminState, key_or_hash: &str) -> Result<ApiKeyDeleted, AdminError> {
    let mut candidates = Vec::new();
    if key_or_hash.len() == 64 && key_or_hash.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
        candidates.push(key_or_hash.to_owned());
    }
    candidates.push(api_key_hash(key_or_hash));
    for key_hash in candidates {
        let (hash_key, field) = (state.keys.api_keys(), key_hash.clone());
        let mut delete_and_announce = redis::pipe();
        delete_and_announce
            .atomic()
            .cmd("HDEL")
            .arg(hash_key)
            .arg(field)
            .cmd("PUBLISH")
            .arg(state.keys.control_channel())
            .arg(ControlMessage::ApiKeysChanged.encode())
            .ignore();
        let (removed,): (u64,) = state
            .redis
            .run(|mut connection| async move { delete_and_announce.query_async(&mut connection).await })
            .await?;
        if removed == 1 {
            let summary = ApiKeySummary::new(&key_hash, None);
            tracing::info!(identity = %summary.identity, "api key deleted");
            metrics::counter!("dam_admin_changes_total", "change" => "api_key_deleted").increment(1);
            return Ok(ApiKeyDeleted { hash_prefix: summary.hash_prefix, identity: summary.identity });
        }
    }
    // The key itself is never echoed back.
    Err(AdminError::KeyNotFound("the given key or hash".to_owned()))
}

/// A key must be long enough not to be guessed, and plain visible ASCII so it survives headers and shells.
fn check_api_key_text(api_key: &str) -> Result<(), AdminError> {
    if !API_KEY_LENGTH.contains(&api_key.len()) {
        return Err(AdminError::invalid_field(
            "key",
            format!("must have {} to {} characters", API_KEY_LENGTH.start(), API_KEY_LENGTH.end()),
        ));
    }
    if !api_key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(AdminError::invalid_field("key", "must be visible ASCII characters without spaces"));
    }
    Ok(())
}

/// The record after `change`, validated. `identity` names an unnamed new key.
pub fn apply_api_key_change(
    existing: Option<ApiKeyRecord>,
    change: ApiKeyChange,
    identity: &str,
    now_ms: u64,
) -> Result<ApiKeyRecord, AdminError> {
    let mut record = match existing {
        Some(record) => record,
        None => ApiKeyRecord {
            name: identity.to_owned(),
            tier: change
                .tier
                .ok_or_else(|| AdminError::invalid_field("tier", "is required for a new key"))?,
            rate_per_second: None,
            burst: None,
            daily_token_budget: None,
            created_at_ms: now_ms,
        },
    };
    if let Some(name) = change.name {
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(AdminError::invalid_field(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters without control characters"),
            ));
        }
        record.name = name;
    }
    if let Some(tier) = change.tier {
        record.tier = tier;
    }
    if let Some(rate) = change.rate_per_second {
        if rate.is_some_and(|rate| !rate.is_finite() || rate <= 0.0) {
            return Err(AdminError::invalid_field("rate_per_second", "must be a number above 0"));
        }
        record.rate_per_second = rate;
    }
    if let Some(burst) = change.burst {
        if burst == Some(0) {
            return Err(AdminError::invalid_field("burst", "must be at least 1"));
        }
        record.burst = burst;
    }
    if let Some(budget) = change.daily_token_budget {
        record.daily_token_budget = budget;
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_input::parse_json_body;

    #[test]
    fn a_new_key_needs_a_tier_and_valid_limits() {
        let missing_tier =
            apply_api_key_change(None, ApiKeyChange::default(), "key:ab", 1).expect_err("refused");
        assert_eq!(missing_tier.field(), Some("tier"));
        let body = |json: &str| parse_json_body::<ApiKeyChange>(json.as_bytes()).expect("parses");
        let zero_burst = apply_api_key_change(None, body(r#"{"tier":"premium","burst":0}"#), "key:ab", 1);
        assert_eq!(zero_burst.expect_err("refused").field(), Some("burst"));
        let negative_rate =
            apply_api_key_change(None, body(r#"{"tier":"premium","rate_per_second":-1}"#), "k", 1);
        assert_eq!(negative_rate.expect_err("refused").field(), Some("rate_per_second"));
        let record =
            apply_api_key_change(None, body(r#"{"tier":"standard","burst":3}"#), "key:ab", 7).expect("ok");
        assert_eq!(
            (record.name.as_str(), record.tier, record.burst, record.created_at_ms),
            ("key:ab", Tier::Standard, Some(3), 7)
        );
    }

    #[test]
    fn an_update_keeps_absent_fields_and_null_removes_an_override() {
        let body = |json: &str| parse_json_body::<ApiKeyChange>(json.as_bytes()).expect("parses");
        let original = apply_api_key_change(
            None,
            body(r#"{"tier":"premium","name":"acme","burst":9,"rate_per_second":2}"#),
            "k",
            1,
        )
        .expect("ok");
        let updated =
            apply_api_key_change(Some(original), body(r#"{"burst":null,"daily_token_budget":5}"#), "k", 2)
                .expect("ok");
        assert_eq!(updated.name, "acme");
        assert_eq!(updated.tier, Tier::Premium);
        assert_eq!(updated.burst, None);
        assert_eq!(updated.rate_per_second, Some(2.0));
        assert_eq!(updated.daily_token_budget, Some(5));
        assert_eq!(updated.created_at_ms, 1);
    }

    #[test]
    fn unknown_fields_and_tiers_are_refused_by_name() {
        let unknown =
            parse_json_body::<ApiKeyChange>(br#"{"tier":"premium","rate":2}"#).expect_err("refused");
        assert_eq!(unknown.code(), "invalid_field");
        let bad_tier = parse_json_body::<ApiKeyChange>(br#"{"tier":"gold"}"#).expect_err("refused");
        assert_eq!(bad_tier.field(), Some("tier"));
    }

    #[test]
    fn weak_or_unprintable_keys_are_refused() {
        assert!(check_api_key_text("short").is_err());
        assert!(check_api_key_text("sk-with a space-0123").is_err());
        assert!(check_api_key_text("sk-live-0123456789abcdef").is_ok());
    }
}
