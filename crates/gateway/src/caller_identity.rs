//! Who is calling: the identity a chat is charged to and limited by, and its tier. A known API key
//! (`Authorization: Bearer <key>` or `X-API-Key`) names the caller; otherwise the client IP does. The client IP
//! is the socket peer, unless the peer is a trusted proxy: then the right-most untrusted `X-Forwarded-For`
//! address counts, so a client cannot choose its identity by inventing headers.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use protocol::access::{api_key_hash, client_ip_identity};
use protocol::limits::{Limits, Tier, TierLimits};
use protocol::settings::AuthSettings;
use protocol::unix_time_ms;

use crate::access_directory::{AccessDirectory, KnownApiKey};
use crate::app_state::AppState;
use crate::error::GatewayError;
use crate::gateway_metrics::UNTRUSTED_FORWARDED_REQUESTS;

/// A caller's identity as stored in job envelopes and limit keys: `ip:203.0.113.7` or `key:<16 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerIdentity(String);

impl CallerIdentity {
    /// An anonymous caller: its IPv4 address, or its IPv6 network of `ipv6_prefix_len` bits
    /// ([`client_ip_identity`], which the dam's blocks use too).
    pub fn from_client_ip(ip: IpAddr, ipv6_prefix_len: u8) -> Self {
        Self(client_ip_identity(ip, ipv6_prefix_len))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// IPv4-mapped IPv6 addresses are the same caller as their IPv4 form.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub identity: CallerIdentity,
    pub tier: Tier,
    /// Set when a known API key named the caller.
    pub api_key: Option<KnownApiKey>,
}

impl Caller {
    /// The limits that apply to this caller now.
    pub fn limits(&self, limits: &Limits) -> TierLimits {
        let tier_limits = limits.tiers.for_tier(self.tier);
        match &self.api_key {
            Some(key) => key.limits(tier_limits),
            None => *tier_limits,
        }
    }
}

/// Identifies the caller of a request from its headers and socket peer.
pub fn identify_caller(
    headers: &HeaderMap,
    peer: SocketAddr,
    auth: &AuthSettings,
    directory: &AccessDirectory,
) -> Caller {
    if headers.contains_key(FORWARDED_FOR) && !is_trusted_proxy(peer.ip(), &auth.trusted_proxies) {
        report_forwarding_from_an_untrusted_peer(peer.ip(), unix_time_ms());
    }
    if let Some(key) = presented_api_key(headers).and_then(|key| directory.lookup(&api_key_hash(key))) {
        return Caller { identity: CallerIdentity(key.identity.clone()), tier: key.tier, api_key: Some(key) };
    }
    let ip = client_ip(headers, peer.ip(), &auth.trusted_proxies);
    Caller {
        identity: CallerIdentity::from_client_ip(ip, auth.ipv6_prefix_len),
        tier: Tier::Anonymous,
        api_key: None,
    }
}

fn presented_api_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")));
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|value| value.to_str().ok()))
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

/// The header a proxy names its client in.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// How long a gateway stays quiet after logging that a peer it does not trust forwards requests: often enough to
/// be seen, rarely enough that a client sending the header on purpose cannot flood the log.
const UNTRUSTED_FORWARDING_LOG_INTERVAL_MS: u64 = 60_000;

/// When this process last logged forwarding from an untrusted peer (ms since the epoch; 0: never).
static UNTRUSTED_FORWARDING_LOGGED_AT_MS: AtomicU64 = AtomicU64::new(0);

fn is_trusted_proxy(ip: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    trusted_proxies.iter().any(|network| network.contains(&canonical_ip(ip)))
}

/// A request names its client in `X-Forwarded-For`, but its peer is not in `auth.trusted_proxies`: the header is
/// ignored, so every client behind that peer shares the peer's identity and rate limit. Behind nginx in compose
/// or an ingress in Kubernetes that is a misconfiguration that would otherwise go unseen, so it is counted every
/// time and logged as an error at most once a minute.
fn report_forwarding_from_an_untrusted_peer(peer: IpAddr, now_ms: u64) {
    metrics::counter!(UNTRUSTED_FORWARDED_REQUESTS).increment(1);
    if claim_untrusted_forwarding_log_turn(&UNTRUSTED_FORWARDING_LOGGED_AT_MS, now_ms) {
        tracing::error!(
            %peer,
            setting = "auth.trusted_proxies",
            "requests carry X-Forwarded-For from a peer that auth.trusted_proxies does not trust; every client behind it shares one identity and one rate limit (if that peer is your proxy, add its address or network to auth.trusted_proxies)"
        );
    }
}

/// True when the last log is at least [`UNTRUSTED_FORWARDING_LOG_INTERVAL_MS`] old (or there was none), and then
/// records `now_ms` as the last; one caller wins when several race.
fn claim_untrusted_forwarding_log_turn(logged_at_ms: &AtomicU64, now_ms: u64) -> bool {
    let last = logged_at_ms.load(Ordering::Relaxed);
    (last == 0 || now_ms.saturating_sub(last) >= UNTRUSTED_FORWARDING_LOG_INTERVAL_MS)
        && logged_at_ms.compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// The client address: the peer, or, behind trusted proxies, the right-most untrusted forwarded address.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_proxies: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| is_trusted_proxy(ip, trusted_proxies);
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    // Walk from the nearest hop outwards; every trusted hop vouches for the one before it.
    let mut client = peer;
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return ip,
            // A hop that is not an address cannot be believed; the last trusted hop is the best we know.
            Err(_) => return client,
        }
    }
    client
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| *peer).ok_or_else(
                || GatewayError::Internal("the connection's peer address is missing".to_owned()),
            )?;
        Ok(identify_caller(&parts.headers, peer, &state.settings.auth, &state.access_directory))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_from_an_untrusted_peer_is_logged_at_most_once_a_minute() {
        let logged_at = AtomicU64::new(0);
        assert!(claim_untrusted_forwarding_log_turn(&logged_at, 1_000_000), "the first time is logged");
        assert!(!claim_untrusted_forwarding_log_turn(&logged_at, 1_000_001));
        assert!(!claim_untrusted_forwarding_log_turn(&logged_at, 1_059_999));
        assert!(
            claim_untrusted_forwarding_log_turn(&logged_at, 1_060_000),
            "a minute later it is logged again"
        );
        assert!(!claim_untrusted_forwarding_log_turn(&logged_at, 1_060_500));
    }

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().expect("header value"));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn loopback_only() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().expect("cidr"), "::1/128".parse().expect("cidr")]
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_identity_with_forwarded_headers() {
        let spoofed = headers(&["1.2.3.4"]);
        assert_eq!(client_ip(&spoofed, ip("203.0.113.9"), &loopback_only()), ip("203.0.113.9"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_address_counts() {
        // The client claims 1.2.3.4; nginx appends the address it saw, 198.51.100.7.
        let forwarded = headers(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(client_ip(&forwarded, ip("127.0.0.1"), &loopback_only()), ip("198.51.100.7"));
        let chained = headers(&["1.2.3.4", "198.51.100.7, 127.0.0.2"]);
        assert_eq!(client_ip(&chained, ip("127.0.0.1"), &loopback_only()), ip("198.51.100.7"));
        assert_eq!(client_ip(&HeaderMap::new(), ip("127.0.0.1"), &loopback_only()), ip("127.0.0.1"));
        let garbage = headers(&["1.2.3.4, not-an-ip"]);
        assert_eq!(client_ip(&garbage, ip("127.0.0.1"), &loopback_only()), ip("127.0.0.1"));
    }

    #[test]
    fn mapped_ipv6_addresses_are_the_same_caller_as_ipv4() {
        assert_eq!(
            CallerIdentity::from_client_ip(ip("::ffff:10.1.2.3"), 128),
            CallerIdentity::from_client_ip(ip("10.1.2.3"), 128)
        );
        assert_eq!(CallerIdentity::from_client_ip(ip("10.1.2.3"), 128).as_str(), "ip:10.1.2.3");
    }

    #[test]
    fn ipv6_callers_in_one_network_are_one_identity() {
        let home = |address| CallerIdentity::from_client_ip(ip(address), 64);
        assert_eq!(home("2001:db8:1:2::1"), home("2001:db8:1:2:ffff:ffff:ffff:fffe"));
        assert_eq!(home("2001:db8:1:2:aaaa::9").as_str(), "ip:2001:db8:1:2::/64");
        assert_ne!(home("2001:db8:1:2::1"), home("2001:db8:1:3::1"), "the next /64 is someone else");
        // The prefix is configurable; 128 keeps every address apart.
        let apart = |address| CallerIdentity::from_client_ip(ip(address), 128);
        assert_ne!(apart("2001:db8::1"), apart("2001:db8::2"));
        assert_eq!(apart("2001:db8::1").as_str(), "ip:2001:db8::1");
        let wide = |address| CallerIdentity::from_client_ip(ip(address), 48);
        assert_eq!(wide("2001:db8:1:2::1"), wide("2001:db8:1:ffff::1"));
    }

    #[test]
    fn ipv4_and_mapped_ipv4_callers_are_one_identity_per_address_whatever_the_ipv6_prefix() {
        let caller = |address| CallerIdentity::from_client_ip(ip(address), 64);
        assert_eq!(caller("::ffff:10.1.2.3").as_str(), "ip:10.1.2.3");
        assert_ne!(caller("10.1.2.3"), caller("10.1.2.4"));
    }

    #[test]
    fn api_keys_come_from_bearer_or_x_api_key() {
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", "Bearer sk-one".parse().expect("value"));
        assert_eq!(presented_api_key(&bearer), Some("sk-one"));
        let mut plain = HeaderMap::new();
        plain.insert("x-api-key", "sk-two".parse().expect("value"));
        assert_eq!(presented_api_key(&plain), Some("sk-two"));
        assert_eq!(presented_api_key(&HeaderMap::new()), None);
    }
}
