//! Who may call and how much: API key records (stored hashed, never in clear) and blocks of abusive callers.
//! The dam writes them; the gateway reads them.

use std::net::IpAddr;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::Tier;

/// The SHA-256 of an API key, lowercase hex: the only form in which keys are stored or compared.
pub fn api_key_hash(api_key: &str) -> String {
    hex::encode(Sha256::digest(api_key.as_bytes()))
}

/// The identity limits are charged to for a key: stable, and revealing nothing usable about the key.
pub fn api_key_identity(key_hash: &str) -> String {
    format!("key:{}", &key_hash[..key_hash.len().min(16)])
}

/// The identity of an anonymous caller, as the gateway charges it and the dam blocks it: `ip:` and its IPv4
/// address (an IPv4-mapped IPv6 address counts as IPv4), or its IPv6 network of `ipv6_prefix_len` bits
/// (`ip:2001:db8:1:2::/64`, from `auth.ipv6_prefix_len`), since one home network holds 2^64 addresses and could
/// otherwise pose as that many callers. A prefix of 128 (or more) keeps every IPv6 address apart.
pub fn client_ip_identity(ip: IpAddr, ipv6_prefix_len: u8) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match ip {
        IpAddr::V6(v6) if ipv6_prefix_len < 128 => {
            let network = Ipv6Net::new(v6, ipv6_prefix_len).expect("a prefix under 128 is valid").trunc();
            format!("ip:{network}")
        }
        ip => format!("ip:{ip}"),
    }
}

/// An API key's record, stored under its hash in the `{prefix}api-keys` hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRecord {
    /// A label for operators (who the key belongs to).
    pub name: String,
    pub tier: Tier,
    /// Overrides of the tier's limits for this key alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_token_budget: Option<u64>,
    pub created_at_ms: u64,
}

impl ApiKeyRecord {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an api key record serializes")
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A block on an identity (`ip:...` or `key:...`), stored at `{prefix}block:{identity}` with a TTL and indexed in
/// the `{prefix}blocks` sorted set by expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub identity: String,
    pub reason: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

impl BlockRecord {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a block record serializes")
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_and_identities_do_not_reveal_them() {
        let hash = api_key_hash("sk-test");
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, api_key_hash("sk-test"));
        assert_ne!(hash, api_key_hash("sk-test2"));
        assert_eq!(api_key_identity(&hash), format!("key:{}", &hash[..16]));
    }
}
