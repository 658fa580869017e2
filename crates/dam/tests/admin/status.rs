//! `GET /admin/status` and the fleet gauges of `/metrics`: everything an operator sees at a glance, read from
//! Redis as the other services left it; and a clear 503 while Redis is away.

use std::time::{Duration, Instant};

use protocol::dead_letter::DeadLetter;
use protocol::keys::{ADMISSION_STATS_BUCKET_S, circuit_field};
use protocol::{Lane, unix_time_ms};
use redis::AsyncCommands;
use serde_json::json;

use crate::support::{AdminTestApp, assert_error, chat_envelope, dam_only};

/// Arranges a busy system directly in Redis, as gateways and workers would have left it.
async fn arrange_a_busy_system(app: &AdminTestApp) -> (protocol::JobEnvelope, u64) {
    let keys = app.keys();
    let mut redis = app.redis().await;
    let oldest = chat_envelope("waiting longest", Lane::Standard, 4_000);
    let newer = chat_envelope("waiting less", Lane::Standard, 1_000);
    let _: () = redis
        .rpush(keys.lane_queue(Lane::Standard), &[oldest.encode(), newer.encode()])
        .await
        .expect("rpush");
    let _: () = redis.sadd(keys.worker_registry(), &["w-alive", "w-dead"]).await.expect("sadd");
    let beat = unix_time_ms();
    let _: () = redis.pset_ex(keys.worker_heartbeat("w-alive"), beat, 60_000).await.expect("set");
    let _: () =
        redis.rpush(keys.worker_processing_list("w-alive"), &["job-a", "job-b"]).await.expect("rpush");
    let _: () = redis.rpush(keys.worker_processing_list("w-dead"), "job-c").await.expect("rpush");
    let open_until = unix_time_ms() + 30_000;
    let _: () = redis
        .hset_multiple(
            keys.circuit_breaker(),
            &[
                (circuit_field::STATE, "open".to_owned()),
                (circuit_field::OPEN_UNTIL_MS, open_until.to_string()),
            ],
        )
        .await
        .expect("hset");
    let bucket = unix_time_ms() / 1_000 / ADMISSION_STATS_BUCKET_S;
    let _: () = redis
        .hset_multiple(keys.admission_counts(bucket), &[("admitted", 5), ("rate_limited", 2), ("joined", 1)])
        .await
        .expect("hset");
    let _: () = redis
        .hset_multiple(keys.admission_counts(bucket - 2), &[("admitted", 3), ("queue_full", 4)])
        .await
        .expect("hset");
    // Older than a minute: not counted.
    let _: () = redis.hset(keys.admission_counts(bucket - 7), "admitted", 100).await.expect("hset");
    let _: () = redis
        .hset_multiple(keys.job_outcome_counts(bucket), &[("done", 6), ("expired", 1)])
        .await
        .expect("hset");
    let _: () = redis.hset(keys.job_outcome_counts(bucket - 1), "done", 2).await.expect("hset");
    let _: () = redis.hset(keys.job_outcome_counts(bucket - 9), "failed", 50).await.expect("hset");
    let letter = DeadLetter {
        job_id: None,
        reason: "undecodable_envelope".to_owned(),
        last_error: "bad".to_owned(),
        attempts: 0,
        worker_id: "w-dead".to_owned(),
        dead_at_ms: 1,
        raw_envelope: "{".to_owned(),
    };
    let _: () = redis.rpush(keys.dead_letters(), letter.encode()).await.expect("rpush");
    let _: () = redis.set(keys.dead_letter_replays(), 3).await.expect("set");
    (oldest, beat)
}

#[tokio::test]
async fn status_shows_lanes_workers_circuit_intake_limits_admissions_and_dead_letters() {
    let app = AdminTestApp::start(dam_only()).await;
    let (oldest, beat) = arrange_a_busy_system(&app).await;

    let (status, report) = app.get("/admin/status").await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["lanes"][0],
        json!({"lane": "premium", "depth": 0, "oldest_wait_ms": null, "oldest_job_id": null})
    );
    assert_eq!(report["lanes"][1]["lane"], "standard");
    assert_eq!(report["lanes"][1]["depth"], 2);
    assert_eq!(report["lanes"][1]["oldest_job_id"], oldest.id.to_string());
    let oldest_wait = report["lanes"][1]["oldest_wait_ms"].as_u64().expect("a wait");
    assert!((4_000..10_000).contains(&oldest_wait), "{oldest_wait}");
    assert_eq!(
        report["workers"]["alive"],
        json!([{"id": "w-alive", "last_heartbeat_ms": beat, "jobs_in_flight": 2}])
    );
    assert_eq!(
        report["workers"]["presumed_dead"],
        json!([{"id": "w-dead", "last_heartbeat_ms": null, "jobs_in_flight": 1}])
    );
    assert_eq!(report["jobs_running"], 3);
    assert_eq!(report["circuit_breaker"]["state"], "open");
    assert_eq!(report["intake"]["paused"], false);
    assert_eq!(report["limits"]["source"], "settings");
    assert_eq!(report["limits"]["limits"]["max_queue_depth"], app.stack.settings.limits.max_queue_depth);
    let admissions = &report["admissions_last_minute"];
    assert_eq!(admissions["window_s"], 60);
    assert_eq!((admissions["admitted"].as_u64(), admissions["joined"].as_u64()), (Some(8), Some(1)));
    assert_eq!(admissions["rejected"], json!({"queue_full": 4, "rate_limited": 2}));
    assert_eq!(admissions["rejected_total"], 6);
    assert_eq!(report["job_outcomes_last_minute"], json!({"done": 8, "expired": 1}));
    assert_eq!(report["dead_letters"], json!({"size": 1, "replayed_total": 3, "dropped_total": 0}));
}

#[tokio::test]
async fn an_empty_system_reports_zeros_and_a_closed_circuit() {
    let app = AdminTestApp::start(dam_only()).await;
    let (status, report) = app.get("/admin/status").await;
    assert_eq!(status, 200);
    assert_eq!(report["circuit_breaker"], json!({"state": "closed", "open_until_ms": null}));
    assert_eq!(report["workers"], json!({"alive": [], "presumed_dead": []}));
    assert_eq!(report["dead_letters"], json!({"size": 0, "replayed_total": 0, "dropped_total": 0}));
    assert_eq!(report["admissions_last_minute"]["rejected"], json!({}));
}

#[tokio::test]
async fn garbage_at_the_head_of_a_lane_does_not_break_the_status() {
    let app = AdminTestApp::start(dam_only()).await;
    let _: () =
        app.redis().await.rpush(app.keys().lane_queue(Lane::Premium), "{garbage").await.expect("rpush");
    let _: () = app.redis().await.set(app.keys().live_limits(), "{garbage").await.expect("set");
    let (status, report) = app.get("/admin/status").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["lanes"][0]["depth"], 1);
    assert_eq!(report["lanes"][0]["oldest_wait_ms"], json!(null));
    assert_eq!(report["limits"]["source"], "settings");
}

#[tokio::test]
async fn metrics_show_the_gauges_no_single_gateway_or_worker_can_see() {
    let app = AdminTestApp::start(dam_only()).await;
    arrange_a_busy_system(&app).await;
    let expected = [
        "dam_queue_depth{lane=\"standard\"} 2",
        "dam_queue_depth{lane=\"premium\"} 0",
        "dam_workers_alive 1",
        "dam_workers_presumed_dead 1",
        "dam_jobs_running 3",
        "dam_dead_letters 1",
        "dam_dead_letters_replayed_total 3",
        "dam_circuit_breaker_open 1",
        "dam_fleet_gauges_fresh 1",
    ];

    // Tests share the process's one metrics registry, so a scrape by a concurrent test may interleave; each
    // scrape refreshes the gauges from this test's Redis, so a few tries settle it.
    let text = app
        .stack
        .wait_for("a scrape shows this test's gauges", Duration::from_secs(10), || async {
            let response =
                app.stack.http.get(format!("{}/metrics", app.dam_url())).send().await.expect("get");
            assert_eq!(response.status(), 200);
            let text = response.text().await.expect("text");
            expected.iter().all(|line| text.lines().any(|metric| metric == *line)).then_some(text)
        })
        .await;
    assert!(text.contains("dam_queue_oldest_wait_seconds{lane=\"standard\"}"), "{text}");
}

#[tokio::test]
async fn an_unreachable_redis_gives_503_backend_unavailable_quickly_not_a_hang() {
    let mut app = AdminTestApp::start(dam_only()).await;
    app.stack.redis.stop();
    let started = Instant::now();

    for path in ["/admin/status", "/admin/limits", "/admin/dead-letters", "/admin/keys", "/admin/blocks"] {
        let answer = app.get(path).await;
        assert_error(&answer, 503, "backend_unavailable");
    }
    assert_error(&app.post("/admin/intake/pause", None).await, 503, "backend_unavailable");

    assert!(started.elapsed() < Duration::from_secs(10), "bounded waits: {:?}", started.elapsed());
    let metrics = app.stack.http.get(format!("{}/metrics", app.dam_url())).send().await.expect("get");
    assert_eq!(metrics.status(), 200, "metrics still answer");
}
