//! Enqueue and claim: tickets and positions, the lane order by weight, claims in batches, the doorbell a waiting
//! claim listens on, and setting aside a claimed job that cannot be read.

use protocol::dead_letter::DeadLetter;
use std::time::Duration;

use protocol::job_lifecycle::{
    claim_jobs, claim_next_job, dead_letter_job, enqueue_job, lanes_in_claim_order,
    wait_for_doorbell_then_claim,
};
use protocol::{Lane, RedisKeys};
use redis::AsyncCommands;
use test_support::{RedisServer, unique_key_prefix};

use super::{CAPS, PREMIUM_FIRST};
use crate::envelope;

#[tokio::test]
async fn enqueue_gives_increasing_tickets_and_positions_and_refuses_a_reused_id() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let first = envelope(Lane::Standard);
    let second = envelope(Lane::Standard);

    let one = enqueue_job(&mut connection, &keys, &first, 60).await.expect("enqueue").expect("new id");
    let two = enqueue_job(&mut connection, &keys, &second, 60).await.expect("enqueue").expect("new id");
    assert_eq!((one.ticket, one.position), (1, 1));
    assert_eq!((two.ticket, two.position), (2, 2));
    assert_eq!(enqueue_job(&mut connection, &keys, &first, 60).await.expect("enqueue"), None);

    let queued: Vec<String> =
        connection.lrange(keys.lane_queue(Lane::Standard), 0, -1).await.expect("lrange");
    assert_eq!(queued, vec![first.encode(), second.encode()]);
    let status: String = connection.hget(keys.job_state(&first.id), "status").await.expect("hget");
    assert_eq!(status, "queued");
    let ttl: i64 = connection.ttl(keys.job_state(&first.id)).await.expect("ttl");
    assert!((1..=60).contains(&ttl), "the job state expires: {ttl}");
    let doorbell: u64 = connection.llen(keys.queue_doorbell()).await.expect("llen");
    assert_eq!(doorbell, 2);
}

#[tokio::test]
async fn claim_takes_premium_first_moves_the_job_and_counts_it_served() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let standard = envelope(Lane::Standard);
    let premium = envelope(Lane::Premium);
    enqueue_job(&mut connection, &keys, &standard, 60).await.expect("enqueue");
    enqueue_job(&mut connection, &keys, &premium, 60).await.expect("enqueue");

    let claimed =
        claim_next_job(&mut connection, &keys, "w1", &PREMIUM_FIRST).await.expect("claim").expect("a job");
    assert_eq!(claimed.lane, Lane::Premium);
    assert_eq!(claimed.raw_envelope, premium.encode());
    let processing: Vec<String> =
        connection.lrange(keys.worker_processing_list("w1"), 0, -1).await.expect("lrange");
    assert_eq!(processing, vec![premium.encode()]);
    let served: u64 = connection.get(keys.lane_served_tickets(Lane::Premium)).await.expect("get");
    assert_eq!(served, 1);

    let next =
        claim_next_job(&mut connection, &keys, "w1", &PREMIUM_FIRST).await.expect("claim").expect("a job");
    assert_eq!(next.lane, Lane::Standard);
    assert_eq!(claim_next_job(&mut connection, &keys, "w1", &PREMIUM_FIRST).await.expect("claim"), None);
    let doorbell: u64 = connection.llen(keys.queue_doorbell()).await.expect("llen");
    assert_eq!(doorbell, 0, "an empty claim clears the stale doorbell");
}

#[tokio::test]
async fn dead_lettering_moves_a_claimed_job_exactly_once() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let raw = "{not an envelope".to_owned();
    let _: () = connection.rpush(keys.lane_queue(Lane::Standard), &raw).await.expect("rpush");
    let claimed =
        claim_next_job(&mut connection, &keys, "w1", &PREMIUM_FIRST).await.expect("claim").expect("job");
    let letter = DeadLetter {
        job_id: None,
        reason: "undecodable_envelope".to_owned(),
        last_error: "bad json".to_owned(),
        attempts: 0,
        worker_id: "w1".to_owned(),
        dead_at_ms: 9,
        raw_envelope: claimed.raw_envelope,
    };
    assert!(dead_letter_job(&mut connection, &keys, &letter, CAPS).await.expect("move"));
    assert!(!dead_letter_job(&mut connection, &keys, &letter, CAPS).await.expect("move"), "already moved");
    let letters: Vec<String> = connection.lrange(keys.dead_letters(), 0, -1).await.expect("lrange");
    assert_eq!(letters.len(), 1);
    assert_eq!(DeadLetter::decode(&letters[0]).expect("decodes"), letter);
    let processing: u64 = connection.llen(keys.worker_processing_list("w1")).await.expect("llen");
    assert_eq!(processing, 0);
}

#[tokio::test]
async fn claims_share_the_workers_between_lanes_by_weight_and_never_leave_a_lane_idle_while_work_waits() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    for _ in 0..8 {
        enqueue_job(&mut connection, &keys, &envelope(Lane::Premium), 60).await.expect("enqueue");
        enqueue_job(&mut connection, &keys, &envelope(Lane::Standard), 60).await.expect("enqueue");
    }
    let weights = [(Lane::Premium, 3), (Lane::Standard, 1)];
    let mut turn = 0;
    let mut next_order = || {
        turn += 1;
        lanes_in_claim_order(turn, &weights)
    };
    let mut first_eight = Vec::new();
    for _ in 0..8 {
        let claimed =
            claim_next_job(&mut connection, &keys, "w1", &next_order()).await.expect("claim").expect("job");
        first_eight.push(claimed.lane);
    }
    let premium = first_eight.iter().filter(|lane| **lane == Lane::Premium).count();
    assert_eq!(premium, 6, "3 of every 4 claims serve premium: {first_eight:?}");

    // Once premium is empty, its turns go to standard.
    let mut rest = Vec::new();
    while let Some(claimed) =
        claim_next_job(&mut connection, &keys, "w1", &next_order()).await.expect("claim")
    {
        rest.push(claimed.lane);
    }
    assert_eq!(rest.len(), 8);
    assert_eq!(rest.iter().filter(|lane| **lane == Lane::Standard).count(), 6);
}

#[tokio::test]
async fn one_claim_takes_up_to_its_bound_oldest_first_lane_by_lane_and_counts_each_served() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let premium: Vec<_> = (0..2).map(|_| envelope(Lane::Premium)).collect();
    let standard: Vec<_> = (0..3).map(|_| envelope(Lane::Standard)).collect();
    for job in premium.iter().chain(&standard) {
        enqueue_job(&mut connection, &keys, job, 60).await.expect("enqueue");
    }

    let first = claim_jobs(&mut connection, &keys, "w1", &PREMIUM_FIRST, 3).await.expect("claim");
    let lanes_and_envelopes: Vec<_> = first.iter().map(|job| (job.lane, job.raw_envelope.clone())).collect();
    assert_eq!(
        lanes_and_envelopes,
        vec![
            (Lane::Premium, premium[0].encode()),
            (Lane::Premium, premium[1].encode()),
            (Lane::Standard, standard[0].encode())
        ]
    );
    let rest = claim_jobs(&mut connection, &keys, "w1", &PREMIUM_FIRST, 16).await.expect("claim");
    assert_eq!(rest.len(), 2, "only what was left");
    let served: Vec<Option<u64>> = redis::cmd("MGET")
        .arg(keys.lane_served_tickets(Lane::Premium))
        .arg(keys.lane_served_tickets(Lane::Standard))
        .query_async(&mut connection)
        .await
        .expect("mget");
    assert_eq!(served, vec![Some(2), Some(3)]);
    let processing: u64 = connection.llen(keys.worker_processing_list("w1")).await.expect("llen");
    assert_eq!(processing, 5);
    assert!(claim_jobs(&mut connection, &keys, "w1", &PREMIUM_FIRST, 16).await.expect("claim").is_empty());
}

#[tokio::test]
async fn a_claim_queued_behind_the_doorbell_takes_the_job_that_rang_it() {
    let redis = RedisServer::start().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let mut blocking = redis.connection().await;
    let mut connection = redis.connection().await;
    let quiet = wait_for_doorbell_then_claim(
        &mut blocking,
        &keys,
        "w1",
        &PREMIUM_FIRST,
        4,
        Duration::from_millis(100),
    )
    .await
    .expect("wait");
    assert_eq!(quiet, Vec::new(), "nothing rang, nothing was claimed");

    let job = envelope(Lane::Standard);
    let waiting = tokio::spawn({
        let keys = keys.clone();
        async move {
            wait_for_doorbell_then_claim(
                &mut blocking,
                &keys,
                "w1",
                &PREMIUM_FIRST,
                4,
                Duration::from_secs(10),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    enqueue_job(&mut connection, &keys, &job, 60).await.expect("enqueue");
    let claimed = waiting.await.expect("task").expect("wait");
    assert_eq!(claimed.len(), 1, "the job that rang");
    assert_eq!(claimed[0].raw_envelope, job.encode());
    let processing: Vec<String> =
        connection.lrange(keys.worker_processing_list("w1"), 0, -1).await.expect("lrange");
    assert_eq!(processing, vec![job.encode()]);
}
