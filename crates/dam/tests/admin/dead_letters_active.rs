//! `/admin/dead-letters` against live copies: a record whose job is queued or running again is not replayed (that
//! would replace the live copy's state), and every removal takes the record's bytes off the list's size.

use protocol::dead_letter::DeadLetter;
use protocol::{JobEnvelope, Lane, unix_time_ms};
use redis::AsyncCommands;

use crate::support::{AdminTestApp, assert_error, chat_envelope, dam_only};

fn dead_letter(envelope: &JobEnvelope) -> DeadLetter {
    DeadLetter {
        job_id: Some(envelope.id),
        reason: "upstream_failed".to_owned(),
        last_error: "an earlier copy failed".to_owned(),
        attempts: 1,
        worker_id: "w-gone".to_owned(),
        dead_at_ms: unix_time_ms(),
        raw_envelope: envelope.encode(),
    }
}

/// Pushes `letter` the way the scripts do: the list and its size in bytes together.
async fn push_dead_letter(app: &AdminTestApp, letter: &DeadLetter) -> String {
    let record = letter.encode();
    let mut redis = app.redis().await;
    let _: () = redis.rpush(app.keys().dead_letters(), &record).await.expect("rpush");
    let _: () = redis.incr(app.keys().dead_letter_bytes(), record.len()).await.expect("incrby");
    record
}

async fn dead_letter_bytes(app: &AdminTestApp) -> u64 {
    let bytes: Option<u64> = app.redis().await.get(app.keys().dead_letter_bytes()).await.expect("get");
    bytes.unwrap_or(0)
}

#[tokio::test]
async fn replaying_a_dead_letter_whose_job_is_queued_or_running_is_refused_with_409_job_active() {
    let app = AdminTestApp::start(dam_only()).await;
    let envelope = chat_envelope("alive elsewhere", Lane::Standard, 1_000);
    let record = push_dead_letter(&app, &dead_letter(&envelope)).await;
    let state_key = app.keys().job_state(&envelope.id);

    for status in ["queued", "running"] {
        let _: () = app
            .redis()
            .await
            .hset_multiple(&state_key, &[("status", status), ("worker", "w-live")])
            .await
            .expect("hset");
        let refused = app.post(&format!("/admin/dead-letters/{}/replay", envelope.id), None).await;
        assert_error(&refused, 409, "job_active");
    }

    let letters: Vec<String> =
        app.redis().await.lrange(app.keys().dead_letters(), 0, -1).await.expect("lrange");
    assert_eq!(letters, vec![record.clone()], "the record stays");
    let worker: String = app.redis().await.hget(&state_key, "worker").await.expect("hget");
    assert_eq!(worker, "w-live", "the live copy's state is untouched");
    assert_eq!(dead_letter_bytes(&app).await, record.len() as u64);

    // A replay of everything leaves it too, and says why.
    let (status, report) = app.post("/admin/dead-letters/replay", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["jobs"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(report["not_replayable"][0]["id"], envelope.id.to_string(), "{report}");

    // Once the live copy ended, the record replays, and its bytes leave the count.
    let _: () = app.redis().await.hset(&state_key, "status", "failed").await.expect("hset");
    let (status, replayed) = app.post(&format!("/admin/dead-letters/{}/replay", envelope.id), None).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(dead_letter_bytes(&app).await, 0);
}

#[tokio::test]
async fn dropping_a_dead_letter_takes_its_bytes_off_the_lists_size() {
    let app = AdminTestApp::start(dam_only()).await;
    let kept = chat_envelope("kept", Lane::Standard, 1_000);
    let dropped = chat_envelope("dropped", Lane::Standard, 1_000);
    let kept_record = push_dead_letter(&app, &dead_letter(&kept)).await;
    push_dead_letter(&app, &dead_letter(&dropped)).await;

    let (status, answer) = app.delete(&format!("/admin/dead-letters/{}", dropped.id)).await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(dead_letter_bytes(&app).await, kept_record.len() as u64);
}

#[tokio::test]
async fn the_status_reports_how_many_dead_letters_the_caps_dropped() {
    let app = AdminTestApp::start(dam_only()).await;
    let _: () = app.redis().await.set(app.keys().dead_letters_dropped(), 4).await.expect("set");

    let (status, report) = app.get("/admin/status").await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dead_letters"]["dropped_total"], 4, "{report}");
}
