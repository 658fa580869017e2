//! `/admin/keys`: keys stored hashed, listed without the key, updated field by field, deleted by the key or its
//! hash, refused with the field named, and every change announced.

use protocol::access::{ApiKeyRecord, api_key_hash, api_key_identity};
use redis::AsyncCommands;
use serde_json::json;

use crate::support::{AdminTestApp, assert_error, dam_only, next_control_message};

const API_KEY: &str = "sk-test-acme-0123456789";

#[tokio::test]
async fn a_key_is_stored_hashed_listed_without_the_key_and_announced() {
    let app = AdminTestApp::start(dam_only()).await;
    let mut control = app.control_messages().await;

    let (status, saved) = app
        .put(&format!("/admin/keys/{API_KEY}"), json!({"name": "acme", "tier": "premium", "burst": 9}))
        .await;

    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["created"], true);
    let hash = api_key_hash(API_KEY);
    assert_eq!(saved["key"]["hash_prefix"], hash[..12]);
    assert_eq!(saved["key"]["identity"], api_key_identity(&hash));
    assert_eq!(next_control_message(&mut control).await, json!({"type": "api_keys_changed"}));
    let stored: String =
        app.redis().await.hget(app.keys().api_keys(), &hash).await.expect("stored under its hash");
    let record = ApiKeyRecord::decode(&stored).expect("a record");
    assert_eq!((record.name.as_str(), record.burst, record.rate_per_second), ("acme", Some(9), None));

    let (status, listing) = app.get("/admin/keys").await;
    assert_eq!(status, 200);
    assert_eq!(listing["keys"][0]["record"]["name"], "acme");
    assert_eq!(listing["keys"][0]["record"]["tier"], "premium");
    let everything = format!("{listing}{saved}");
    assert!(
        !everything.contains(API_KEY) && !everything.contains(&hash),
        "never the key, nor its whole hash"
    );
}

#[tokio::test]
async fn an_update_keeps_what_it_does_not_name_and_null_removes_an_override() {
    let app = AdminTestApp::start(dam_only()).await;
    let path = format!("/admin/keys/{API_KEY}");
    app.put(&path, json!({"name": "acme", "tier": "standard", "burst": 9, "rate_per_second": 2.5})).await;

    let (status, saved) =
        app.put(&path, json!({"tier": "premium", "burst": null, "daily_token_budget": 1000})).await;

    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["created"], false);
    let record = &saved["key"]["record"];
    assert_eq!(record["name"], "acme");
    assert_eq!(record["tier"], "premium");
    assert_eq!(record["rate_per_second"], 2.5);
    assert_eq!(record["daily_token_budget"], 1000);
    assert!(record.get("burst").is_none(), "{record}");
    assert_eq!(app.get("/admin/keys").await.1["keys"].as_array().expect("keys").len(), 1);
}

#[tokio::test]
async fn a_key_is_deleted_by_the_key_itself_or_by_its_full_hash() {
    let app = AdminTestApp::start(dam_only()).await;
    let other_key = "sk-test-other-9876543210";
    app.put(&format!("/admin/keys/{API_KEY}"), json!({"tier": "premium"})).await;
    app.put(&format!("/admin/keys/{other_key}"), json!({"tier": "standard"})).await;
    let mut control = app.control_messages().await;

    let (status, deleted) = app.delete(&format!("/admin/keys/{API_KEY}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["identity"], api_key_identity(&api_key_hash(API_KEY)));
    assert_eq!(next_control_message(&mut control).await, json!({"type": "api_keys_changed"}));
    let (status, _) = app.delete(&format!("/admin/keys/{}", api_key_hash(other_key))).await;
    assert_eq!(status, 200);

    let remaining: u64 = app.redis().await.hlen(app.keys().api_keys()).await.expect("hlen");
    assert_eq!(remaining, 0);
    let missing = app.delete(&format!("/admin/keys/{API_KEY}")).await;
    assert_error(&missing, 404, "key_not_found");
    assert!(!missing.1.to_string().contains(API_KEY), "the key is not echoed back");
}

#[tokio::test]
async fn invalid_key_requests_get_a_400_naming_the_field() {
    let app = AdminTestApp::start(dam_only()).await;
    let path = format!("/admin/keys/{API_KEY}");
    let cases = [
        (path.as_str(), json!({"name": "no tier"}), "tier"),
        (path.as_str(), json!({"tier": "gold"}), "tier"),
        (path.as_str(), json!({"tier": "premium", "burst": 0}), "burst"),
        (path.as_str(), json!({"tier": "premium", "rate_per_second": -1}), "rate_per_second"),
        (path.as_str(), json!({"tier": "premium", "burst": "many"}), "burst"),
        ("/admin/keys/short", json!({"tier": "premium"}), "key"),
    ];
    for (path, body, field) in cases {
        let answer = app.put(path, body.clone()).await;
        assert_error(&answer, 400, "invalid_field");
        assert_eq!(answer.1["error"]["field"], field, "{body}");
    }
    let unknown = app.put(&path, json!({"tier": "premium", "rate": 2})).await;
    assert_error(&unknown, 400, "invalid_field");
    assert_eq!(unknown.1["error"]["field"], "rate");
    let stored: u64 = app.redis().await.hlen(app.keys().api_keys()).await.expect("hlen");
    assert_eq!(stored, 0, "nothing refused was stored");
}
