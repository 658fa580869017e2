//! Enqueue, claim, start, publish and dead-letter.

use protocol::dead_letter::{DeadLetter, DeadLetterCaps};
use std::time::Duration;

use protocol::job_lifecycle::{
    AppendOutcome, FinishOutcome, JobEnding, JobFence, JobStart, JobStreamKeys, append_stream_events,
    claim_jobs, claim_next_job, dead_letter_job, enqueue_job, finish_job, lanes_in_claim_order, start_job,
    start_job_with_permit_request, wait_for_doorbell_then_claim,
};
use protocol::limits::LlmLimits;
use protocol::upstream_capacity::{PermitDecision, PermitRequest};
use protocol::{JobId, JobStatus, Lane, RedisKeys, StreamEvent, Usage};
use redis::AsyncCommands;
use test_support::{RedisServer, unique_key_prefix};

use crate::envelope;

/// Premium first, then standard (for tests that are not about weights).
const PREMIUM_FIRST: [Lane; 2] = [Lane::Premium, Lane::Standard];
const CAPS: DeadLetterCaps = DeadLetterCaps { max_records: 100, max_bytes: 1 << 20 };

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

/// Enqueues and claims `job` for worker `w1`, and starts it; returns the raw envelope and the start.
async fn claim_and_start(
    connection: &mut redis::aio::MultiplexedConnection,
    keys: &RedisKeys,
    job: &protocol::JobEnvelope,
) -> (String, JobStart) {
    enqueue_job(connection, keys, job, 60).await.expect("enqueue");
    let claimed = claim_next_job(connection, keys, "w1", &PREMIUM_FIRST).await.expect("claim").expect("job");
    let start = start_job(connection, keys, &job.id, "w1", 5, 120).await.expect("start");
    (claimed.raw_envelope, start)
}

fn done(seq: u64) -> StreamEvent {
    StreamEvent::Done { seq, usage: Usage::default(), finish_reason: "stop".to_owned() }
}

fn ended(status: JobStatus) -> JobEnding<'static> {
    JobEnding { status, tokens_used: 0, dead_letter: None }
}

#[tokio::test]
async fn batches_are_appended_and_published_as_one_message_and_the_ending_cleans_up() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);
    let (raw_envelope, start) = claim_and_start(&mut connection, &keys, &job).await;
    assert_eq!(start, JobStart::Started { replay_log_length: 0, attempt: 1, cancel_requested: false });
    let mut subscriber = redis.client().get_async_pubsub().await.expect("pubsub");
    subscriber.subscribe(keys.job_event_channel(&job.id)).await.expect("subscribe");
    let stream = JobStreamKeys::new(&keys, &job.id);

    let first = StreamEvent::Token { seq: 1, text: "Hello".to_owned() };
    let batch = [
        StreamEvent::Token { seq: 2, text: ", wor".to_owned() },
        StreamEvent::Token { seq: 3, text: "ld".to_owned() },
    ];
    let appended = append_stream_events(&mut connection, &stream, std::slice::from_ref(&first), 120).await;
    assert_eq!(appended.expect("append"), AppendOutcome::Appended { replay_log_length: 1 });
    let appended = append_stream_events(&mut connection, &stream, &batch, 0).await;
    assert_eq!(appended.expect("append"), AppendOutcome::Appended { replay_log_length: 3 });
    let log_ttl: i64 = connection.ttl(keys.job_replay_log(&job.id)).await.expect("ttl");
    assert!((61..=120).contains(&log_ttl), "the first write gave the log its TTL: {log_ttl}");

    let fence = JobFence {
        job_id: &job.id,
        identity: &job.identity,
        worker_id: "w1",
        attempt: 1,
        raw_envelope: &raw_envelope,
        created_at_ms: job.created_at_ms,
    };
    let finished =
        finish_job(&mut connection, &keys, fence, &[done(4)], ended(JobStatus::Done), 4, 0, 30, 7, CAPS)
            .await;
    assert_eq!(finished.expect("finish"), FinishOutcome::Finished { replay_log_length: 4 });

    let log: Vec<String> = connection.lrange(keys.job_replay_log(&job.id), 0, -1).await.expect("lrange");
    assert_eq!(log, vec![first.encode(), batch[0].encode(), batch[1].encode(), done(4).encode()]);
    let status: String = connection.hget(keys.job_state(&job.id), "status").await.expect("hget");
    assert_eq!(status, "done");
    let state_ttl: i64 = connection.ttl(keys.job_state(&job.id)).await.expect("ttl");
    assert!((1..=30).contains(&state_ttl), "the state lives for the replay time: {state_ttl}");
    let processing: u64 = connection.llen(keys.worker_processing_list("w1")).await.expect("llen");
    assert_eq!(processing, 0);

    let mut messages = subscriber.on_message();
    let mut published = Vec::new();
    for _ in 0..3 {
        let message = futures::StreamExt::next(&mut messages).await.expect("published");
        let payload = message.get_payload::<String>().expect("payload");
        published
            .push(StreamEvent::decode_published(&payload).collect::<Result<Vec<_>, _>>().expect("events"));
    }
    assert_eq!(published, vec![vec![first], batch.to_vec(), vec![done(4)]], "one message per write");
    drop(messages);

    let again = start_job(&mut connection, &keys, &job.id, "w3", 8, 120).await.expect("start");
    assert_eq!(again, JobStart::AlreadyFinal { status: JobStatus::Done, replay_log_length: 4 });
    let missing = start_job(&mut connection, &keys, &JobId::new_random(), "w3", 8, 120).await.expect("start");
    assert_eq!(missing, JobStart::Missing);
}

#[tokio::test]
async fn a_write_at_the_wrong_length_is_taken_back_unless_it_is_the_retry_of_one_that_landed() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);
    claim_and_start(&mut connection, &keys, &job).await;
    let stream = JobStreamKeys::new(&keys, &job.id);
    let first = [StreamEvent::Token { seq: 1, text: "a".to_owned() }];
    let second = [StreamEvent::Token { seq: 2, text: "b".to_owned() }];
    append_stream_events(&mut connection, &stream, &first, 120).await.expect("append");
    append_stream_events(&mut connection, &stream, &second, 0).await.expect("append");

    // The reply of the second write was lost and it is sent again: it is recognised, nothing is added.
    let retried = append_stream_events(&mut connection, &stream, &second, 0).await.expect("append");
    assert_eq!(retried, AppendOutcome::Appended { replay_log_length: 2 });
    // A writer that believes the log is shorter or longer than it is, is refused.
    let behind = [StreamEvent::Token { seq: 2, text: "other".to_owned() }];
    let ahead = [StreamEvent::Token { seq: 9, text: "c".to_owned() }];
    for events in [&behind[..], &ahead[..]] {
        let refused = append_stream_events(&mut connection, &stream, events, 0).await.expect("append");
        assert_eq!(refused, AppendOutcome::Fenced);
    }
    let log: Vec<String> = connection.lrange(keys.job_replay_log(&job.id), 0, -1).await.expect("lrange");
    assert_eq!(log, vec![first[0].encode(), second[0].encode()], "refused writes leave no trace");
}

#[tokio::test]
async fn a_new_attempt_appends_a_reset_and_the_earlier_attempt_can_neither_write_nor_end_the_job() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);
    let (raw_envelope, _) = claim_and_start(&mut connection, &keys, &job).await;
    let stream = JobStreamKeys::new(&keys, &job.id);
    let text = [StreamEvent::Token { seq: 1, text: "first try".to_owned() }];
    append_stream_events(&mut connection, &stream, &text, 120).await.expect("append");

    // Worker w1 is presumed dead; w2 takes the job over.
    let _: () = connection.hset(keys.job_state(&job.id), "status", "queued").await.expect("hset");
    let takeover = start_job(&mut connection, &keys, &job.id, "w2", 9, 120).await.expect("start");
    assert_eq!(takeover, JobStart::Started { replay_log_length: 2, attempt: 2, cancel_requested: false });
    let reset = StreamEvent::Reset { seq: 2 };

    // w1 is alive after all and goes on: its next batch and its ending are refused.
    let stale = [StreamEvent::Token { seq: 2, text: " goes on".to_owned() }];
    assert_eq!(
        append_stream_events(&mut connection, &stream, &stale, 0).await.expect("append"),
        AppendOutcome::Fenced
    );
    let stale_fence = JobFence {
        job_id: &job.id,
        identity: &job.identity,
        worker_id: "w1",
        attempt: 1,
        raw_envelope: &raw_envelope,
        created_at_ms: job.created_at_ms,
    };
    let stale_end = finish_job(
        &mut connection,
        &keys,
        stale_fence,
        &[done(3)],
        ended(JobStatus::Done),
        3,
        0,
        30,
        9,
        CAPS,
    )
    .await;
    assert_eq!(stale_end.expect("finish"), FinishOutcome::Fenced);

    let fresh = [StreamEvent::Token { seq: 3, text: "second try".to_owned() }];
    append_stream_events(&mut connection, &stream, &fresh, 0).await.expect("append");
    let log: Vec<String> = connection.lrange(keys.job_replay_log(&job.id), 0, -1).await.expect("lrange");
    assert_eq!(log, vec![text[0].encode(), reset.encode(), fresh[0].encode()]);
}

#[tokio::test]
async fn a_job_that_ran_before_gets_a_reset_even_when_its_log_was_empty() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);
    claim_and_start(&mut connection, &keys, &job).await;
    let _: () = connection.hset(keys.job_state(&job.id), "status", "queued").await.expect("hset");

    let takeover = start_job(&mut connection, &keys, &job.id, "w2", 9, 120).await.expect("start");
    assert_eq!(takeover, JobStart::Started { replay_log_length: 1, attempt: 2, cancel_requested: false });
    // The earlier attempt's first write (expecting an empty log) can no longer land.
    let stream = JobStreamKeys::new(&keys, &job.id);
    let late = [StreamEvent::Token { seq: 1, text: "late".to_owned() }];
    assert_eq!(
        append_stream_events(&mut connection, &stream, &late, 120).await.expect("append"),
        AppendOutcome::Fenced
    );
    let ttl: i64 = connection.ttl(keys.job_replay_log(&job.id)).await.expect("ttl");
    assert!((61..=120).contains(&ttl), "the log the reset created expires: {ttl}");
}

#[tokio::test]
async fn an_ending_happens_once_even_when_it_is_sent_again() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);
    let (raw_envelope, _) = claim_and_start(&mut connection, &keys, &job).await;
    let fence = JobFence {
        job_id: &job.id,
        identity: &job.identity,
        worker_id: "w1",
        attempt: 1,
        raw_envelope: &raw_envelope,
        created_at_ms: job.created_at_ms,
    };
    let letter = DeadLetter {
        job_id: Some(job.id),
        reason: "upstream_failed".to_owned(),
        last_error: "500".to_owned(),
        attempts: 3,
        worker_id: "w1".to_owned(),
        dead_at_ms: 9,
        raw_envelope: raw_envelope.clone(),
    };
    let failure =
        StreamEvent::Error { seq: 1, code: "upstream_error".to_owned(), message: "failed".to_owned() };
    let ending = JobEnding { status: JobStatus::Failed, tokens_used: 40, dead_letter: Some(&letter) };
    let now_ms = 1_000_000;
    let first = finish_job(
        &mut connection,
        &keys,
        fence,
        std::slice::from_ref(&failure),
        ending,
        1,
        120,
        30,
        now_ms,
        CAPS,
    )
    .await;
    assert_eq!(first.expect("finish"), FinishOutcome::Finished { replay_log_length: 1 });
    let again = finish_job(
        &mut connection,
        &keys,
        fence,
        std::slice::from_ref(&failure),
        ending,
        1,
        120,
        30,
        now_ms,
        CAPS,
    )
    .await;
    assert_eq!(again.expect("finish"), FinishOutcome::AlreadyFinished);

    let letters: u64 = connection.llen(keys.dead_letters()).await.expect("llen");
    assert_eq!(letters, 1, "one dead letter");
    let budget: u64 =
        connection.get(keys.token_budget(&job.identity, now_ms / 86_400_000)).await.expect("get");
    assert_eq!(budget, 40, "charged once");
    let outcomes: u64 = connection
        .hget(keys.job_outcome_counts(now_ms / 1000 / protocol::keys::ADMISSION_STATS_BUCKET_S), "failed")
        .await
        .expect("hget");
    assert_eq!(outcomes, 1, "counted once");
    let log: u64 = connection.llen(keys.job_replay_log(&job.id)).await.expect("llen");
    assert_eq!(log, 1, "one error event");
}

#[tokio::test]
async fn a_cancellation_requested_while_an_earlier_attempt_ran_is_reported_at_the_next_start() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let job = envelope(Lane::Standard);
    claim_and_start(&mut connection, &keys, &job).await;
    let cancel =
        protocol::job_lifecycle::cancel_job(&mut connection, &keys, &job.id, &job.identity, 1, "bye", 30, 5)
            .await
            .expect("cancel");
    assert_eq!(cancel, protocol::job_lifecycle::CancelOutcome::Cancelling { worker_id: "w1".to_owned() });
    let _: () = connection.hset(keys.job_state(&job.id), "status", "queued").await.expect("hset");

    let takeover = start_job(&mut connection, &keys, &job.id, "w2", 9, 120).await.expect("start");
    assert!(matches!(takeover, JobStart::Started { cancel_requested: true, .. }), "{takeover:?}");
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

#[tokio::test]
async fn a_start_can_bring_its_upstream_permit_along_even_after_redis_forgot_its_scripts() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let keys = RedisKeys::new(unique_key_prefix());
    let permit = PermitRequest {
        limits: LlmLimits { max_requests_per_second: 100_000.0, max_tokens_per_minute: 1_000_000 },
        policy: protocol::upstream_capacity::UpstreamPolicy {
            window_s: 30,
            min_calls: 3,
            failure_ratio: 0.5,
            cool_down_ms: 1_000,
            probes: 1,
            probe_timeout_ms: 1_000,
            start_jitter_allowance_ms: 20,
            start_horizon_ms: 100,
        },
        reserve_tokens: 10,
    };
    // A fresh Redis knows no script; the second start finds them loaded; then Redis forgets them (a restart).
    for (round, forget_scripts) in [(1, false), (2, false), (3, true)] {
        let job = envelope(Lane::Standard);
        enqueue_job(&mut connection, &keys, &job, 60).await.expect("enqueue");
        claim_next_job(&mut connection, &keys, "w1", &PREMIUM_FIRST).await.expect("claim").expect("job");
        if forget_scripts {
            let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut connection).await.expect("flush");
        }
        let (start, decision) =
            start_job_with_permit_request(&mut connection, &keys, &job.id, "w1", 5, 120, &permit)
                .await
                .expect("start");
        assert_eq!(start, JobStart::Started { replay_log_length: 0, attempt: 1, cancel_requested: false });
        if round == 2 {
            assert!(matches!(decision, Some(PermitDecision::Granted(_))), "{decision:?}");
        } else {
            assert_eq!(
                decision, None,
                "round {round}: the permit part failed; it is asked for the usual way"
            );
        }
    }
}
