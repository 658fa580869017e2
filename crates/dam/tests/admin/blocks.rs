//! `/admin/blocks`: blocks stored with their TTL, listed until they lift, removed early, refused when malformed;
//! a blocked caller gets 403 `blocked` from the gateway until its TTL runs out.

use std::time::Duration;

use protocol::access::BlockRecord;
use protocol::unix_time_ms;
use redis::AsyncCommands;
use serde_json::{Value, json};
use test_support::StackOptions;

use crate::support::{AdminTestApp, assert_error, dam_only};

#[tokio::test]
async fn a_block_is_stored_with_its_ttl_listed_and_lifted_early() {
    let app = AdminTestApp::start(dam_only()).await;

    let (status, block) = app
        .post(
            "/admin/blocks",
            Some(json!({"identity": "ip:203.0.113.7", "ttl_s": 600, "reason": "scraping"})),
        )
        .await;

    assert_eq!(status, 201, "{block}");
    assert_eq!(block["identity"], "ip:203.0.113.7");
    assert_eq!(block["remaining_s"], 600);
    let mut redis = app.redis().await;
    let ttl: i64 = redis.ttl(app.keys().identity_block("ip:203.0.113.7")).await.expect("ttl");
    assert!((595..=600).contains(&ttl), "{ttl}");
    let stored: String = redis.get(app.keys().identity_block("ip:203.0.113.7")).await.expect("record");
    assert_eq!(BlockRecord::decode(&stored).expect("decodes").reason, "scraping");
    let (_, listing) = app.get("/admin/blocks").await;
    assert_eq!(listing["blocks"].as_array().expect("blocks").len(), 1);
    assert_eq!(listing["blocks"][0]["reason"], "scraping");

    let (status, removed) = app.delete("/admin/blocks/ip:203.0.113.7").await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(app.get("/admin/blocks").await.1, json!({"blocks": []}));
    let indexed: u64 = redis.zcard(app.keys().block_index()).await.expect("zcard");
    assert_eq!(indexed, 0);
    assert_error(&app.delete("/admin/blocks/ip:203.0.113.7").await, 404, "block_not_found");
}

#[tokio::test]
async fn identities_are_stored_as_the_gateway_spells_them() {
    let app = AdminTestApp::start(dam_only()).await;
    for (given, stored) in
        [("ip:::ffff:10.1.2.3", "ip:10.1.2.3"), ("key:0123456789ABCDEF", "key:0123456789abcdef")]
    {
        let (status, block) =
            app.post("/admin/blocks", Some(json!({"identity": given, "ttl_s": 60, "reason": "x"}))).await;
        assert_eq!(status, 201, "{block}");
        assert_eq!(block["identity"], stored);
        let exists: bool = app.redis().await.exists(app.keys().identity_block(stored)).await.expect("exists");
        assert!(exists, "{stored}");
    }
}

#[tokio::test]
async fn malformed_blocks_get_a_400_naming_the_field() {
    let app = AdminTestApp::start(dam_only()).await;
    let cases = [
        (json!({"identity": "203.0.113.7", "ttl_s": 60, "reason": "x"}), "invalid_identity", "identity"),
        (json!({"identity": "key:1234", "ttl_s": 60, "reason": "x"}), "invalid_identity", "identity"),
        (json!({"identity": "ip:10.0.0.1", "ttl_s": 0, "reason": "x"}), "invalid_field", "ttl_s"),
        (json!({"identity": "ip:10.0.0.1", "ttl_s": 2_592_001, "reason": "x"}), "invalid_field", "ttl_s"),
        (json!({"identity": "ip:10.0.0.1", "ttl_s": -5, "reason": "x"}), "invalid_field", "ttl_s"),
        (json!({"identity": "ip:10.0.0.1", "ttl_s": 60, "reason": "  "}), "invalid_field", "reason"),
        (json!({"identity": "ip:10.0.0.1", "ttl_s": 60}), "invalid_field", "reason"),
    ];
    for (body, code, field) in cases {
        let answer = app.post("/admin/blocks", Some(body.clone())).await;
        assert_error(&answer, 400, code);
        assert_eq!(answer.1["error"]["field"], field, "{body}");
    }
    assert_error(&app.delete("/admin/blocks/nobody").await, 400, "invalid_identity");
    assert_eq!(app.get("/admin/blocks").await.1, json!({"blocks": []}));
}

#[tokio::test]
async fn a_block_leaves_the_listing_when_its_ttl_runs_out() {
    let app = AdminTestApp::start(dam_only()).await;
    app.post("/admin/blocks", Some(json!({"identity": "ip:10.9.9.9", "ttl_s": 1, "reason": "brief"}))).await;
    assert_eq!(app.get("/admin/blocks").await.1["blocks"].as_array().expect("blocks").len(), 1);

    app.stack
        .wait_until("the block left the listing", Duration::from_secs(10), || async {
            app.get("/admin/blocks").await.1 == json!({"blocks": []})
        })
        .await;
    let indexed: u64 = app.redis().await.zcard(app.keys().block_index()).await.expect("zcard");
    assert_eq!(indexed, 0, "the expired entry was pruned from the index");
}

/// Cross-service: needs the gateway's admission to check `{prefix}block:{identity}` (being built in
/// `crates/gateway`).
#[tokio::test]
async fn a_blocked_identity_gets_403_from_the_gateway_until_its_ttl_runs_out() {
    let app = AdminTestApp::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let (status, block) = app
        .post("/admin/blocks", Some(json!({"identity": "ip:127.0.0.1", "ttl_s": 2, "reason": "flooding"})))
        .await;
    assert_eq!(status, 201, "{block}");

    let refused = app.stack.post_chat(0, &json!({"message": "while blocked"})).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.expect("json")["error"]["code"], "blocked");

    let expires_at_ms = block["expires_at_ms"].as_u64().expect("expiry");
    app.stack
        .wait_until("the block lifted by itself", Duration::from_secs(10), || async {
            let status = app.stack.post_chat(0, &json!({"message": "after the block"})).await.status();
            assert!(status == 202 || status == 403, "{status}");
            status == 202
        })
        .await;
    assert!(unix_time_ms() >= expires_at_ms, "not before its expiry");
}
