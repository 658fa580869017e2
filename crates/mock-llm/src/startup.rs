//! Starting and stopping the server: `run` serves a given listener until a shutdown future completes, and
//! `spawn_mock_llm` runs one in-process on a free port for other crates' tests. No request handling here.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use futures::FutureExt;
use protocol::settings::MockLlmSettings;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::routes::mock_llm_router;
use crate::runtime_config::RuntimeConfig;
use crate::stats::{MockLlmStats, StatsRecorder};

/// How long streams still running at shutdown may take to finish. Default answers take under a second
/// (150 ms + 48 × 15 ms); after this the server stops anyway instead of waiting on a slow client.
const SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// What every request shares.
#[derive(Debug)]
pub(crate) struct MockLlmState {
    pub(crate) config: RuntimeConfig,
    pub(crate) stats: Arc<StatsRecorder>,
    /// Cancelled at shutdown, so hung requests (which would otherwise never end) let the server stop.
    pub(crate) stopping: CancellationToken,
}

impl MockLlmState {
    fn new(settings: MockLlmSettings) -> Self {
        Self {
            config: RuntimeConfig::new(settings),
            stats: Arc::new(StatsRecorder::default()),
            stopping: CancellationToken::new(),
        }
    }
}

/// Serves the mock LLM on `listener` until `shutdown` completes, then lets running streams finish (hung requests
/// are released with a 503) for at most [`SHUTDOWN_GRACE_PERIOD`].
pub async fn run(
    listener: TcpListener,
    settings: MockLlmSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_until_shutdown(listener, Arc::new(MockLlmState::new(settings)), shutdown).await
}

async fn serve_until_shutdown(
    listener: TcpListener,
    state: Arc<MockLlmState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let stopping = state.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("mock-llm is shutting down");
        stopping.cancel();
    }
    .shared();
    // Tokens are small writes: without TCP_NODELAY, Nagle holds each until the client's delayed ACK (about 40 ms),
    // so an answer with no configured delay still took 44 ms to its first token.
    let listener = listener.tap_io(|connection| {
        let _ = connection.set_nodelay(true);
    });
    let server = axum::serve(listener, mock_llm_router(state)).with_graceful_shutdown(shutdown.clone());
    tokio::select! {
        served = server.into_future() => served,
        () = async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE_PERIOD).await;
        } => {
            tracing::warn!("mock-llm stopped with requests still running after the grace period");
            Ok(())
        }
    }
}

/// Starts a mock LLM on `127.0.0.1` and a free port (`settings.host` and `settings.port` are ignored) in a task
/// of the current tokio runtime. For tests and benchmarks; the server stops when the handle is dropped.
pub async fn spawn_mock_llm(settings: MockLlmSettings) -> io::Result<MockLlmHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let state = Arc::new(MockLlmState::new(settings));
    let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
    // Either a send or the sender being dropped means stop.
    let shutdown = shutdown_receiver.map(|_| ());
    let server_task = tokio::spawn(serve_until_shutdown(listener, Arc::clone(&state), shutdown));
    Ok(MockLlmHandle { address, state, shutdown_sender: Some(shutdown_sender), server_task })
}

/// A running in-process mock LLM. Dropping it starts the shutdown; [`MockLlmHandle::shutdown`] also waits for it.
#[derive(Debug)]
pub struct MockLlmHandle {
    address: SocketAddr,
    state: Arc<MockLlmState>,
    shutdown_sender: Option<oneshot::Sender<()>>,
    server_task: JoinHandle<io::Result<()>>,
}

impl MockLlmHandle {
    /// The bound address, e.g. `127.0.0.1:41234`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The OpenAI base URL including `/v1`, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// The counters, read in-process (the same numbers as `GET /stats`).
    pub async fn stats(&self) -> MockLlmStats {
        self.state.stats.snapshot()
    }

    /// Zeroes the counters, like `POST /stats/reset`.
    pub fn reset_stats(&self) {
        self.state.stats.reset();
    }

    /// Stops the server and waits until it has stopped: running streams finish (for at most the grace period) and
    /// hung requests are released with a 503.
    pub async fn shutdown(mut self) {
        if let Some(shutdown_sender) = self.shutdown_sender.take() {
            // The server may have stopped already; then there is nobody to tell.
            let _ = shutdown_sender.send(());
        }
        if let Err(join_error) = (&mut self.server_task).await {
            tracing::warn!(%join_error, "the mock-llm server task failed");
        }
    }
}

impl Drop for MockLlmHandle {
    fn drop(&mut self) {
        if let Some(shutdown_sender) = self.shutdown_sender.take() {
            let _ = shutdown_sender.send(());
        }
    }
}
