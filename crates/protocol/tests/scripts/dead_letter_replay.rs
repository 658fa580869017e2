//! `replay_dead_letter.lua`: an operator's replay moves one dead letter back onto its lane, atomically and once.

use protocol::dead_letter::{DeadLetter, ReplayOutcome, replay_dead_letter};
use protocol::job_lifecycle::{DOORBELL_CAPACITY, enqueue_job};
use protocol::{JobEnvelope, Lane, RedisKeys, StreamEvent};
use redis::AsyncCommands;
use test_support::{RedisServer, unique_key_prefix};

use crate::envelope;

fn dead_letter_for(envelope: &JobEnvelope) -> DeadLetter {
    DeadLetter {
        job_id: Some(envelope.id),
        reason: "poison_job".to_owned(),
        last_error: "the worker died three times".to_owned(),
        attempts: 3,
        worker_id: "w1".to_owned(),
        dead_at_ms: 5,
        raw_envelope: envelope.encode(),
    }
}

#[tokio::test]
async fn a_replay_moves_exactly_that_record_to_the_tail_of_its_lane_as_a_fresh_queued_job() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    // One job already waits in the lane, so the replayed one must land behind it.
    let waiting = envelope(Lane::Standard);
    enqueue_job(&mut connection, &keys, &waiting, 60).await.expect("enqueue").expect("new id");
    let dead = JobEnvelope { attempt: 3, recoveries: 3, deadline_ms: 10, ..envelope(Lane::Standard) };
    let other_dead = envelope(Lane::Standard);
    let record = dead_letter_for(&dead).encode();
    let other_record = dead_letter_for(&other_dead).encode();
    let _: () = connection.rpush(keys.dead_letters(), &[&other_record, &record]).await.expect("rpush");
    // What the failed attempt left behind: a final state and part of an answer.
    let _: () = connection
        .hset_multiple(keys.job_state(&dead.id), &[("status", "failed"), ("worker", "w1"), ("attempt", "3")])
        .await
        .expect("hset");
    let old_event = StreamEvent::Token { seq: 1, text: "half an ans".to_owned() };
    let _: () = connection.rpush(keys.job_replay_log(&dead.id), old_event.encode()).await.expect("rpush");

    let fresh =
        DeadLetter::decode(&record).expect("decodes").replayable_envelope(1_000, 120).expect("replayable");
    let ReplayOutcome::Queued(replayed) =
        replay_dead_letter(&mut connection, &keys, &record, &fresh, 600).await.expect("replay")
    else {
        panic!("moved")
    };

    assert_eq!((replayed.ticket, replayed.position), (2, 2));
    let letters: Vec<String> = connection.lrange(keys.dead_letters(), 0, -1).await.expect("lrange");
    assert_eq!(letters, vec![other_record], "only that record left the dead-letter list");
    let lane: Vec<String> = connection.lrange(keys.lane_queue(Lane::Standard), 0, -1).await.expect("lrange");
    assert_eq!(lane, vec![waiting.encode(), fresh.encode()]);
    let queued = JobEnvelope::decode(&lane[1]).expect("decodes");
    assert_eq!(
        (queued.created_at_ms, queued.attempt, queued.recoveries, queued.deadline_ms),
        (1_000, 1, 0, 121_000)
    );

    let state: std::collections::HashMap<String, String> =
        connection.hgetall(keys.job_state(&dead.id)).await.expect("hgetall");
    let expected: std::collections::HashMap<String, String> = [
        ("status", "queued".to_owned()),
        ("ticket", "2".to_owned()),
        ("lane", "standard".to_owned()),
        ("attempt", "0".to_owned()),
        ("identity", dead.identity.clone()),
        ("created_at_ms", "1000".to_owned()),
    ]
    .into_iter()
    .map(|(field, value)| (field.to_owned(), value))
    .collect();
    assert_eq!(state, expected, "the old state (worker, final status) is gone");
    let ttl: i64 = connection.ttl(keys.job_state(&dead.id)).await.expect("ttl");
    assert!((1..=600).contains(&ttl), "the job state expires: {ttl}");
    let log_exists: bool = connection.exists(keys.job_replay_log(&dead.id)).await.expect("exists");
    assert!(!log_exists, "the replayed job streams from seq 1");
    let doorbell: u64 = connection.llen(keys.queue_doorbell()).await.expect("llen");
    assert_eq!(doorbell, 2, "a worker is woken for the replayed job");
    let replays: u64 = connection.get(keys.dead_letter_replays()).await.expect("get");
    assert_eq!(replays, 1);
}

#[tokio::test]
async fn replaying_a_record_that_is_gone_changes_nothing_so_a_job_is_never_queued_twice() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let dead = envelope(Lane::Premium);
    let record = dead_letter_for(&dead).encode();
    let _: () = connection.rpush(keys.dead_letters(), &record).await.expect("rpush");
    let fresh = dead_letter_for(&dead).replayable_envelope(1, 60).expect("replayable");

    let first = replay_dead_letter(&mut connection, &keys, &record, &fresh, 60).await.expect("replay");
    let second = replay_dead_letter(&mut connection, &keys, &record, &fresh, 60).await.expect("replay");

    assert!(matches!(first, ReplayOutcome::Queued(job) if job.position == 1), "{first:?}");
    assert_eq!(second, ReplayOutcome::NotInList);
    let lane: u64 = connection.llen(keys.lane_queue(Lane::Premium)).await.expect("llen");
    assert_eq!(lane, 1);
    let replays: u64 = connection.get(keys.dead_letter_replays()).await.expect("get");
    assert_eq!(replays, 1);
    let letters: u64 = connection.llen(keys.dead_letters()).await.expect("llen");
    assert_eq!(letters, 0);
}

#[tokio::test]
async fn the_doorbell_stays_capped_when_replays_pile_up() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let rings = vec!["1"; DOORBELL_CAPACITY as usize];
    let _: () = connection.rpush(keys.queue_doorbell(), rings).await.expect("rpush");
    let dead = envelope(Lane::Standard);
    let record = dead_letter_for(&dead).encode();
    let _: () = connection.rpush(keys.dead_letters(), &record).await.expect("rpush");
    let fresh = dead_letter_for(&dead).replayable_envelope(1, 60).expect("replayable");

    let replayed = replay_dead_letter(&mut connection, &keys, &record, &fresh, 60).await.expect("replay");
    assert!(matches!(replayed, ReplayOutcome::Queued(_)), "moved");

    let doorbell: u64 = connection.llen(keys.queue_doorbell()).await.expect("llen");
    assert_eq!(doorbell, DOORBELL_CAPACITY);
}
