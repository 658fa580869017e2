//! The line printed to stderr about once a second while a run goes on: elapsed time, phase, chats done per
//! second, chats in flight, failures, and first-token latency of the measured window so far.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::run_recorder::RunRecorder;

const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Prints until aborted.
pub fn spawn_progress_line(
    recorder: Arc<RunRecorder>,
    in_flight: Arc<AtomicU64>,
    started: Instant,
    measure_from: Instant,
    measure_until: Instant,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at((started + PROGRESS_INTERVAL).into(), PROGRESS_INTERVAL);
        let mut done_before = 0;
        let mut ticked_before = started;
        loop {
            let now = ticks.tick().await.into_std();
            let lifetime = recorder.lifetime();
            let done_per_second =
                (lifetime.done - done_before) as f64 / (now - ticked_before).as_secs_f64().max(1e-3);
            done_before = lifetime.done;
            ticked_before = now;
            let phase = if now < measure_from {
                "warm-up"
            } else if now < measure_until {
                "measuring"
            } else {
                "draining"
            };
            let first_token = recorder.with_measured(|measured| {
                match (measured.first_token.quantile_ms(0.5), measured.first_token.quantile_ms(0.99)) {
                    (Some(p50), Some(p99)) => format!("ttft p50 {p50:.1} ms p99 {p99:.1} ms"),
                    _ => "ttft -".to_owned(),
                }
            });
            eprintln!(
                "[dam-load] {:6.1}s {phase:<9} {done_per_second:8.1} chats/s  in flight {:5}  done {}  failed {}  {first_token}",
                (now - started).as_secs_f64(),
                in_flight.load(Ordering::Relaxed),
                lifetime.done,
                lifetime.failed,
            );
        }
    })
}
