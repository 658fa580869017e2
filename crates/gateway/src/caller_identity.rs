//! Who is calling: the identity a chat is charged to and limited by. Today the client's socket address; API keys
//! and trusted-proxy `X-Forwarded-For` handling refine it without changing its callers.

use std::net::{IpAddr, SocketAddr};

/// A caller's identity as stored in job envelopes and limit keys, e.g. `ip:203.0.113.7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerIdentity(String);

impl CallerIdentity {
    pub fn from_client_ip(ip: IpAddr) -> Self {
        // IPv4-mapped IPv6 addresses are the same caller as their IPv4 form.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        Self(format!("ip:{ip}"))
    }

    pub fn from_peer(peer: SocketAddr) -> Self {
        Self::from_client_ip(peer.ip())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_addresses_are_the_same_caller_as_ipv4() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        let plain: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(CallerIdentity::from_client_ip(mapped), CallerIdentity::from_client_ip(plain));
        assert_eq!(CallerIdentity::from_client_ip(plain).as_str(), "ip:10.1.2.3");
    }
}
