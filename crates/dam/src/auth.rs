//! Who may use the admin API: whoever presents the one bearer token from the environment, compared in constant
//! time. Also the startup rule: without a token the dam serves only on loopback. Nothing else is decided here.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use protocol::settings::DamSettings;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app_state::AdminState;
use crate::error::AdminError;

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
pub fn ensure_safe_to_serve(token: Option<&AdminToken>, address: SocketAddr) -> Result<(), AdminError> {
    if token.is_none() && !address.ip().is_loopback() {
        return Err(AdminError::UnsafeStartup(format!(
            "no admin token is set (DAM_DAM__ADMIN_TOKEN) and the dam would listen on {address}, which is not \
             loopback; set a token or listen on 127.0.0.1"
        )));
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
        DamSettings { admin_token: token.map(SecretString::new), ..DamSettings::default() }
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
    fn the_bearer_scheme_is_read_case_insensitively() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
