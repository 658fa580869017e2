//! Start, stream and end one attempt: the replay log written in fenced batches and published one message per
//! write, the reset a new attempt appends, an ending applied once, a cancellation carried to the next start, and a
//! start that brings its upstream permit along.

use protocol::dead_letter::DeadLetter;

use protocol::job_lifecycle::{
    AppendOutcome, FinishOutcome, JobEnding, JobStart, JobStreamKeys, append_stream_events, claim_next_job,
    enqueue_job, finish_job, start_job, start_job_with_permit_request,
};
use protocol::limits::LlmLimits;
use protocol::upstream_capacity::{PermitDecision, PermitRequest};
use protocol::{JobId, JobStatus, Lane, RedisKeys, StreamEvent, Usage};
use redis::AsyncCommands;
use test_support::{RedisServer, unique_key_prefix};

use super::{CAPS, PREMIUM_FIRST};
use crate::{envelope, first_attempt_fence};

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

    let fence = first_attempt_fence(&job, &raw_envelope);
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
    let stale_fence = first_attempt_fence(&job, &raw_envelope);
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
    let fence = first_attempt_fence(&job, &raw_envelope);
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
    // The same ending twice, as when the reply to the first was lost and the worker sent it again.
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let events = std::slice::from_ref(&failure);
        let outcome =
            finish_job(&mut connection, &keys, fence, events, ending, 1, 120, 30, now_ms, CAPS).await;
        outcomes.push(outcome.expect("finish"));
    }
    assert_eq!(
        outcomes,
        vec![FinishOutcome::Finished { replay_log_length: 1 }, FinishOutcome::AlreadyFinished]
    );

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
