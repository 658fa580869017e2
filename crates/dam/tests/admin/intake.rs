//! `POST /admin/intake/pause|resume`: the floodgate. Stored, announced and shown in the status; a paused gateway
//! answers new chats with 503 `maintenance` while queued chats still complete.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::StackOptions;

use crate::support::{AdminTestApp, dam_only, next_control_message};

#[tokio::test]
async fn pause_and_resume_are_stored_announced_and_shown_in_the_status() {
    let app = AdminTestApp::start(dam_only()).await;
    let mut control = app.control_messages().await;

    let (status, paused) = app.post("/admin/intake/pause", None).await;
    assert_eq!(status, 200);
    assert_eq!(paused["paused"], true);
    let paused_at = paused["paused_at_ms"].as_u64().expect("the pause's time");
    assert_eq!(next_control_message(&mut control).await, json!({"type": "intake_changed"}));
    let exists: bool = app.redis().await.exists(app.keys().intake_paused()).await.expect("exists");
    assert!(exists);
    // Pausing again keeps the first pause's time.
    let (_, again) = app.post("/admin/intake/pause", None).await;
    assert_eq!(again["paused_at_ms"], paused_at);
    let (_, report) = app.get("/admin/status").await;
    assert_eq!(report["intake"], json!({"paused": true, "paused_at_ms": paused_at}));

    let (status, resumed) = app.post("/admin/intake/resume", None).await;
    assert_eq!(status, 200);
    assert_eq!(resumed, json!({"paused": false, "paused_at_ms": null}));
    next_control_message(&mut control).await;
    assert_eq!(next_control_message(&mut control).await, json!({"type": "intake_changed"}));
    let exists: bool = app.redis().await.exists(app.keys().intake_paused()).await.expect("exists");
    assert!(!exists);
    assert_eq!(app.get("/admin/status").await.1["intake"]["paused"], false);
}

/// Cross-service: needs the gateway's admission to check `{prefix}intake:paused` (being built in `crates/gateway`).
#[tokio::test]
async fn pause_makes_new_chats_503_maintenance_while_a_queued_chat_still_completes() {
    let mut app = AdminTestApp::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let queued: Value = app
        .stack
        .post_chat(0, &json!({"message": "queued before the pause"}))
        .await
        .json()
        .await
        .expect("json");
    let events_url = queued["events_url"].as_str().expect("the chat was queued").to_owned();

    assert_eq!(app.post("/admin/intake/pause", None).await.0, 200);
    let refused = app.stack.post_chat(0, &json!({"message": "sent during the pause"})).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json::<Value>().await.expect("json")["error"]["code"], "maintenance");

    app.stack.add_worker();
    let events =
        app.stack.open_events(0, &events_url).await.collect_all_within(Duration::from_secs(20)).await;
    assert_eq!(events.last().expect("events").event, "done", "the queued chat carried on: {events:?}");

    assert_eq!(app.post("/admin/intake/resume", None).await.0, 200);
    let admitted = app.stack.post_chat(0, &json!({"message": "sent after the pause"})).await;
    assert_eq!(admitted.status(), 202);
}
