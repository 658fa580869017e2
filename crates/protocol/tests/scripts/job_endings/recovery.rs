//! `recover_job`, run for a job whose worker died: it looks at the job before it requeues, so a poison job is
//! dead-lettered, an ended or taken-over job only loses this worker's entry, a cancelled one ends as cancelled, and
//! a requeue rings the capped doorbell.

use protocol::job_lifecycle::{CancelOutcome, DOORBELL_CAPACITY, RecoveryOutcome, cancel_job};
use protocol::{JobEnvelope, JobStatus, Lane, StreamEvent};
use redis::AsyncCommands;

use super::{CREATED_AT_MS, ROOMY, Scene, dead_letter_for, ending};

#[tokio::test]
async fn a_poison_job_is_dead_lettered_with_its_reservation_given_back() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&job).await;
    let letter = dead_letter_for(&job, &raw, "died too often");

    let outcome = scene.recover(&job, &raw, Some(&letter), ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::DeadLettered);
    assert_eq!(scene.budget(&job).await, Some(0));
    assert_eq!(scene.dead_letters().await, vec![letter.encode()]);
    assert_eq!(scene.dead_letter_bytes().await, letter.encode().len() as u64, "its size is kept beside it");
    assert_eq!(scene.state(&job).await["status"], "failed");
}

#[tokio::test]
async fn recovering_a_job_that_already_ended_only_removes_its_entry() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&job).await;
    scene.finish(&job, &raw, ending(JobStatus::Done, 30), ROOMY).await;
    // The ending landed but its entry is still listed (as when the ending's reply was lost and the worker died).
    let _: () = scene.connection.rpush(scene.keys.worker_processing_list("w1"), &raw).await.expect("rpush");

    let outcome = scene.recover(&job, &raw, None, ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::Released);
    assert_eq!(scene.processing().await, 0);
    let lane: u64 = scene.connection.llen(scene.keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(lane, 0, "an ended job never runs again");
    assert_eq!(scene.state(&job).await["status"], "done");
    assert_eq!(scene.budget(&job).await, Some(30), "and it is not settled again");
}

#[tokio::test]
async fn recovering_a_job_another_attempt_owns_only_removes_this_workers_entry() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(None, 0).await;
    let raw = scene.running_job(&job).await;
    // Another worker took it over meanwhile (this entry is a stale copy).
    let _: () = scene.connection.hset(scene.keys.job_state(&job.id), "worker", "w2").await.expect("hset");

    let outcome = scene.recover(&job, &raw, None, ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::Released);
    assert_eq!(scene.processing().await, 0);
    let state = scene.state(&job).await;
    assert_eq!(
        (state["status"].as_str(), state["worker"].as_str()),
        ("running", "w2"),
        "w2's attempt goes on"
    );
    let lane: u64 = scene.connection.llen(scene.keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(lane, 0);
}

#[tokio::test]
async fn recovering_a_job_its_client_cancelled_ends_it_as_cancelled_instead_of_running_it_again() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&job).await;
    let cancel =
        cancel_job(&mut scene.connection, &scene.keys, &job.id, &job.identity, CREATED_AT_MS, "bye", 30, 7)
            .await
            .expect("cancel");
    assert_eq!(cancel, CancelOutcome::Cancelling { worker_id: "w1".to_owned() });
    let active_before: u64 =
        scene.connection.zcard(scene.keys.active_chats(&job.identity)).await.expect("zcard");
    assert_eq!(active_before, 1);

    // Its worker died before it could end the job.
    let outcome = scene.recover(&job, &raw, None, ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::Cancelled);
    match scene.replay_log(&job).await.as_slice() {
        [StreamEvent::Error { seq: 1, code, .. }] => assert_eq!(code, "cancelled"),
        other => panic!("one cancelled error event, not {other:?}"),
    }
    assert_eq!(scene.state(&job).await["status"], "cancelled");
    let active: u64 = scene.connection.zcard(scene.keys.active_chats(&job.identity)).await.expect("zcard");
    assert_eq!(active, 0, "off the caller's active chats");
    assert_eq!(scene.outcome_count("cancelled").await, 1);
    assert_eq!(scene.budget(&job).await, Some(0), "its reservation went back");
    let lane: u64 = scene.connection.llen(scene.keys.lane_queue(Lane::Standard)).await.expect("llen");
    assert_eq!(lane, 0, "it never runs again");
    assert_eq!(scene.processing().await, 0);
}

#[tokio::test]
async fn a_requeued_job_rings_the_doorbell_and_the_doorbell_stays_capped() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 100).await;
    let _: () = scene.connection.del(scene.keys.queue_doorbell()).await.expect("del");
    let raw = scene.running_job(&job).await;

    let outcome = scene.recover(&job, &raw, None, ROOMY).await;

    assert_eq!(outcome, RecoveryOutcome::Requeued);
    let rings: u64 = scene.connection.llen(scene.keys.queue_doorbell()).await.expect("llen");
    assert_eq!(rings, 1, "an idle worker is woken for it");
    assert_eq!(scene.budget(&job).await, Some(100), "a requeued job keeps its reservation");
    assert_eq!(scene.state(&job).await["status"], "queued");

    // Once more with a full doorbell: it stays at its cap.
    let again = scene.running_job(&JobEnvelope { attempt: job.attempt + 1, ..job.clone() }).await;
    let full = vec!["1"; DOORBELL_CAPACITY as usize];
    let _: () = scene.connection.del(scene.keys.queue_doorbell()).await.expect("del");
    let _: () = scene.connection.rpush(scene.keys.queue_doorbell(), full).await.expect("rpush");
    let requeued = JobEnvelope { attempt: job.attempt + 1, ..job.clone() };
    assert_eq!(scene.recover(&requeued, &again, None, ROOMY).await, RecoveryOutcome::Requeued);
    let rings: u64 = scene.connection.llen(scene.keys.queue_doorbell()).await.expect("llen");
    assert_eq!(rings, DOORBELL_CAPACITY);
}
