//! The budget reservation settled by every kind of ending, on the budget of the day the job was created: a finish,
//! an expiry, a cancellation while running or while queued; charged once, and never below zero.

use protocol::JobStatus;
use protocol::job_lifecycle::{CancelOutcome, FinishOutcome, cancel_job};
use redis::AsyncCommands;

use super::{ENDED_AT_MS, ROOMY, Scene, ending};

#[tokio::test]
async fn a_finished_job_settles_its_reservation_on_the_day_it_was_created_so_the_budget_holds_what_was_used()
{
    let mut scene = Scene::new().await;
    // Another chat of the same caller that day used 50 tokens; this one reserved 100 and used 30.
    let job = scene.queued_job(Some(100), 150).await;
    let raw = scene.running_job(&job).await;

    let finished = scene.finish(&job, &raw, ending(JobStatus::Done, 30), ROOMY).await;

    assert!(matches!(finished, FinishOutcome::Finished { .. }), "{finished:?}");
    assert_eq!(scene.budget(&job).await, Some(80), "50 + 30: the unused 70 went back");
    assert_eq!(scene.budget_of_the_end_day(&job).await, None, "nothing charged to the day it ended");
    let again = scene.finish(&job, &raw, ending(JobStatus::Done, 30), ROOMY).await;
    assert_eq!(again, FinishOutcome::AlreadyFinished);
    assert_eq!(scene.budget(&job).await, Some(80), "settled once");
}

#[tokio::test]
async fn a_job_that_used_more_than_it_reserved_is_charged_the_difference() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(40), 40).await;
    let raw = scene.running_job(&job).await;

    scene.finish(&job, &raw, ending(JobStatus::Done, 55), ROOMY).await;

    assert_eq!(scene.budget(&job).await, Some(55));
}

#[tokio::test]
async fn a_job_admitted_before_reservations_is_charged_in_full() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(None, 10).await;
    let raw = scene.running_job(&job).await;

    scene.finish(&job, &raw, ending(JobStatus::Done, 25), ROOMY).await;

    assert_eq!(scene.budget(&job).await, Some(35));
}

#[tokio::test]
async fn an_expired_or_cancelled_running_job_gives_back_what_it_did_not_use() {
    let mut scene = Scene::new().await;
    let expired = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&expired).await;
    scene.finish(&expired, &raw, ending(JobStatus::Expired, 0), ROOMY).await;
    assert_eq!(scene.budget(&expired).await, Some(0), "an expired job gave its whole reservation back");

    let cancelled = scene.queued_job(Some(100), 100).await;
    let raw = scene.running_job(&cancelled).await;
    scene.finish(&cancelled, &raw, ending(JobStatus::Cancelled, 12), ROOMY).await;
    assert_eq!(scene.budget(&cancelled).await, Some(12), "a cancelled job pays for the text it streamed");
}

#[tokio::test]
async fn a_give_back_never_creates_a_budget_key() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 0).await;
    let _: () = scene.connection.del(scene.budget_key(&job)).await.expect("del");
    let raw = scene.running_job(&job).await;

    scene.finish(&job, &raw, ending(JobStatus::Done, 30), ROOMY).await;

    assert_eq!(scene.budget(&job).await, None, "a day does not start below zero");
}

#[tokio::test]
async fn cancelling_a_queued_job_gives_its_reservation_back_once() {
    let mut scene = Scene::new().await;
    let job = scene.queued_job(Some(100), 130).await;

    let cancel = |scene: &mut Scene| {
        let (keys, job) = (scene.keys.clone(), job.clone());
        let mut connection = scene.connection.clone();
        async move {
            cancel_job(
                &mut connection,
                &keys,
                &job.id,
                &job.identity,
                job.created_at_ms,
                "bye",
                30,
                ENDED_AT_MS,
            )
            .await
            .expect("cancel")
        }
    };
    assert_eq!(cancel(&mut scene).await, CancelOutcome::Cancelled);
    assert_eq!(cancel(&mut scene).await, CancelOutcome::AlreadyFinal { status: "cancelled".to_owned() });

    assert_eq!(scene.budget(&job).await, Some(30));
}
