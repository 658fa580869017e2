//! Builds a worker from settings and runs it until the shutdown future completes: heartbeat, intake, drain,
//! and a clean farewell when no job is left behind. Its own listener (`/metrics`, `/healthz`, `/readyz`) is
//! served from the start to the end, drain included.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use protocol::dead_letter::DeadLetterCaps;
use protocol::live_limits::watch_live_limits;
use protocol::{RedisConnections, RedisKeys, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::abandonment::cancel_abandoned_jobs_until_stopped;
use crate::cancel_listener::{CancelRegistry, listen_for_cancellations};
use crate::error::WorkerError;
use crate::health_api::HealthState;
use crate::heartbeat::{WorkerReadiness, beat_once, deregister_if_idle, keep_heartbeat_until_stopped};
use crate::job_runner::JobContext;
use crate::provider::openai::OpenAiProvider;
use crate::reaper::{Reaper, RecoveryCause};
use crate::routes::build_router;
use crate::worker_loop::consume_jobs_until_stopped;
use crate::worker_metrics::WorkerMetrics;

/// Longest wait, once the worker stopped, for its listener's open connections (a scraper's keep-alive) to close.
const LISTENER_CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// The worker's id: configured, or host name, process id and a random suffix (unique across restarts).
pub fn worker_id_from(settings: &Settings) -> String {
    if !settings.worker.id.is_empty() {
        return settings.worker.id.clone();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// Runs the worker until `shutdown` completes and its jobs are drained or put back, serving `/metrics`,
/// `/healthz` and `/readyz` on `listener` all along.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let redis =
        RedisConnections::new(&settings.redis).map_err(|error| WorkerError::Settings(error.to_string()))?;
    let keys = RedisKeys::new(settings.redis.key_prefix.clone());
    let provider =
        OpenAiProvider::new(&settings.llm).map_err(|error| WorkerError::Settings(error.to_string()))?;
    let worker_id = worker_id_from(&settings);
    // The recorder first, so that the handles resolved once below record into it.
    let prometheus = protocol::telemetry::prometheus_handle();
    let worker_metrics = Arc::new(WorkerMetrics::register());
    let readiness = Arc::new(WorkerReadiness::default());
    let address = listener.local_addr().map_err(|error| WorkerError::Listener(error.to_string()))?;
    let listener_stop = CancellationToken::new();
    let health_state =
        HealthState { redis: redis.clone(), metrics: prometheus, readiness: readiness.clone() };
    let listening = tokio::spawn(
        axum::serve(listener, build_router(health_state))
            .with_graceful_shutdown(listener_stop.clone().cancelled_owned())
            .into_future(),
    );
    tracing::info!(%worker_id, %address, llm = %settings.llm.base_url, concurrency = settings.worker.concurrency, "worker starting");
    let heartbeat_ttl = Duration::from_millis(settings.worker.heartbeat_ttl_ms);
    match beat_once(&redis, &keys, &worker_id, heartbeat_ttl).await {
        Ok(()) => readiness.set_registered(true),
        Err(error) => tracing::warn!(%error, "could not register yet; the heartbeat keeps trying"),
    }
    let reaper = Reaper {
        redis: redis.clone(),
        keys: keys.clone(),
        worker_id: worker_id.clone(),
        max_recoveries: settings.worker.max_recoveries,
        replay_ttl_s: settings.chat.replay_ttl_s,
        dead_letter_caps: DeadLetterCaps::from_settings(&settings),
    };
    // A worker restarted under the same id finds its earlier life's jobs: they were interrupted, not finished.
    match reaper.recover_processing_list(&worker_id, RecoveryCause::WorkerDied).await {
        Ok(0) | Err(_) => {}
        Ok(requeued) => tracing::warn!(requeued, "recovered jobs an earlier run of this worker left behind"),
    }

    let background = CancellationToken::new();
    let heartbeat = tokio::spawn(keep_heartbeat_until_stopped(
        redis.clone(),
        keys.clone(),
        worker_id.clone(),
        Duration::from_millis(settings.worker.heartbeat_interval_ms),
        heartbeat_ttl,
        readiness.clone(),
        background.clone(),
    ));
    let reaping =
        tokio::spawn(reaper.clone().reap_until_stopped(
            Duration::from_millis(settings.worker.reaper_interval_ms),
            background.clone(),
        ));
    let cancels = CancelRegistry::default();
    tokio::spawn(cancel_abandoned_jobs_until_stopped(
        redis.clone(),
        cancels.clone(),
        Duration::from_millis(settings.worker.abandon_grace_ms),
        background.clone(),
    ));
    tokio::spawn(listen_for_cancellations(
        redis.clone(),
        keys.clone(),
        keys.worker_cancel_channel(&worker_id),
        cancels.clone(),
        background.clone(),
    ));
    let limits = watch_live_limits(redis.clone(), keys.clone(), settings.limits.clone(), background.clone());
    let stop_intake = CancellationToken::new();
    let stop_on_signal = stop_intake.clone();
    let readiness_on_signal = readiness.clone();
    tokio::spawn(async move {
        shutdown.await;
        readiness_on_signal.start_draining();
        stop_on_signal.cancel();
    });

    let context = JobContext {
        redis: redis.clone(),
        keys: keys.clone(),
        settings: Arc::new(settings),
        worker_id: worker_id.clone().into(),
        provider,
        limits,
        cancels,
        permit_line: Default::default(),
        reaper: reaper.clone(),
        metrics: worker_metrics,
    };
    consume_jobs_until_stopped(context, stop_intake).await;

    match reaper.recover_processing_list(&worker_id, RecoveryCause::WorkerStopped).await {
        Ok(0) => {}
        Ok(requeued) => tracing::info!(requeued, "put unfinished jobs back on their lanes"),
        Err(error) => tracing::warn!(%error, "could not put unfinished jobs back; the reaper will"),
    }
    background.cancel();
    let _ = heartbeat.await;
    let _ = reaping.await;
    match deregister_if_idle(&redis, &keys, &worker_id).await {
        Ok(true) => tracing::info!(%worker_id, "worker stopped cleanly"),
        Ok(false) => tracing::warn!(%worker_id, "worker stopped with jobs left in its processing list"),
        Err(error) => tracing::warn!(%worker_id, %error, "worker stopped; could not deregister"),
    }
    listener_stop.cancel();
    match tokio::time::timeout(LISTENER_CLOSE_LIMIT, listening).await {
        Ok(Ok(Ok(()))) | Err(_) => Ok(()),
        Ok(Ok(Err(error))) => Err(WorkerError::Listener(error.to_string())),
        Ok(Err(error)) => Err(WorkerError::Listener(error.to_string())),
    }
}
