//! The admin token: every admin route needs it, a missing and a wrong one get the same 401, health and metrics
//! stay open, and a dam without a token refuses to listen beyond loopback.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use test_support::spawn_dam;
use tokio::net::TcpListener;

use crate::support::{ADMIN_TOKEN, AdminTestApp, assert_error, dam_only};

/// One request per admin route, with a valid body where one is needed.
fn every_admin_route() -> Vec<(Method, String, Option<serde_json::Value>)> {
    let job_id = "0192f0c1-7b7e-7cc0-8b5e-3f7d2a9b1c00";
    [
        (Method::GET, "/admin/status", None),
        (Method::GET, "/admin/limits", None),
        (Method::PUT, "/admin/limits", Some(json!({"max_queue_depth": 7}))),
        (Method::POST, "/admin/intake/pause", None),
        (Method::POST, "/admin/intake/resume", None),
        (Method::GET, "/admin/dead-letters", None),
        (Method::POST, "/admin/dead-letters/replay", None),
        (Method::POST, "/admin/dead-letters/{job_id}/replay", None),
        (Method::DELETE, "/admin/dead-letters/{job_id}", None),
        (Method::GET, "/admin/keys", None),
        (Method::PUT, "/admin/keys/sk-test-0123456789abcdef", Some(json!({"tier": "premium"}))),
        (Method::DELETE, "/admin/keys/sk-test-0123456789abcdef", None),
        (Method::POST, "/admin/blocks", Some(json!({"identity": "ip:10.0.0.1", "ttl_s": 60, "reason": "x"}))),
        (Method::GET, "/admin/blocks", None),
        (Method::DELETE, "/admin/blocks/ip:10.0.0.1", None),
    ]
    .into_iter()
    .map(|(method, path, body)| (method, path.replace("{job_id}", job_id), body))
    .collect()
}

#[tokio::test]
async fn missing_and_wrong_tokens_get_the_same_401_on_every_admin_route_and_change_nothing() {
    let app = AdminTestApp::start(dam_only()).await;
    for (method, path, body) in every_admin_route() {
        let missing = app.request(method.clone(), &path, None, body.clone()).await;
        let wrong = app.request(method.clone(), &path, Some("not-the-token"), body.clone()).await;
        let almost =
            app.request(method.clone(), &path, Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]), body).await;
        assert_error(&missing, 401, "unauthorized");
        assert_eq!(missing, wrong, "{method} {path}: no hint whether the token was missing or wrong");
        assert_eq!(missing, almost, "{method} {path}");
    }
    // Another scheme is no token either.
    let basic = app
        .stack
        .http
        .get(format!("{}/admin/status", app.dam_url()))
        .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("get");
    assert_eq!(basic.status(), 401);
    assert_eq!(basic.headers()["www-authenticate"], "Bearer");

    // Nothing the refused requests asked for happened.
    let mut redis = app.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.keys().prefix()))
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert!(keys.is_empty(), "refused requests left no trace: {keys:?}");
}

#[tokio::test]
async fn the_right_token_opens_the_admin_api_and_health_and_metrics_need_none() {
    let app = AdminTestApp::start(dam_only()).await;
    assert_eq!(app.get("/admin/status").await.0, 200);
    let lowercase_scheme = app
        .stack
        .http
        .get(format!("{}/admin/limits", app.dam_url()))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("get");
    assert_eq!(lowercase_scheme.status(), 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = app.stack.http.get(format!("{}{path}", app.dam_url())).send().await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn without_a_token_the_dam_refuses_to_listen_beyond_loopback() {
    let app = AdminTestApp::start(dam_only()).await;
    let mut settings = app.stack.settings.clone();
    settings.dam.admin_token = None;
    let everywhere = TcpListener::bind("0.0.0.0:0").await.expect("bind all addresses");

    let outcome =
        tokio::time::timeout(Duration::from_secs(5), dam::run(everywhere, settings, std::future::pending()))
            .await
            .expect("the dam refuses at once instead of serving");

    let error = outcome.expect_err("no token and not loopback");
    assert!(matches!(error, dam::StartupError::NoTokenBeyondLoopback { .. }), "{error}");
    assert!(error.to_string().contains("DAM_DAM__ADMIN_TOKEN"), "{error}");
}

#[tokio::test]
async fn without_a_token_on_loopback_the_admin_api_is_open_to_local_callers() {
    let app = AdminTestApp::start(dam_only()).await;
    let mut settings = app.stack.settings.clone();
    settings.dam.admin_token = None;
    let open_dam = spawn_dam(settings).await;
    let response = app.stack.http.get(format!("{}/admin/status", open_dam.url())).send().await.expect("get");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let app = AdminTestApp::start(dam_only()).await;
    assert_error(&app.get("/admin/nowhere").await, 404, "route_not_found");
    assert_error(&app.get("/nowhere").await, 404, "route_not_found");
    assert_error(&app.admin(Method::DELETE, "/admin/status", None).await, 405, "method_not_allowed");
}
