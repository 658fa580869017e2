//! `/admin/dead-letters`: listing in pages, replaying one or all (atomically, with a fresh deadline, streaming
//! from the first event), dropping, and the records that cannot be replayed.

use std::time::Duration;

use protocol::dead_letter::DeadLetter;
use protocol::{JobEnvelope, Lane, StreamEvent, unix_time_ms};
use redis::AsyncCommands;
use serde_json::Value;
use test_support::StackOptions;

use crate::support::{AdminTestApp, assert_error, chat_envelope, dam_only};

fn dead_letter(envelope: &JobEnvelope) -> DeadLetter {
    DeadLetter {
        job_id: Some(envelope.id),
        reason: "poison_job".to_owned(),
        last_error: "the worker died during this job three times".to_owned(),
        attempts: 3,
        worker_id: "w-gone".to_owned(),
        dead_at_ms: unix_time_ms(),
        raw_envelope: envelope.encode(),
    }
}

fn undecodable_dead_letter() -> DeadLetter {
    DeadLetter {
        job_id: None,
        reason: "undecodable_envelope".to_owned(),
        last_error: "expected value at line 1 column 1".to_owned(),
        attempts: 0,
        worker_id: "w1".to_owned(),
        dead_at_ms: unix_time_ms(),
        raw_envelope: "{not an envelope".to_owned(),
    }
}

async fn push_dead_letters(app: &AdminTestApp, letters: &[DeadLetter]) {
    let encoded: Vec<String> = letters.iter().map(DeadLetter::encode).collect();
    let _: () = app.redis().await.rpush(app.keys().dead_letters(), encoded).await.expect("rpush");
}

async fn dead_letter_count(app: &AdminTestApp) -> u64 {
    app.redis().await.llen(app.keys().dead_letters()).await.expect("llen")
}

#[tokio::test]
async fn dead_letters_are_listed_oldest_first_in_pages_without_their_conversation() {
    let app = AdminTestApp::start(dam_only()).await;
    let envelopes: Vec<JobEnvelope> =
        (0..3).map(|index| chat_envelope(&format!("secret prompt {index}"), Lane::Premium, 1_000)).collect();
    let mut letters: Vec<DeadLetter> = envelopes.iter().map(dead_letter).collect();
    letters.push(undecodable_dead_letter());
    push_dead_letters(&app, &letters).await;

    let (status, page) = app.get("/admin/dead-letters?limit=2&offset=1").await;

    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["total"].as_u64(), page["offset"].as_u64(), page["limit"].as_u64()),
        (Some(4), Some(1), Some(2))
    );
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], envelopes[1].id.to_string());
    assert_eq!(items[0]["job_id"], envelopes[1].id.to_string());
    assert_eq!(items[0]["reason"], "poison_job");
    assert_eq!(items[0]["lane"], "premium");
    assert_eq!(items[0]["replayable"], true);
    assert!(!page.to_string().contains("secret prompt"), "listings do not show conversations: {page}");
    let (_, last_page) = app.get("/admin/dead-letters?offset=3").await;
    let undecodable = &last_page["items"][0];
    assert!(undecodable["id"].as_str().expect("id").starts_with("record-"), "{undecodable}");
    assert_eq!(undecodable["replayable"], false);
    assert!(undecodable["not_replayable_reason"].is_string());
}

/// Cross-service: the replayed job is run by a real worker and streamed by a real gateway.
#[tokio::test]
async fn a_dead_letter_replayed_through_the_api_completes_and_streams_from_its_first_event() {
    let app = AdminTestApp::start(StackOptions::default()).await;
    // A job whose deadline passed long ago, that left a final state and half an answer behind.
    let mut envelope = chat_envelope("replay me please", Lane::Standard, 600_000);
    envelope.deadline_ms = unix_time_ms() - 300_000;
    envelope.attempt = 3;
    envelope.recoveries = 3;
    let mut redis = app.redis().await;
    let _: () = redis
        .hset_multiple(
            app.keys().job_state(&envelope.id),
            &[("status", "failed"), ("worker", "w-gone"), ("attempt", "3")],
        )
        .await
        .expect("hset");
    let stale = StreamEvent::Token { seq: 1, text: "stale text".to_owned() };
    let _: () = redis.rpush(app.keys().job_replay_log(&envelope.id), stale.encode()).await.expect("rpush");
    push_dead_letters(&app, &[dead_letter(&envelope)]).await;

    let (status, replayed) = app.post(&format!("/admin/dead-letters/{}/replay", envelope.id), None).await;

    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["job_id"], envelope.id.to_string());
    assert_eq!(replayed["lane"], "standard");
    assert!(replayed["deadline_ms"].as_u64().expect("deadline") > unix_time_ms(), "a fresh deadline");
    assert_eq!(dead_letter_count(&app).await, 0);
    let events_url = replayed["events_url"].as_str().expect("events url");
    let events = app.stack.open_events(0, events_url).await.collect_all_within(Duration::from_secs(20)).await;
    let from_log: Vec<_> = events.iter().filter(|event| event.event != "queued").collect();
    assert_eq!(from_log.last().expect("events").event, "done", "{events:?}");
    let seqs: Vec<String> = from_log.iter().map(|event| event.id.clone().expect("id")).collect();
    assert_eq!(seqs.first().map(String::as_str), Some("1"), "the replayed job streams from seq 1");
    let text: String = from_log
        .iter()
        .filter(|event| event.event == "token")
        .map(|event| {
            serde_json::from_str::<Value>(&event.data).expect("json")["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(text, mock_llm::answer_text("replay me please", 12), "no stale text, the whole answer");
    let (_, report) = app.get("/admin/status").await;
    assert_eq!(
        report["dead_letters"],
        serde_json::json!({"size": 0, "replayed_total": 1, "dropped_total": 0})
    );
}

#[tokio::test]
async fn replay_all_with_dry_run_changes_nothing_and_without_it_replays_every_replayable_record() {
    let app = AdminTestApp::start(dam_only()).await;
    let premium = chat_envelope("one", Lane::Premium, 5_000);
    let standard = chat_envelope("two", Lane::Standard, 5_000);
    push_dead_letters(&app, &[dead_letter(&premium), undecodable_dead_letter(), dead_letter(&standard)])
        .await;

    let (status, preview) = app.post("/admin/dead-letters/replay?dry_run=true", None).await;

    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["dry_run"], true);
    let previewed: Vec<&str> = preview["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| job["job_id"].as_str().expect("id"))
        .collect();
    assert_eq!(previewed, vec![premium.id.to_string(), standard.id.to_string()]);
    assert_eq!(preview["not_replayable"].as_array().expect("list").len(), 1);
    assert_eq!(dead_letter_count(&app).await, 3, "a dry run changes nothing");
    let queued: u64 = app.redis().await.llen(app.keys().lane_queue(Lane::Premium)).await.expect("llen");
    assert_eq!(queued, 0);

    let (status, report) = app.post("/admin/dead-letters/replay", None).await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["jobs"].as_array().expect("jobs").len(), 2);
    assert_eq!(report["jobs"][0]["position"], 1);
    let left: Vec<String> = app.redis().await.lrange(app.keys().dead_letters(), 0, -1).await.expect("lrange");
    assert_eq!(left.len(), 1);
    assert_eq!(
        DeadLetter::decode(&left[0]).expect("decodes").job_id,
        None,
        "only the unreplayable record is left"
    );
    for (lane, envelope) in [(Lane::Premium, &premium), (Lane::Standard, &standard)] {
        let queued: Vec<String> =
            app.redis().await.lrange(app.keys().lane_queue(lane), 0, -1).await.expect("lrange");
        assert_eq!(queued.len(), 1);
        let requeued = JobEnvelope::decode(&queued[0]).expect("decodes");
        assert_eq!(
            (requeued.id, requeued.attempt, requeued.messages.clone()),
            (envelope.id, 1, envelope.messages.clone())
        );
    }
    let (_, again) = app.post("/admin/dead-letters/replay", None).await;
    assert_eq!(again["jobs"].as_array().expect("jobs").len(), 0, "nothing is replayed twice");
}

#[tokio::test]
async fn a_record_without_a_job_id_cannot_be_replayed_but_can_be_dropped() {
    let app = AdminTestApp::start(dam_only()).await;
    push_dead_letters(&app, &[undecodable_dead_letter()]).await;
    let (_, page) = app.get("/admin/dead-letters").await;
    let id = page["items"][0]["id"].as_str().expect("id").to_owned();

    let refused = app.post(&format!("/admin/dead-letters/{id}/replay"), None).await;
    assert_error(&refused, 409, "not_replayable");
    assert_eq!(dead_letter_count(&app).await, 1);

    let (status, dropped) = app.delete(&format!("/admin/dead-letters/{id}")).await;
    assert_eq!(status, 200, "{dropped}");
    assert_eq!(dropped["id"], id);
    assert_eq!(dead_letter_count(&app).await, 0);
    assert_error(&app.delete(&format!("/admin/dead-letters/{id}")).await, 404, "dead_letter_not_found");
}

#[tokio::test]
async fn a_dead_letter_is_dropped_by_its_job_id_and_others_stay() {
    let app = AdminTestApp::start(dam_only()).await;
    let (keep, drop) = (chat_envelope("keep", Lane::Standard, 0), chat_envelope("drop", Lane::Standard, 0));
    push_dead_letters(&app, &[dead_letter(&keep), dead_letter(&drop)]).await;

    let (status, _) = app.delete(&format!("/admin/dead-letters/{}", drop.id)).await;

    assert_eq!(status, 200);
    let left: Vec<String> = app.redis().await.lrange(app.keys().dead_letters(), 0, -1).await.expect("lrange");
    assert_eq!(left.len(), 1);
    assert_eq!(DeadLetter::decode(&left[0]).expect("decodes").job_id, Some(keep.id));
}

#[tokio::test]
async fn unknown_and_malformed_ids_and_queries_get_clear_errors() {
    let app = AdminTestApp::start(dam_only()).await;
    let unknown = "0192f0c1-7b7e-7cc0-8b5e-3f7d2a9b1c00";
    assert_error(
        &app.post(&format!("/admin/dead-letters/{unknown}/replay"), None).await,
        404,
        "dead_letter_not_found",
    );
    assert_error(&app.delete(&format!("/admin/dead-letters/{unknown}")).await, 404, "dead_letter_not_found");
    let malformed = app.post("/admin/dead-letters/not-an-id/replay", None).await;
    assert_error(&malformed, 400, "invalid_field");
    assert_eq!(malformed.1["error"]["field"], "id");
    for (query, field) in
        [("limit=0", "limit"), ("limit=many", "limit"), ("offset=-1", "offset"), ("limt=5", "limt")]
    {
        let answer = app.get(&format!("/admin/dead-letters?{query}")).await;
        assert_error(&answer, 400, "invalid_field");
        assert_eq!(answer.1["error"]["field"], field, "{query}");
    }
    let answer = app.post("/admin/dead-letters/replay?dry_run=perhaps", None).await;
    assert_error(&answer, 400, "invalid_field");
}
