//! Builds a worker from settings and runs it until the shutdown future completes: heartbeat, intake, drain,
//! and a clean farewell when no job is left behind. Its own listener (`/metrics`, `/healthz`, `/readyz`) is
//! served from the start to the end, drain included.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::dead_letter::DeadLetterCaps;
use protocol::live_limits::watch_live_limits;
use protocol::{RedisConnections, RedisKeys, Settings};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::abandonment::cancel_abandoned_jobs_until_stopped;
use crate::cancel_listener::{CancelRegistry, listen_for_cancellations};
use crate::health_api::HealthState;
use crate::heartbeat::{WorkerReadiness, beat_once, deregister_if_idle, keep_heartbeat_until_stopped};
use crate::job_runner::JobContext;
use crate::provider::openai::OpenAiProvider;
use crate::reaper::{Reaper, RecoveryCause};
use crate::routes::build_router;
use crate::startup_error::StartupError;
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
) -> Result<(), StartupError> {
    let redis = RedisConnections::new(&settings.redis).map_err(StartupError::RedisSettings)?;
    let keys = RedisKeys::new(settings.redis.key_prefix.clone());
    let provider = OpenAiProvider::new(&settings.llm)
        .map_err(|source| StartupError::LlmClient { base_url: settings.llm.base_url.clone(), source })?;
    let worker_id = worker_id_from(&settings);
    // The recorder first, so that the handles resolved once below record into it.
    let prometheus = protocol::telemetry::prometheus_handle();
    let worker_metrics = Arc::new(WorkerMetrics::register());
    let readiness = Arc::new(WorkerReadiness::default());
    let health_state =
        HealthState { redis: redis.clone(), metrics: prometheus, readiness: readiness.clone() };
    let health_listener = HealthListener::start(listener, health_state)?;
    tracing::info!(%worker_id, address = %health_listener.address, llm = %settings.llm.base_url, concurrency = settings.worker.concurrency, "worker starting");
    let reaper = Reaper {
        redis: redis.clone(),
        keys: keys.clone(),
        worker_id: worker_id.clone(),
        max_recoveries: settings.worker.max_recoveries,
        replay_ttl_s: settings.chat.replay_ttl_s,
        dead_letter_caps: DeadLetterCaps::from_settings(&settings),
    };
    register_and_recover_earlier_jobs(&reaper, &settings, &readiness).await;

    let cancels = CancelRegistry::default();
    let background = BackgroundTasks::start(&settings, &reaper, &readiness, &cancels);
    let limits =
        watch_live_limits(redis.clone(), keys.clone(), settings.limits.clone(), background.stop.clone());
    let stop_intake = stop_intake_on(shutdown, readiness);
    let context = JobContext {
        redis,
        keys,
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

    put_back_unfinished_jobs(&reaper).await;
    background.stop_and_wait().await;
    deregister(&reaper).await;
    health_listener.stop().await
}

/// Registers the worker (the heartbeat keeps trying if Redis is not there yet) and puts back the jobs an earlier
/// run under the same id left in its processing list: they were interrupted, not finished.
async fn register_and_recover_earlier_jobs(
    reaper: &Reaper,
    settings: &Settings,
    readiness: &WorkerReadiness,
) {
    let heartbeat_ttl = Duration::from_millis(settings.worker.heartbeat_ttl_ms);
    match beat_once(&reaper.redis, &reaper.keys, &reaper.worker_id, heartbeat_ttl).await {
        Ok(()) => readiness.set_registered(true),
        Err(error) => tracing::warn!(%error, "could not register yet; the heartbeat keeps trying"),
    }
    match reaper.recover_processing_list(&reaper.worker_id, RecoveryCause::WorkerDied).await {
        Ok(0) | Err(_) => {}
        Ok(requeued) => tracing::warn!(requeued, "recovered jobs an earlier run of this worker left behind"),
    }
}

/// A token cancelled when `shutdown` completes, after the worker reports itself draining.
fn stop_intake_on(
    shutdown: impl Future<Output = ()> + Send + 'static,
    readiness: Arc<WorkerReadiness>,
) -> CancellationToken {
    let stop_intake = CancellationToken::new();
    let stop_on_signal = stop_intake.clone();
    tokio::spawn(async move {
        shutdown.await;
        readiness.start_draining();
        stop_on_signal.cancel();
    });
    stop_intake
}

/// After the drain: what is still in the processing list goes back to its lane now rather than at the reaper's
/// next pass.
async fn put_back_unfinished_jobs(reaper: &Reaper) {
    match reaper.recover_processing_list(&reaper.worker_id, RecoveryCause::WorkerStopped).await {
        Ok(0) => {}
        Ok(requeued) => tracing::info!(requeued, "put unfinished jobs back on their lanes"),
        Err(error) => tracing::warn!(%error, "could not put unfinished jobs back; the reaper will"),
    }
}

/// The farewell: the registration goes only when no job is left behind, so the reaper still finds any.
async fn deregister(reaper: &Reaper) {
    let worker_id = &reaper.worker_id;
    match deregister_if_idle(&reaper.redis, &reaper.keys, worker_id).await {
        Ok(true) => tracing::info!(%worker_id, "worker stopped cleanly"),
        Ok(false) => tracing::warn!(%worker_id, "worker stopped with jobs left in its processing list"),
        Err(error) => tracing::warn!(%worker_id, %error, "worker stopped; could not deregister"),
    }
}

/// The tasks beside the job loop, all stopped by one token: heartbeat, reaper, the abandonment check and the
/// cancellation listener (and the live limits' watch, started with the same token).
struct BackgroundTasks {
    stop: CancellationToken,
    heartbeat: JoinHandle<()>,
    reaping: JoinHandle<()>,
}

impl BackgroundTasks {
    fn start(
        settings: &Settings,
        reaper: &Reaper,
        readiness: &Arc<WorkerReadiness>,
        cancels: &CancelRegistry,
    ) -> Self {
        let (redis, keys, worker_id) = (&reaper.redis, &reaper.keys, &reaper.worker_id);
        let stop = CancellationToken::new();
        let heartbeat = tokio::spawn(keep_heartbeat_until_stopped(
            redis.clone(),
            keys.clone(),
            worker_id.clone(),
            Duration::from_millis(settings.worker.heartbeat_interval_ms),
            Duration::from_millis(settings.worker.heartbeat_ttl_ms),
            readiness.clone(),
            stop.clone(),
        ));
        let reaping = tokio::spawn(
            reaper
                .clone()
                .reap_until_stopped(Duration::from_millis(settings.worker.reaper_interval_ms), stop.clone()),
        );
        tokio::spawn(cancel_abandoned_jobs_until_stopped(
            redis.clone(),
            cancels.clone(),
            Duration::from_millis(settings.worker.abandon_grace_ms),
            stop.clone(),
        ));
        tokio::spawn(listen_for_cancellations(
            redis.clone(),
            keys.clone(),
            keys.worker_cancel_channel(worker_id),
            cancels.clone(),
            stop.clone(),
        ));
        Self { stop, heartbeat, reaping }
    }

    /// Stops them all and waits for the heartbeat and the reaper, so neither writes after the farewell.
    async fn stop_and_wait(self) {
        self.stop.cancel();
        let _ = self.heartbeat.await;
        let _ = self.reaping.await;
    }
}

/// The worker's own listener (`/metrics`, `/healthz`, `/readyz`), served on its own task from the start to the
/// end, drain included.
struct HealthListener {
    address: SocketAddr,
    stop: CancellationToken,
    serving: JoinHandle<std::io::Result<()>>,
}

impl HealthListener {
    fn start(listener: TcpListener, state: HealthState) -> Result<Self, StartupError> {
        let address = listener.local_addr().map_err(StartupError::Listener)?;
        let stop = CancellationToken::new();
        let serving = tokio::spawn(
            axum::serve(listener, build_router(state))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        Ok(Self { address, stop, serving })
    }

    /// Stops it, waiting at most `LISTENER_CLOSE_LIMIT` for open connections (a scraper's keep-alive) to close.
    async fn stop(self) -> Result<(), StartupError> {
        self.stop.cancel();
        match tokio::time::timeout(LISTENER_CLOSE_LIMIT, self.serving).await {
            Ok(Ok(Ok(()))) | Err(_) => Ok(()),
            Ok(Ok(Err(error))) => Err(StartupError::Listener(error)),
            Ok(Err(error)) => Err(StartupError::ListenerTask(error)),
        }
    }
}
