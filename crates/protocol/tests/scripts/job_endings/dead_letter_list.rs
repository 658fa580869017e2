//! The dead-letter list: a replay that refuses a job still queued or running, and the caps on the list's count
//! and bytes, kept by every script that pushes to it or takes from it.

use protocol::dead_letter::{
    DeadLetter, DeadLetterCaps, ReplayOutcome, drop_dead_letter, replay_dead_letter,
};
use protocol::job_lifecycle::{JobEnding, RecoveryOutcome, dead_letter_job};
use protocol::{JobStatus, Lane};
use redis::AsyncCommands;

use super::{ROOMY, Scene, dead_letter_for};
use crate::envelope;

#[tokio::test]
async fn a_dead_letter_whose_job_is_queued_or_running_is_not_replayed() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(None, 0).await;
    let record = dead_letter_for(&job, &job.encode(), "an earlier copy failed").encode();
    let _: () = scene.connection.rpush(scene.keys.dead_letters(), &record).await.expect("rpush");
    let fresh = DeadLetter::decode(&record).expect("decodes").replayable_envelope(5, 60).expect("replayable");
    let live_created_at = scene.state(&job).await["created_at_ms"].clone();

    for status in ["queued", "running"] {
        let _: () =
            scene.connection.hset(scene.keys.job_state(&job.id), "status", status).await.expect("hset");
        let replayed = replay_dead_letter(&mut scene.connection, &scene.keys, &record, &fresh, 60)
            .await
            .expect("replay");
        assert_eq!(replayed, ReplayOutcome::JobActive, "{status}");
    }

    assert_eq!(scene.dead_letters().await, vec![record.clone()], "the record stays");
    let state = scene.state(&job).await;
    assert_eq!(state["created_at_ms"], live_created_at, "the live copy's state is untouched");
    let lane: u64 = scene.connection.llen(scene.keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(lane, 1, "only the live copy waits");

    // Once that copy ended, the record replays.
    let _: () = scene.connection.hset(scene.keys.job_state(&job.id), "status", "failed").await.expect("hset");
    let replayed =
        replay_dead_letter(&mut scene.connection, &scene.keys, &record, &fresh, 60).await.expect("replay");
    assert!(matches!(replayed, ReplayOutcome::Queued(_)), "{replayed:?}");
}

#[tokio::test]
async fn the_dead_letter_list_drops_its_oldest_records_past_its_count_cap_and_counts_them() {
    let mut scene = Scene::new().await;
    let caps = DeadLetterCaps { max_records: 2, max_bytes: 1 << 20 };
    let mut records = Vec::new();
    for index in 0..4 {
        let raw = format!("{{\"not an envelope\": {index}}}");
        let _: () =
            scene.connection.rpush(scene.keys.worker_processing_list("w1"), &raw).await.expect("rpush");
        let letter = DeadLetter { job_id: None, ..dead_letter_for(&envelope(Lane::Standard), &raw, "bad") };
        assert!(dead_letter_job(&mut scene.connection, &scene.keys, &letter, caps).await.expect("move"));
        records.push(letter.encode());
    }

    assert_eq!(scene.dead_letters().await, records[2..].to_vec(), "the newest two are kept");
    assert_eq!(scene.dead_letters_dropped().await, 2);
    let kept_bytes: usize = records[2..].iter().map(String::len).sum();
    assert_eq!(scene.dead_letter_bytes().await, kept_bytes as u64);
}

#[tokio::test]
async fn the_dead_letter_list_drops_its_oldest_records_past_its_byte_cap_from_every_script_that_pushes() {
    let mut scene = Scene::new().await;
    // A failed job (finish_job) and a poison job (recover_job) each push a record of about the same size.
    let failed = scene.queued_job(None, 0).await;
    let failed_raw = scene.running_job(&failed).await;
    let failed_letter = dead_letter_for(&failed, &failed_raw, "the provider failed");
    let record_bytes = failed_letter.encode().len() as u64;
    // Room for one record and a half: each push leaves only the newest record.
    let caps = DeadLetterCaps { max_records: 100, max_bytes: record_bytes + record_bytes / 2 };
    let failure = JobEnding { status: JobStatus::Failed, tokens_used: 0, dead_letter: Some(&failed_letter) };
    scene.finish(&failed, &failed_raw, failure, caps).await;
    assert_eq!(scene.dead_letters().await, vec![failed_letter.encode()]);

    let poison = scene.queued_job(None, 0).await;
    let poison_raw = scene.running_job(&poison).await;
    let poison_letter = dead_letter_for(&poison, &poison_raw, "died too often");
    assert_eq!(
        scene.recover(&poison, &poison_raw, Some(&poison_letter), caps).await,
        RecoveryOutcome::DeadLettered
    );

    assert_eq!(scene.dead_letters().await, vec![poison_letter.encode()], "the oldest went");
    assert_eq!(scene.dead_letters_dropped().await, 1);
    assert_eq!(scene.dead_letter_bytes().await, poison_letter.encode().len() as u64);
}

#[tokio::test]
async fn dropping_or_replaying_a_dead_letter_takes_its_bytes_off_the_count() {
    let mut scene = Scene::new().await;
    let mut records = Vec::new();
    for _ in 0..2 {
        let job = scene.queued_job(None, 0).await;
        let raw = scene.running_job(&job).await;
        let letter = dead_letter_for(&job, &raw, "died too often");
        scene.recover(&job, &raw, Some(&letter), ROOMY).await;
        records.push(letter.encode());
    }
    let total: usize = records.iter().map(String::len).sum();
    assert_eq!(scene.dead_letter_bytes().await, total as u64);

    assert!(drop_dead_letter(&mut scene.connection, &scene.keys, &records[0]).await.expect("drop"));
    assert!(!drop_dead_letter(&mut scene.connection, &scene.keys, &records[0]).await.expect("drop"), "gone");
    assert_eq!(scene.dead_letter_bytes().await, records[1].len() as u64);

    let fresh =
        DeadLetter::decode(&records[1]).expect("decodes").replayable_envelope(5, 60).expect("replayable");
    let replayed = replay_dead_letter(&mut scene.connection, &scene.keys, &records[1], &fresh, 60)
        .await
        .expect("replay");
    assert!(matches!(replayed, ReplayOutcome::Queued(_)), "{replayed:?}");
    assert_eq!(scene.dead_letter_bytes().await, 0);
    assert!(scene.dead_letters().await.is_empty());
}
