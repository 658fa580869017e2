//! Blocking an abusive caller for a while: `{prefix}block:{identity}` holds the record and expires with the
//! block (the gateway answers 403 `blocked` while it exists); the `{prefix}blocks` sorted set indexes blocks by
//! expiry for listing and is pruned as it is read.

use std::net::IpAddr;

use protocol::access::BlockRecord;
use protocol::unix_time_ms;
use serde::{Deserialize, Serialize};

use crate::app_state::AdminState;
use crate::error::AdminError;

/// Longest block: 30 days. Longer bans belong in a firewall or in deleting the API key.
pub const MAX_BLOCK_TTL_S: u64 = 30 * 24 * 60 * 60;

/// Most blocks one listing shows (the soonest to expire first).
const MAX_LISTED_BLOCKS: i64 = 1_000;

const MAX_REASON_CHARS: usize = 200;

/// The body of `POST /admin/blocks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// `ip:<address>` or `key:<16 hex digits>` (the identity shown by `GET /admin/keys`).
    pub identity: String,
    pub ttl_s: u64,
    pub reason: String,
}

/// A block in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveBlock {
    pub identity: String,
    pub reason: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// Seconds until it lifts by itself (rounded up).
    pub remaining_s: u64,
}

impl ActiveBlock {
    fn new(record: BlockRecord, now_ms: u64) -> Self {
        let remaining_s = record.expires_at_ms.saturating_sub(now_ms).div_ceil(1_000);
        Self {
            identity: record.identity,
            reason: record.reason,
            created_at_ms: record.created_at_ms,
            expires_at_ms: record.expires_at_ms,
            remaining_s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockListing {
    /// Soonest to expire first.
    pub blocks: Vec<ActiveBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRemoved {
    pub identity: String,
}

/// Blocks (or re-blocks, replacing the earlier block) an identity for `ttl_s` seconds.
pub async fn block_identity(state: &AdminState, request: BlockRequest) -> Result<ActiveBlock, AdminError> {
    let identity = canonical_identity(&request.identity, state.settings.auth.ipv6_prefix_len)?;
    if !(1..=MAX_BLOCK_TTL_S).contains(&request.ttl_s) {
        return Err(AdminError::invalid_field(
            "ttl_s",
            format!("must be from 1 to {MAX_BLOCK_TTL_S} seconds (30 days)"),
        ));
    }
    let reason = request.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control)
    {
        return Err(AdminError::invalid_field(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters without control characters"),
        ));
    }
    let now_ms = unix_time_ms();
    let record = BlockRecord {
        identity: identity.clone(),
        reason,
        created_at_ms: now_ms,
        expires_at_ms: now_ms + request.ttl_s * 1_000,
    };
    let mut store = redis::pipe();
    store
        .atomic()
        .cmd("SET")
        .arg(state.keys.identity_block(&identity))
        .arg(record.encode())
        .arg("EX")
        .arg(request.ttl_s)
        .ignore()
        .cmd("ZADD")
        .arg(state.keys.block_index())
        .arg(record.expires_at_ms)
        .arg(&identity)
        .ignore();
    state.redis.run(|mut connection| async move { store.query_async::<()>(&mut connection).await }).await?;
    tracing::warn!(%identity, ttl_s = request.ttl_s, reason = %record.reason, "identity blocked");
    metrics::counter!("dam_admin_changes_total", "change" => "blocked").increment(1);
    Ok(ActiveBlock::new(record, now_ms))
}

/// The blocks in force; expired index entries are pruned on the way.
pub async fn list_blocks(state: &AdminState) -> Result<BlockListing, AdminError> {
    let now_ms = unix_time_ms();
    let index = state.keys.block_index();
    let mut prune_and_read = redis::pipe();
    prune_and_read
        .cmd("ZREMRANGEBYSCORE")
        .arg(&index)
        .arg("-inf")
        .arg(now_ms)
        .ignore()
        .cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(MAX_LISTED_BLOCKS - 1)
        .arg("WITHSCORES");
    let (indexed,): (Vec<(String, f64)>,) = state
        .redis
        .run(|mut connection| async move { prune_and_read.query_async(&mut connection).await })
        .await?;
    if indexed.is_empty() {
        return Ok(BlockListing { blocks: Vec::new() });
    }
    let block_keys: Vec<String> =
        indexed.iter().map(|(identity, _)| state.keys.identity_block(identity)).collect();
    let records: Vec<Option<String>> =
        state
            .redis
            .run(|mut connection| async move {
                redis::cmd("MGET").arg(block_keys).query_async(&mut connection).await
            })
            .await?;

    let mut blocks = Vec::new();
    let mut lifted = Vec::new();
    for ((identity, expires_at_ms), stored) in indexed.into_iter().zip(records) {
        match stored {
            // Removed or expired meanwhile: the index entry is stale.
            None => lifted.push(identity),
            Some(text) => {
                let record = BlockRecord::decode(&text).unwrap_or_else(|_| BlockRecord {
                    identity: identity.clone(),
                    reason: "(unreadable block record)".to_owned(),
                    created_at_ms: 0,
                    expires_at_ms: expires_at_ms as u64,
                });
                blocks.push(ActiveBlock::new(record, now_ms));
            }
        }
    }
    if !lifted.is_empty() {
        let index = state.keys.block_index();
        let pruned: Result<u64, _> = state
            .redis
            .run(|mut connection| async move {
                redis::cmd("ZREM").arg(index).arg(lifted).query_async(&mut connection).await
            })
            .await;
        if let Err(error) = pruned {
            tracing::debug!(%error, "stale block index entries not pruned; the next listing retries");
        }
    }
    Ok(BlockListing { blocks })
}

/// Lifts a block before its time.
pub async fn unblock_identity(state: &AdminState, identity: &str) -> Result<BlockRemoved, AdminError> {
    let identity = canonical_identity(identity, state.settings.auth.ipv6_prefix_len)?;
    let mut remove = redis::pipe();
    remove
        .atomic()
        .cmd("DEL")
        .arg(state.keys.identity_block(&identity))
        .cmd("ZREM")
        .arg(state.keys.block_index())
        .arg(&identity)
        .ignore();
    let (deleted,): (u64,) =
        state.redis.run(|mut connection| async move { remove.query_async(&mut connection).await }).await?;
    if deleted == 0 {
        return Err(AdminError::BlockNotFound(identity));
    }
    tracing::info!(%identity, "block lifted");
    metrics::counter!("dam_admin_changes_total", "change" => "unblocked").increment(1);
    Ok(BlockRemoved { identity })
}

/// The identity as the gateway spells it: `ip:` and the address in its standard form (an IPv4-mapped IPv6
/// address as IPv4, an IPv6 address as its network of `ipv6_prefix_len` bits, which may also be given as
/// `ip:2001:db8::/64`), or `key:` and 16 lowercase hex digits.
pub fn canonical_identity(identity: &str, ipv6_prefix_len: u8) -> Result<String, AdminError> {
    let invalid = |reason: &str| AdminError::InvalidIdentity {
        identity: identity.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(address) = identity.strip_prefix("ip:") {
        // An IPv6 network as the gateway names it (`ip:2001:db8::/64`) stands for every address in it.
        let address = match address.strip_suffix(&format!("/{ipv6_prefix_len}")) {
            Some(network) if network.contains(':') => network,
            _ => address,
        };
        let ip: IpAddr =
            address.parse().map_err(|_| invalid("ip: must be followed by an IPv4 or IPv6 address"))?;
        return Ok(protocol::access::client_ip_identity(ip, ipv6_prefix_len));
    }
    if let Some(digits) = identity.strip_prefix("key:") {
        if digits.len() == 16 && digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Ok(format!("key:{}", digits.to_ascii_lowercase()));
        }
        return Err(invalid("key: must be followed by the 16 hex digits shown by `GET /admin/keys`"));
    }
    Err(invalid("must be ip:<address> or key:<16 hex digits>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_validated_and_spelled_as_the_gateway_spells_them() {
        let canonical_identity = |identity| canonical_identity(identity, 64);
        assert_eq!(canonical_identity("ip:203.0.113.7").expect("ok"), "ip:203.0.113.7");
        assert_eq!(canonical_identity("ip:::ffff:203.0.113.7").expect("ok"), "ip:203.0.113.7");
        assert_eq!(canonical_identity("ip:2001:DB8::1").expect("ok"), "ip:2001:db8::/64");
        assert_eq!(canonical_identity("ip:2001:db8:0:0:ffff::/64").expect("ok"), "ip:2001:db8::/64");
        assert_eq!(canonical_identity("key:0123456789ABCDEF").expect("ok"), "key:0123456789abcdef");
        for bad in [
            "203.0.113.7",
            "ip:",
            "ip:300.1.1.1",
            "ip:1.2.3.4/24",
            "key:123",
            "key:0123456789abcdeg",
            "user:x",
        ] {
            assert_eq!(canonical_identity(bad).expect_err(bad).code(), "invalid_identity");
        }
    }

    #[test]
    fn the_remaining_time_is_rounded_up() {
        let record = BlockRecord {
            identity: "ip:1.2.3.4".to_owned(),
            reason: "r".to_owned(),
            created_at_ms: 0,
            expires_at_ms: 10_001,
        };
        assert_eq!(ActiveBlock::new(record, 0).remaining_s, 11);
    }
}
