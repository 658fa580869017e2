//! Serves the bundled browser chat page when the gateway runs without nginx: `chat.html` at `/` and its stylesheet
//! and scripts under `/static/`, with the same headers nginx gives them (deploy/nginx/nginx.conf.template): a strict
//! Content-Security-Policy, `nosniff`, and a year of caching for an asset asked for with `?v=`.

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;

/// The page runs only its own script and style and talks only to its own origin; nothing may frame it. nginx sends
/// the same policy (a check in tests/browser compares the two).
pub const CHAT_PAGE_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE_HTML: &str = include_str!("../static/chat.html");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The files under `/static/`: name, content type, body. The scripts in the order the page runs them.
const STATIC_ASSETS: [(&str, &str, &str); 7] = [
    ("chat.css", "text/css; charset=utf-8", include_str!("../static/chat.css")),
    ("chat-view.js", JAVASCRIPT, include_str!("../static/chat-view.js")),
    ("chat-refusals.js", JAVASCRIPT, include_str!("../static/chat-refusals.js")),
    ("chat-conversation.js", JAVASCRIPT, include_str!("../static/chat-conversation.js")),
    ("chat-stream.js", JAVASCRIPT, include_str!("../static/chat-stream.js")),
    ("chat-turn.js", JAVASCRIPT, include_str!("../static/chat-turn.js")),
    ("chat.js", JAVASCRIPT, include_str!("../static/chat.js")),
];

/// A versioned asset (`?v=...`, the page names each with its content's digest) never changes; an unversioned
/// one may after a deploy.
const VERSIONED_ASSET_CACHING: &str = "public, max-age=31536000, immutable";
const UNVERSIONED_ASSET_CACHING: &str = "public, max-age=3600";

/// `GET /`: the page itself, revalidated on every load so a deploy shows at once.
pub async fn chat_page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CHAT_PAGE_CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    (headers, PAGE_HTML).into_response()
}

/// `GET /static/{name}`: the page's stylesheet and scripts.
pub async fn static_asset(
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, GatewayError> {
    let (_, content_type, body) = STATIC_ASSETS
        .iter()
        .find(|(asset_name, ..)| *asset_name == name)
        .ok_or(GatewayError::RouteNotFound)?;
    let caching = if asks_for_a_version(query.as_deref()) {
        VERSIONED_ASSET_CACHING
    } else {
        UNVERSIONED_ASSET_CACHING
    };
    let headers: [(HeaderName, HeaderValue); 3] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(caching)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    Ok((headers, *body).into_response())
}

/// True when the query has a non-empty `v` parameter, as nginx's `$arg_v` reads it.
fn asks_for_a_version(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.strip_prefix("v=").is_some_and(|version| !version.is_empty()))
}

/// The version the page must name for an asset: the first 12 hex digits of its SHA-256, so that
/// `sha256sum crates/gateway/static/chat.js | cut -c1-12` gives it too.
pub fn asset_version(body: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(body.as_bytes()))[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_each_asset_with_the_digest_of_its_content() {
        for (name, _, body) in STATIC_ASSETS {
            let reference = format!("/static/{name}?v={}", asset_version(body));
            assert!(
                PAGE_HTML.contains(&reference),
                "chat.html must load {reference} (the digest of the current {name}), or browsers keep a stale copy \
                 for a year"
            );
        }
    }

    /// nginx serves every file of the directory; a gateway alone only those it embeds.
    #[test]
    fn the_gateway_serves_every_file_beside_the_page() {
        let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/static");
        let mut on_disk: Vec<String> = std::fs::read_dir(directory)
            .expect("the static directory")
            .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name != "chat.html")
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = STATIC_ASSETS.iter().map(|(name, ..)| (*name).to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "STATIC_ASSETS must list each file of {directory} but chat.html");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let inline_script = PAGE_HTML.match_indices("<script").any(|(start, _)| {
            let tag_end = PAGE_HTML[start..].find('>').map_or(PAGE_HTML.len(), |end| start + end);
            !PAGE_HTML[start..tag_end].contains("src=")
        });
        assert!(!inline_script, "the CSP allows only script files from this origin");
        assert!(
            !PAGE_HTML.contains("<style") && !PAGE_HTML.contains(" style="),
            "the CSP allows only style files"
        );
        assert!(!has_event_handler_attribute(PAGE_HTML), "the CSP forbids inline event handlers");
    }

    fn has_event_handler_attribute(html: &str) -> bool {
        ["onclick=", "onload=", "onsubmit=", "oninput=", "onkeydown=", "onerror="]
            .iter()
            .any(|attribute| html.contains(attribute))
    }

    #[test]
    fn only_a_non_empty_v_parameter_counts_as_a_version() {
        assert!(asks_for_a_version(Some("v=abc")));
        assert!(asks_for_a_version(Some("x=1&v=abc")));
        assert!(!asks_for_a_version(Some("v=")));
        assert!(!asks_for_a_version(Some("version=1")));
        assert!(!asks_for_a_version(None));
    }
}
