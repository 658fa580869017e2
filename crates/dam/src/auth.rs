//! Who may use the admin API: whoever presents the one bearer token from the environment, compared in constant
//! time; never a web page of another site (cross-site requests and bodies not declared JSON are refused). Also the
//! startup rule: without a token the dam serves only on loopback. Nothing else is decided here.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use protocol::settings::{DamSettings, ExposeSecret};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app_state::AdminState;
use crate::error::AdminError;
use crate::startup_error::StartupError;

/// The admin token, kept only as its SHA-256 so comparisons take the same time whatever the presented token's
/// length or content.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AdminToken([redacted])")
    }
}

impl AdminToken {
    /// The configured token; a blank one counts as none, so `DAM_DAM__ADMIN_TOKEN=` cannot open the API.
    pub fn from_settings(settings: &DamSettings) -> Option<Self> {
        let token = settings.admin_token.as_ref()?.expose_secret().trim();
        (!token.is_empty()).then(|| Self { digest: Sha256::digest(token.as_bytes()).into() })
    }

    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }
}

/// Refuses an admin API without a token on anything but loopback: it would let anyone who reaches the port
/// steer the whole system.
pub fn ensure_safe_to_serve(token: Option<&AdminToken>, address: SocketAddr) -> Result<(), StartupError> {
    if token.is_none() && !address.ip().is_loopback() {
        return Err(StartupError::NoTokenBeyondLoopback { address });
    }
    Ok(())
}

/// Middleware in front of every `/admin` route: 401 `unauthorized` unless the request carries the token.
pub async fn require_admin_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    if let Some(token) = &state.admin_token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        // The comparison runs even for a missing header, so both cases cost the same.
        if !token.matches(presented) {
            return Err(AdminError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Middleware in front of every `/admin` route: refuses what a web page open on the operator's machine could send.
/// Without a token (the `make run` default) the port is open to the browser too: a page of any site can send
/// simple cross-site requests (forms, `text/plain` fetches) that need no CORS permission. So a request that
/// changes state is refused with 403 `cross_origin_refused` when it says it comes from another site
/// (`Sec-Fetch-Site: cross-site`, or an `Origin` whose host and port are not the `Host`'s), and with 415
/// `unsupported_media_type` when it carries a body not declared `application/json` (a route without a body may
/// send no `Content-Type`, as the CLI does). And without a token any request whose `Host` is not a loopback name
/// is refused: a page whose name was rebound to 127.0.0.1 (DNS rebinding) sends its own name as `Host`, and
/// `Origin` then matches it.
pub async fn refuse_cross_site_requests(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let headers = request.headers();
    if state.admin_token.is_none() {
        ensure_loopback_host(headers)?;
    }
    if changes_state(request.method()) {
        ensure_same_site(headers)?;
        ensure_json_body(headers)?;
    }
    Ok(next.run(request).await)
}

/// Every method but the safe ones (RFC 9110 §9.2.1) may change something.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|value| value.to_str().unwrap_or("\u{fffd}"))
}

/// A request without a `Host` (HTTP/1.0 tools) comes from no browser, so it passes.
fn ensure_loopback_host(headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(host) = header_text(headers, header::HOST) else {
        return Ok(());
    };
    let loopback = Authority::from_str(host).is_ok_and(|authority| is_loopback_name(authority.host()));
    if loopback {
        Ok(())
    } else {
        Err(AdminError::CrossOriginRefused(format!(
            "without an admin token the dam answers only to a loopback Host (localhost, 127.0.0.1, [::1]), not {host:?}"
        )))
    }
}

/// `localhost`, `*.localhost` (which browsers always resolve to loopback) or a loopback address.
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let address = host.trim_start_matches('[').trim_end_matches(']');
    IpAddr::from_str(address).is_ok_and(|address| address.is_loopback())
}

fn ensure_same_site(headers: &HeaderMap) -> Result<(), AdminError> {
    if header_text(headers, header::HeaderName::from_static("sec-fetch-site"))
        .is_some_and(|site| site.trim().eq_ignore_ascii_case("cross-site"))
    {
        return Err(AdminError::CrossOriginRefused("the browser says this request is cross-site".to_owned()));
    }
    let Some(origin) = header_text(headers, header::ORIGIN) else {
        // Browsers send `Origin` with every cross-origin request that may change state; tools send none.
        return Ok(());
    };
    let host = header_text(headers, header::HOST).unwrap_or("");
    if origin_matches_host(origin, host) {
        Ok(())
    } else {
        Err(AdminError::CrossOriginRefused(format!("Origin {origin:?} is not this service ({host:?})")))
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as the `Host` header. An opaque
/// origin (`null`: sandboxed frames, `file:` pages) matches nothing.
fn origin_matches_host(origin: &str, host: &str) -> bool {
    let (Ok(origin), Ok(host)) = (Uri::from_str(origin.trim()), Authority::from_str(host.trim())) else {
        return false;
    };
    let (Some(scheme), Some(origin_authority)) = (origin.scheme_str(), origin.authority()) else {
        return false;
    };
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    origin_authority.host().eq_ignore_ascii_case(host.host())
        && origin_authority.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port)
}

fn ensure_json_body(headers: &HeaderMap) -> Result<(), AdminError> {
    match header_text(headers, header::CONTENT_TYPE) {
        Some(content_type) if is_json_media_type(content_type) => Ok(()),
        Some(content_type) => Err(AdminError::UnsupportedMediaType(format!("got {content_type:?}"))),
        None if has_body(headers) => {
            Err(AdminError::UnsupportedMediaType("the body has no Content-Type".to_owned()))
        }
        None => Ok(()),
    }
}

/// `application/json`, with any parameters (`; charset=utf-8`), in any case.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || header_text(headers, header::CONTENT_LENGTH).is_some_and(|length| length.trim() != "0")
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::settings::SecretString;

    fn settings_with(token: Option<&str>) -> DamSettings {
        DamSettings { admin_token: token.map(SecretString::from), ..DamSettings::default() }
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = AdminToken::from_settings(&settings_with(Some("s3cret-token"))).expect("a token");
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-toke"));
        assert!(!token.matches("s3cret-token "));
        assert!(!token.matches(""));
    }

    #[test]
    fn a_blank_token_counts_as_none() {
        assert!(AdminToken::from_settings(&settings_with(Some("  "))).is_none());
        assert!(AdminToken::from_settings(&settings_with(None)).is_none());
    }

    #[test]
    fn without_a_token_only_loopback_is_allowed() {
        let token = AdminToken::from_settings(&settings_with(Some("t")));
        let public: SocketAddr = "0.0.0.0:9100".parse().expect("address");
        let loopback: SocketAddr = "127.0.0.1:9100".parse().expect("address");
        let loopback_v6: SocketAddr = "[::1]:9100".parse().expect("address");
        assert!(ensure_safe_to_serve(None, public).is_err());
        assert!(ensure_safe_to_serve(None, loopback).is_ok());
        assert!(ensure_safe_to_serve(None, loopback_v6).is_ok());
        assert!(ensure_safe_to_serve(token.as_ref(), public).is_ok());
    }

    #[test]
    fn an_origin_matches_only_the_same_host_and_port() {
        assert!(origin_matches_host("http://127.0.0.1:9100", "127.0.0.1:9100"));
        assert!(origin_matches_host("http://LocalHost", "localhost:80"));
        assert!(origin_matches_host("http://[::1]:9100", "[::1]:9100"));
        assert!(!origin_matches_host("http://127.0.0.1:9101", "127.0.0.1:9100"));
        assert!(!origin_matches_host("https://127.0.0.1", "127.0.0.1:80"), "443 is not 80");
        assert!(!origin_matches_host("null", "127.0.0.1:9100"));
        assert!(!origin_matches_host("http://evil.example", ""));
        assert!(!origin_matches_host("file:///tmp/page.html", "127.0.0.1:9100"));
    }

    #[test]
    fn loopback_names_are_localhost_and_loopback_addresses() {
        for name in ["localhost", "dam.localhost", "127.0.0.1", "127.3.4.5", "[::1]", "LOCALHOST."] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in ["evil.example", "localhost.evil.example", "10.0.0.1", "[::2]", ""] {
            assert!(!is_loopback_name(name), "{name}");
        }
    }

    #[test]
    fn json_is_recognised_with_parameters_and_in_any_case() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/json-patch+json"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
    }

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
