//! The admin API refuses what a web page open on the operator's machine could send it: cross-site requests
//! (an `Origin` naming another host, `Sec-Fetch-Site: cross-site`), bodies that are not declared JSON (forms,
//! `text/plain`) and, without a token, a `Host` that is not loopback (DNS rebinding). The CLI's requests pass.

use redis::AsyncCommands;
use reqwest::header::{CONTENT_TYPE, HOST, ORIGIN};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use test_support::{ServiceHandle, TestStack, spawn_dam};

use crate::support::{AdminTestApp, assert_error, dam_only};

/// The `make run` default: a dam on loopback with no admin token.
struct TokenlessDam {
    stack: TestStack,
    dam: ServiceHandle,
}

impl TokenlessDam {
    async fn start() -> Self {
        let stack = TestStack::start_with(dam_only(), |settings| settings.dam.admin_token = None).await;
        let dam = spawn_dam(stack.settings.clone()).await;
        Self { stack, dam }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.stack.http.request(method, format!("{}{path}", self.dam.url()))
    }

    /// `host:port` as the dam's own URL names it, which is what a browser on that page sends as `Host`.
    fn authority(&self) -> String {
        self.dam.url().trim_start_matches("http://").trim_end_matches('/').to_owned()
    }

    async fn intake_paused(&self) -> bool {
        let mut redis = self.stack.redis_connection().await;
        redis.exists(self.stack.keys().intake_paused()).await.expect("exists")
    }

    async fn stored_limits(&self) -> Option<String> {
        let mut redis = self.stack.redis_connection().await;
        redis.get(self.stack.keys().live_limits()).await.expect("get")
    }
}

async fn answer(request: RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the request reaches the dam");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON answer, got {status}: {text}")))
}

#[tokio::test]
async fn a_form_post_from_another_site_cannot_pause_intake() {
    let dam = TokenlessDam::start().await;
    let form = dam
        .request(Method::POST, "/admin/intake/pause")
        .header(ORIGIN, "https://evil.example")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("paused=1");
    assert_error(&answer(form).await, 403, "cross_origin_refused");
    assert!(!dam.intake_paused().await, "a refused request changes nothing");
}

#[tokio::test]
async fn an_origin_on_another_port_of_the_same_host_is_another_site() {
    let dam = TokenlessDam::start().await;
    let other_port = dam
        .request(Method::POST, "/admin/intake/pause")
        .header(ORIGIN, "http://127.0.0.1:1")
        .header(CONTENT_TYPE, "application/json")
        .body("{}");
    assert_error(&answer(other_port).await, 403, "cross_origin_refused");
    let opaque = dam.request(Method::POST, "/admin/intake/pause").header(ORIGIN, "null");
    assert_error(&answer(opaque).await, 403, "cross_origin_refused");
    assert!(!dam.intake_paused().await);
}

#[tokio::test]
async fn a_cross_site_fetch_without_an_origin_is_refused_by_its_fetch_metadata() {
    let dam = TokenlessDam::start().await;
    let request = dam.request(Method::POST, "/admin/intake/pause").header("sec-fetch-site", "cross-site");
    assert_error(&answer(request).await, 403, "cross_origin_refused");
    assert!(!dam.intake_paused().await);
}

#[tokio::test]
async fn a_text_plain_body_is_refused_with_415_and_changes_no_limits() {
    let dam = TokenlessDam::start().await;
    let plain = dam
        .request(Method::PUT, "/admin/limits")
        .header(CONTENT_TYPE, "text/plain")
        .body(r#"{"max_queue_depth": 1}"#);
    assert_error(&answer(plain).await, 415, "unsupported_media_type");
    let undeclared = dam.request(Method::PUT, "/admin/limits").body(r#"{"max_queue_depth": 1}"#);
    assert_error(&answer(undeclared).await, 415, "unsupported_media_type");
    assert_eq!(dam.stored_limits().await, None);

    // A route that takes no body still refuses a form, which a page could send it without asking.
    let form = dam
        .request(Method::POST, "/admin/intake/pause")
        .header(CONTENT_TYPE, "multipart/form-data; boundary=x")
        .body("--x--");
    assert_error(&answer(form).await, 415, "unsupported_media_type");
    assert!(!dam.intake_paused().await);
}

#[tokio::test]
async fn a_page_served_from_another_name_for_loopback_is_refused_without_a_token() {
    let dam = TokenlessDam::start().await;
    let port = dam.authority().rsplit_once(':').expect("a port").1.to_owned();
    // DNS rebinding: evil.example resolves to 127.0.0.1, so Origin and Host agree, but Host is no loopback name.
    let rebound = dam
        .request(Method::POST, "/admin/intake/pause")
        .header(HOST, format!("evil.example:{port}"))
        .header(ORIGIN, format!("http://evil.example:{port}"));
    assert_error(&answer(rebound).await, 403, "cross_origin_refused");
    let read = dam.request(Method::GET, "/admin/keys").header(HOST, format!("evil.example:{port}"));
    assert_error(&answer(read).await, 403, "cross_origin_refused");
    assert!(!dam.intake_paused().await);
}

#[tokio::test]
async fn same_origin_json_and_the_clis_requests_are_served() {
    let dam = TokenlessDam::start().await;
    let same_origin = dam
        .request(Method::PUT, "/admin/limits")
        .header(ORIGIN, format!("http://{}", dam.authority()))
        .header("sec-fetch-site", "same-origin")
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(r#"{"max_queue_depth": 7}"#);
    let (status, body) = answer(same_origin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limits"]["max_queue_depth"], 7);
    let localhost = dam
        .request(Method::POST, "/admin/intake/resume")
        .header(HOST, dam.authority().replace("127.0.0.1", "localhost"));
    assert_eq!(answer(localhost).await.0, 200, "localhost is loopback too");

    // The CLI's client: JSON bodies, no Origin, no fetch metadata.
    let client = dam::admin_client::AdminClient::new(&dam.dam.url(), None).expect("client");
    assert!(client.pause_intake().await.expect("pause").paused);
    assert!(dam.intake_paused().await);
    let blocked = client
        .block(&dam::blocks_admin::BlockRequest {
            identity: "ip:203.0.113.9".to_owned(),
            ttl_s: 60,
            reason: "abuse".to_owned(),
        })
        .await
        .expect("block");
    assert_eq!(blocked.identity, "ip:203.0.113.9");
}

#[tokio::test]
async fn with_a_token_cross_site_requests_are_still_refused_but_any_host_name_may_be_used() {
    let app = AdminTestApp::start(dam_only()).await;
    let cross_site = app
        .stack
        .http
        .post(format!("{}/admin/intake/pause", app.dam_url()))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header(ORIGIN, "https://evil.example");
    assert_error(&answer(cross_site).await, 403, "cross_origin_refused");
    let port = app.dam_url().trim_end_matches('/').rsplit_once(':').expect("a port").1.to_owned();
    let named = app
        .stack
        .http
        .get(format!("{}/admin/keys", app.dam_url()))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header(HOST, format!("dam.internal.example:{port}"));
    assert_eq!(answer(named).await.0, 200, "a token-protected dam may sit behind any name");
}
