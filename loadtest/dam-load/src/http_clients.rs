//! The HTTP/1.1 clients the chats use: one keep-alive connection pool per local source address
//! (127.0.0.1, 127.0.0.2, ...), so thousands of connections to one port never run out of ephemeral ports, and
//! the loopback-only target they all talk to.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::LoadError;

/// Most source addresses: 127.0.0.1 to 127.0.0.254.
pub const MAX_SOURCE_ADDRESSES: u8 = 254;
/// An idle pooled connection is closed after this long; nginx and the gateways keep theirs for 60 s and more.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type ChatHttpClient = Client<HttpConnector, Full<Bytes>>;

/// `http://127.x.y.z:port` with an optional path prefix, checked to be on this machine.
#[derive(Debug, Clone)]
pub struct LoopbackTarget {
    /// `127.0.0.1:8080`.
    authority: String,
    /// The base URL's path without its trailing slash, put before every route (`""` for most targets).
    path_prefix: String,
}

impl LoopbackTarget {
    /// Accepts `http://` URLs whose host is `localhost` or an address in 127.0.0.0/8, and nothing else: load
    /// must stay on loopback.
    pub fn parse(url: &str) -> Result<Self, LoadError> {
        let invalid =
            |reason: &str| LoadError::InvalidTarget { url: url.to_owned(), reason: reason.to_owned() };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(LoadError::TargetNotLoopback { url: url.to_owned() });
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let address = if host == "localhost" {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse::<Ipv4Addr>().map_err(|_| LoadError::TargetNotLoopback { url: url.to_owned() })?
        };
        if !address.is_loopback() {
            return Err(LoadError::TargetNotLoopback { url: url.to_owned() });
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self {
            authority: format!("{address}:{port}"),
            path_prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The full URI of a route (`/v1/chat/completions`) or of a path the server gave (`/api/chats/…/events`).
    pub fn uri(&self, path: &str) -> Result<Uri, LoadError> {
        let full = format!("http://{}{}{}", self.authority, self.path_prefix, path);
        full.parse().map_err(|_| LoadError::InvalidTarget { url: full, reason: "not a URL".to_owned() })
    }

    pub fn describe(&self) -> String {
        format!("http://{}{}", self.authority, self.path_prefix)
    }
}

/// One pool per source address, handed out in turn so connections spread evenly over them.
#[derive(Debug)]
pub struct SourceAddressClients {
    clients: Vec<ChatHttpClient>,
    next_client: AtomicUsize,
}

impl SourceAddressClients {
    /// Pools bound to 127.0.0.1 .. 127.0.0.`source_address_count`.
    pub fn new(source_address_count: u8) -> Result<Self, LoadError> {
        if source_address_count == 0 || source_address_count > MAX_SOURCE_ADDRESSES {
            return Err(LoadError::InvalidArgument(format!(
                "--source-addresses must be 1..={MAX_SOURCE_ADDRESSES}, got {source_address_count}"
            )));
        }
        let clients = (1..=source_address_count)
            .map(|last_octet| {
                let mut connector = HttpConnector::new();
                connector.set_local_address(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet))));
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_max_idle_per_host(usize::MAX)
                    .build(connector)
            })
            .collect();
        Ok(Self { clients, next_client: AtomicUsize::new(0) })
    }

    /// The next pool in turn; one chat keeps its pool for all its requests.
    pub fn next_client(&self) -> &ChatHttpClient {
        let index = self.next_client.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted_with_their_path_prefix() {
        let target = LoopbackTarget::parse("http://127.0.0.1:9090/").expect("loopback");
        assert_eq!(target.uri("/v1/models").expect("uri").to_string(), "http://127.0.0.1:9090/v1/models");
        let prefixed = LoopbackTarget::parse("http://localhost:8080/base/").expect("localhost");
        assert_eq!(
            prefixed.uri("/api/chats").expect("uri").to_string(),
            "http://127.0.0.1:8080/base/api/chats"
        );
    }

    #[test]
    fn targets_off_this_machine_are_refused() {
        for url in ["http://10.0.0.1:80", "http://example.com", "https://127.0.0.1:443", "http://[::1]:80"] {
            assert!(
                matches!(LoopbackTarget::parse(url), Err(LoadError::TargetNotLoopback { .. })),
                "{url} was accepted"
            );
        }
    }
}
