//! `GET/PUT /admin/limits`: the limits in force, partial updates stored and announced, refusals naming the field,
//! and a change taking effect on a running gateway within a second.

use std::time::Duration;

use protocol::limits::Limits;
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::StackOptions;

use crate::support::{AdminTestApp, assert_error, dam_only, next_control_message};

#[tokio::test]
async fn the_configured_limits_are_in_force_until_an_operator_changes_them() {
    let app = AdminTestApp::start(dam_only()).await;
    let (status, body) = app.get("/admin/limits").await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "settings");
    let limits: Limits = serde_json::from_value(body["limits"].clone()).expect("limits");
    assert_eq!(limits, app.stack.settings.limits);
}

#[tokio::test]
async fn a_partial_update_changes_only_what_it_names_is_stored_and_is_announced() {
    let app = AdminTestApp::start(dam_only()).await;
    let mut control = app.control_messages().await;

    let (status, body) =
        app.put("/admin/limits", json!({"tiers": {"premium": {"burst": 9}}, "max_queue_depth": 7})).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "live");
    let mut expected = app.stack.settings.limits.clone();
    expected.tiers.premium.burst = 9;
    expected.max_queue_depth = 7;
    assert_eq!(serde_json::from_value::<Limits>(body["limits"].clone()).expect("limits"), expected);
    assert_eq!(next_control_message(&mut control).await, json!({"type": "limits_changed"}));
    let stored: String = app.redis().await.get(app.keys().live_limits()).await.expect("stored limits");
    assert_eq!(Limits::decode(&stored).expect("decodes"), expected);
    // The next change builds on this one.
    let (_, after) = app.put("/admin/limits", json!({"standard_weight": 2})).await;
    assert_eq!(after["limits"]["tiers"]["premium"]["burst"], 9);
    assert_eq!(after["limits"]["standard_weight"], 2);
    assert_eq!(app.get("/admin/limits").await.1, after);
}

#[tokio::test]
async fn invalid_limits_get_a_400_naming_the_field_and_change_nothing() {
    let app = AdminTestApp::start(dam_only()).await;
    let cases = [
        (json!({"tiers": {"standard": {"rate_per_second": -1}}}), "tiers.standard.rate_per_second"),
        (json!({"tiers": {"premium": {"burst": 0}}}), "tiers.premium.burst"),
        (json!({"max_queue_depth": "many"}), "max_queue_depth"),
        (json!({"max_qeue_depth": 3}), "max_qeue_depth"),
        (json!({"llm": {"max_requests_per_second": 0}}), "llm.max_requests_per_second"),
        (json!([1, 2]), "(body)"),
    ];
    for (patch, field) in cases {
        let answer = app.put("/admin/limits", patch.clone()).await;
        assert_error(&answer, 400, "invalid_limits");
        assert_eq!(answer.1["error"]["field"], field, "{patch}");
        assert!(answer.1["error"]["message"].as_str().expect("message").contains(field), "{}", answer.1);
    }
    let not_json = app
        .stack
        .http
        .put(format!("{}/admin/limits", app.dam_url()))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"max_queue_depth\": ")
        .send()
        .await
        .expect("put");
    assert_eq!(not_json.status(), 400);
    assert_eq!(not_json.json::<Value>().await.expect("json")["error"]["code"], "invalid_json");
    let stored: Option<String> = app.redis().await.get(app.keys().live_limits()).await.expect("get");
    assert_eq!(stored, None, "refused changes store nothing");
}

/// Cross-service: needs the gateway to read `{prefix}limits` (being built in `crates/gateway`).
#[tokio::test]
async fn a_limit_changed_through_the_api_takes_effect_on_a_running_gateway_without_a_restart() {
    let app = AdminTestApp::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    // The running gateway admits freely under the test stack's generous limits.
    for index in 0..3 {
        let response = app.stack.post_chat(0, &json!({"message": format!("before {index}")})).await;
        assert_eq!(response.status(), 202);
    }

    let (status, body) = app
        .put(
            "/admin/limits",
            json!({"tiers": {"anonymous": {"burst": 1, "rate_per_second": 0.001, "max_active_chats": 1000}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Once the gateway has read the new limits, one chat fits the new burst of 1 and the next is over the rate.
    app.stack
        .wait_until("the running gateway refuses at the new rate", Duration::from_secs(10), || async {
            let response = app.stack.post_chat(0, &json!({"message": "after"})).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            assert!(status == 202 || (status, code.as_str()) == (429, "rate_limited"), "{status} {body}");
            status == 429
        })
        .await;
}
