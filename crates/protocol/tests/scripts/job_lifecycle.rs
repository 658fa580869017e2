//! Enqueue, claim, start, publish and dead-letter.

use protocol::dead_letter::DeadLetter;
use protocol::job_lifecycle::{
    JobEnding, JobFence, JobStart, PublishOutcome, claim_next_job, dead_letter_job, enqueue_job,
    publish_stream_events, start_job,
};
use protocol::{JobId, JobStatus, Lane, RedisKeys, StreamEvent, Usage};
use redis::AsyncCommands;
use test_support::{RedisServer, unique_key_prefix};

use crate::envelope;

/// Premium first, always (for tests that are not about weights).
const PREMIUM_FIRST: [(Lane, u32); 2] = [(Lane::Premium, 1_000_000), (Lane::Standard, 1)];

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
async fn stream_writes_are_fenced_to_the_owning_worker_and_attempt_and_finishing_cleans_up() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);
    enqueue_job(&mut connection, &keys, &job, 60).await.expect("enqueue");
    let claimed =
        claim_next_job(&mut connection, &keys, "w1", &PREMIUM_FIRST).await.expect("claim").expect("job");
    let start = start_job(&mut connection, &keys, &job.id, "w1", 1, 5).await.expect("start");
    assert_eq!(start, JobStart::Started { replay_log_length: 0 });

    let mut subscriber = redis.client().get_async_pubsub().await.expect("pubsub");
    subscriber.subscribe(keys.job_event_channel(&job.id)).await.expect("subscribe");

    let owner = JobFence {
        job_id: &job.id,
        identity: &job.identity,
        worker_id: "w1",
        attempt: 1,
        raw_envelope: &claimed.raw_envelope,
    };
    let token = StreamEvent::Token { seq: 1, text: "Hello".to_owned() };
    let appended =
        publish_stream_events(&mut connection, &keys, owner, std::slice::from_ref(&token), None, 30, 6).await;
    assert_eq!(appended.expect("publish"), PublishOutcome::Appended { replay_log_length: 1 });

    let stranger = JobFence { worker_id: "w2", ..owner };
    let stale_attempt = JobFence { attempt: 2, ..owner };
    for fence in [stranger, stale_attempt] {
        let refused =
            publish_stream_events(&mut connection, &keys, fence, std::slice::from_ref(&token), None, 30, 6)
                .await;
        assert_eq!(refused.expect("publish"), PublishOutcome::Fenced);
    }

    let done = StreamEvent::Done { seq: 2, usage: Usage::default(), finish_reason: "stop".to_owned() };
    let finished = publish_stream_events(
        &mut connection,
        &keys,
        owner,
        std::slice::from_ref(&done),
        Some(JobEnding { status: JobStatus::Done, tokens_used: 0, dead_letter: None }),
        30,
        7,
    )
    .await;
    assert_eq!(finished.expect("publish"), PublishOutcome::Appended { replay_log_length: 2 });

    let log: Vec<String> = connection.lrange(keys.job_replay_log(&job.id), 0, -1).await.expect("lrange");
    assert_eq!(log, vec![token.encode(), done.encode()]);
    let status: String = connection.hget(keys.job_state(&job.id), "status").await.expect("hget");
    assert_eq!(status, "done");
    let processing: u64 = connection.llen(keys.worker_processing_list("w1")).await.expect("llen");
    assert_eq!(processing, 0);
    let log_ttl: i64 = connection.ttl(keys.job_replay_log(&job.id)).await.expect("ttl");
    assert!((1..=30).contains(&log_ttl), "the replay log expires: {log_ttl}");

    let mut messages = subscriber.on_message();
    for expected in [token, done] {
        let message = futures::StreamExt::next(&mut messages).await.expect("published");
        assert_eq!(message.get_payload::<String>().expect("payload"), expected.encode());
    }
    drop(messages);

    let again = start_job(&mut connection, &keys, &job.id, "w3", 2, 8).await.expect("start");
    assert_eq!(again, JobStart::AlreadyFinal { status: JobStatus::Done, replay_log_length: 2 });
    let missing = start_job(&mut connection, &keys, &JobId::new_random(), "w3", 1, 8).await.expect("start");
    assert_eq!(missing, JobStart::Missing);
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
    assert!(dead_letter_job(&mut connection, &keys, &letter).await.expect("move"));
    assert!(!dead_letter_job(&mut connection, &keys, &letter).await.expect("move"), "already moved");
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
    let mut first_eight = Vec::new();
    for _ in 0..8 {
        let claimed =
            claim_next_job(&mut connection, &keys, "w1", &weights).await.expect("claim").expect("job");
        first_eight.push(claimed.lane);
    }
    let premium = first_eight.iter().filter(|lane| **lane == Lane::Premium).count();
    assert_eq!(premium, 6, "3 of every 4 claims serve premium: {first_eight:?}");

    // Once premium is empty, its turns go to standard.
    let mut rest = Vec::new();
    while let Some(claimed) = claim_next_job(&mut connection, &keys, "w1", &weights).await.expect("claim") {
        rest.push(claimed.lane);
    }
    assert_eq!(rest.len(), 8);
    assert_eq!(rest.iter().filter(|lane| **lane == Lane::Standard).count(), 6);
}
