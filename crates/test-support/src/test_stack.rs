//! `TestStack`: a whole Traffic Dam in one test process, on port 0: a real redis-server, mock-llm, any number of
//! gateways and workers, all sharing a key prefix unique to the test. Each service can be stopped gracefully or
//! killed (its task aborted) to test failures.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use mock_llm::MockLlmHandle;
use protocol::Settings;
use protocol::settings::MockLlmSettings;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::harness_failure::HarnessFailure;
use crate::redis_server::{RedisServer, unique_key_prefix};
use crate::sse_client::SseReader;

/// How a stack is built.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub gateways: usize,
    pub workers: usize,
    pub mock_llm: MockLlmSettings,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            gateways: 1,
            workers: 1,
            mock_llm: MockLlmSettings {
                tokens_per_answer: 12,
                time_to_first_token_ms: 5,
                inter_token_delay_ms: 1,
                ..MockLlmSettings::default()
            },
        }
    }
}

/// How long a graceful stop may take: the test settings drain streams for 2 s and running jobs for 5 s.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long a kill may take: it only drops the service's tasks.
const KILL_LIMIT: Duration = Duration::from_secs(10);

/// The panics seen on one service's threads, in order.
type RecordedPanics = Arc<Mutex<Vec<String>>>;

thread_local! {
    /// Set on every thread a service runs on, so the panic hook knows whose crash it saw.
    static SERVICE_PANICS: RefCell<Option<RecordedPanics>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records panics on service threads, then prints as before.
/// tokio catches a panicking task and carries on, so without this a crashed worker task leaves no trace but a
/// line on stderr.
fn install_service_panic_recorder() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |panic| {
            let _ = SERVICE_PANICS.try_with(|slot| {
                if let Some(panics) = slot.borrow().as_ref() {
                    lock_panics(panics).push(describe_panic(panic));
                }
            });
            previous_hook(panic);
        }));
    });
}

fn describe_panic(panic: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = panic.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    match panic.location() {
        Some(location) => format!("{message} (at {location})"),
        None => message,
    }
}

/// The recorded panics, even if a panic poisoned the lock (the list itself stays whole).
fn lock_panics(panics: &RecordedPanics) -> std::sync::MutexGuard<'_, Vec<String>> {
    panics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A service running inside the test process on its own thread and tokio runtime, like a process of its own:
/// stopping it runs its graceful shutdown, killing it drops every task it spawned at once, as a crash would.
///
/// A crash is never silent: a panic on the service's threads (in its own future or in any task it spawned)
/// makes [`Self::stop`] and [`Self::kill`] panic, and so does a stop that does not finish in time. A handle
/// dropped without either panics too if its service crashed.
#[derive(Debug)]
pub struct ServiceHandle {
    /// The bound address, for HTTP services.
    pub address: Option<SocketAddr>,
    name: String,
    shutdown: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    finished: Option<oneshot::Receiver<()>>,
    panics: RecordedPanics,
    /// Set once a stop or kill has reported its outcome, so the drop does not report it again.
    outcome_reported: bool,
}

impl ServiceHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.address.expect("this service listens on HTTP"))
    }

    /// Asks the service to shut down gracefully and waits (bounded) until it has; panics if it crashed at any
    /// time or did not stop in time.
    pub async fn stop(self) {
        self.try_stop_within(STOP_LIMIT).await.unwrap_or_else(|failure| panic!("{failure}"));
    }

    /// Kills the service as a crash would: every task it spawned stops at once, nothing is cleaned up. Panics if
    /// the service had crashed before, or did not end in time.
    pub async fn kill(self) {
        self.try_kill_within(KILL_LIMIT).await.unwrap_or_else(|failure| panic!("{failure}"));
    }

    /// Like [`Self::stop`], with its own bound, returning the failure instead of panicking. A service that does
    /// not stop within `limit` is killed, so no thread outlives the test.
    pub async fn try_stop_within(mut self, limit: Duration) -> Result<(), HarnessFailure> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.wait_until_finished(limit).await
    }

    /// Like [`Self::kill`], with its own bound, returning the failure instead of panicking.
    pub async fn try_kill_within(mut self, limit: Duration) -> Result<(), HarnessFailure> {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.wait_until_finished(limit).await
    }

    /// `Err` if the service has crashed so far, while it keeps running: for a test that checks mid-way.
    pub fn crash_so_far(&self) -> Result<(), HarnessFailure> {
        let panics = lock_panics(&self.panics).clone();
        if panics.is_empty() {
            Ok(())
        } else {
            Err(HarnessFailure::ServiceCrashed { service: self.name.clone(), panics })
        }
    }

    async fn wait_until_finished(&mut self, limit: Duration) -> Result<(), HarnessFailure> {
        self.outcome_reported = true;
        let Some(finished) = self.finished.take() else { return self.crash_so_far() };
        match tokio::time::timeout(limit, finished).await {
            Err(_elapsed) => {
                // Kill what did not stop, so its thread and ports do not linger past the test.
                if let Some(kill) = self.kill.take() {
                    let _ = kill.send(());
                }
                self.crash_so_far()?;
                Err(HarnessFailure::ServiceDidNotStop { service: self.name.clone(), limit })
            }
            Ok(Ok(())) => self.crash_so_far(),
            // The thread ended without saying so: it unwound from a panic the hook has recorded.
            Ok(Err(_)) => self.crash_so_far().and_then(|()| {
                Err(HarnessFailure::ServiceCrashed {
                    service: self.name.clone(),
                    panics: vec!["its thread ended without finishing".to_owned()],
                })
            }),
        }
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        // A test that is already failing says why itself; a second panic here would abort the whole binary.
        if self.outcome_reported || std::thread::panicking() {
            return;
        }
        if let Err(failure) = self.crash_so_far() {
            panic!("{failure}");
        }
    }
}

/// Runs `service` (given its shutdown signal) on a new thread with its own runtime, named `name` in failures.
pub fn spawn_service_thread<F, Fut>(name: &str, address: Option<SocketAddr>, service: F) -> ServiceHandle
where
    F: FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    install_service_panic_recorder();
    let panics = RecordedPanics::default();
    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let (kill, kill_requested) = oneshot::channel::<()>();
    let (finished_sender, finished) = oneshot::channel::<()>();
    let thread_panics = panics.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            SERVICE_PANICS.with(|slot| *slot.borrow_mut() = Some(thread_panics.clone()));
            // The runtime's blocking threads belong to the service too.
            let blocking_thread_panics = thread_panics;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(move || {
                    let panics = blocking_thread_panics.clone();
                    SERVICE_PANICS.with(|slot| *slot.borrow_mut() = Some(panics));
                })
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let running = service(Box::pin(async move {
                    let _ = shutdown_requested.await;
                }));
                // A dropped handle also ends the service, like a killed process.
                tokio::select! {
                    _ = running => {}
                    _ = kill_requested => {}
                }
            });
            runtime.shutdown_background();
            let _ = finished_sender.send(());
        })
        .expect("spawn a service thread");
    ServiceHandle {
        address,
        name: name.to_owned(),
        shutdown: Some(shutdown),
        kill: Some(kill),
        finished: Some(finished),
        panics,
        outcome_reported: false,
    }
}

/// Redis, mock-llm, gateways and workers for one test.
#[derive(Debug)]
pub struct TestStack {
    // Fields drop in this order: the services go (and report any crash) before the Redis and mock-llm they use,
    // so the end of a test is never mistaken for an outage.
    pub gateways: Vec<ServiceHandle>,
    pub workers: Vec<ServiceHandle>,
    pub redis: RedisServer,
    pub mock_llm: MockLlmHandle,
    /// The settings every service of this stack was started with (unique key prefix, mock-llm URL).
    pub settings: Settings,
    pub http: reqwest::Client,
}

impl TestStack {
    pub async fn start(options: StackOptions) -> Self {
        Self::start_with(options, |_| {}).await
    }

    /// Starts a stack whose settings `customize` may adjust before any service starts.
    pub async fn start_with(options: StackOptions, customize: impl FnOnce(&mut Settings)) -> Self {
        let redis = RedisServer::start().await;
        let mock_llm = mock_llm::spawn_mock_llm(options.mock_llm.clone()).await.expect("start mock-llm");
        let mut settings = test_settings(&redis, &mock_llm);
        customize(&mut settings);
        let mut stack = Self {
            redis,
            mock_llm,
            settings,
            gateways: Vec::new(),
            workers: Vec::new(),
            http: reqwest::Client::new(),
        };
        for _ in 0..options.gateways {
            stack.add_gateway().await;
        }
        for _ in 0..options.workers {
            stack.add_worker();
        }
        stack
    }

    /// Starts one more gateway on a free port.
    pub async fn add_gateway(&mut self) -> &ServiceHandle {
        let handle = spawn_gateway(self.settings.clone()).await;
        self.gateways.push(handle);
        self.gateways.last().expect("just pushed")
    }

    /// Starts one more worker.
    pub fn add_worker(&mut self) -> &ServiceHandle {
        let handle = spawn_worker(self.settings.clone());
        self.workers.push(handle);
        self.workers.last().expect("just pushed")
    }

    /// Starts one more worker with adjusted settings (for example its own id).
    pub fn add_worker_with(&mut self, customize: impl FnOnce(&mut Settings)) -> &ServiceHandle {
        let mut settings = self.settings.clone();
        customize(&mut settings);
        self.workers.push(spawn_worker(settings));
        self.workers.last().expect("just pushed")
    }

    /// Changes mock-llm's default knobs at runtime (`PUT /config`), e.g. `{"failure_rate": 1.0}`.
    pub async fn configure_mock_llm(&self, knobs: serde_json::Value) {
        let response = self
            .http
            .put(format!("http://{}/config", self.mock_llm.address()))
            .json(&knobs)
            .send()
            .await
            .expect("mock-llm answers");
        assert!(response.status().is_success(), "mock-llm took the knobs: {}", response.status());
    }

    /// Waits (bounded) until `condition` holds, checking every 20 ms; panics naming `what` otherwise.
    pub async fn wait_until<F, Fut>(&self, what: &str, limit: Duration, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.wait_for(what, limit, || {
            let holds = condition();
            async move { holds.await.then_some(()) }
        })
        .await
    }

    /// Like [`Self::wait_until`], for a condition that yields what it found: waits (bounded) until `probe`
    /// returns `Some`, and returns that value.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, limit: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            assert!(started.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn gateway_url(&self, index: usize) -> String {
        self.gateways[index].url()
    }

    /// `POST /api/chats` on gateway `index` claiming to come from `client_ip` (through a trusted proxy).
    pub async fn post_chat_from(
        &self,
        index: usize,
        client_ip: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/api/chats", self.gateway_url(index)))
            .header("x-forwarded-for", client_ip)
            .json(body)
            .send()
            .await
            .expect("POST /api/chats reaches the gateway")
    }

    /// A connection to this stack's Redis for arranging and inspecting state.
    pub async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        self.redis.connection().await
    }

    pub fn keys(&self) -> protocol::RedisKeys {
        protocol::RedisKeys::new(self.settings.redis.key_prefix.clone())
    }

    /// `POST /api/chats` on gateway `index` with a JSON body.
    pub async fn post_chat(&self, index: usize, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/chats", self.gateway_url(index)))
            .json(body)
            .send()
            .await
            .expect("POST /api/chats reaches the gateway")
    }

    /// Opens `events_url` (as returned by `POST /api/chats`) on gateway `index`.
    pub async fn open_events(&self, index: usize, events_url: &str) -> SseReader {
        let response = self
            .http
            .get(format!("{}{events_url}", self.gateway_url(index)))
            .send()
            .await
            .expect("GET events reaches the gateway");
        assert_eq!(response.status(), 200, "events stream opens");
        SseReader::new(response)
    }
}

/// Settings for services of a test stack: unique prefix, fast polling, mock-llm upstream.
pub fn test_settings(redis: &RedisServer, mock_llm: &MockLlmHandle) -> Settings {
    let mut settings = Settings::default();
    settings.redis.url = redis.url();
    settings.redis.key_prefix = unique_key_prefix();
    settings.redis.pool_size = 2;
    settings.gateway.port = 0;
    settings.gateway.queue_update_interval_ms = 200;
    settings.gateway.shutdown_drain_s = 2;
    settings.llm.base_url = mock_llm.base_url();
    settings.worker.idle_wait_ms = 500;
    settings.worker.heartbeat_interval_ms = 200;
    settings.worker.heartbeat_ttl_ms = 1_000;
    settings.worker.drain_timeout_s = 5;
    // Tests share one client address; limits are generous unless a test is about them.
    let generous = protocol::limits::TierLimits {
        rate_per_second: 100_000.0,
        burst: 100_000,
        max_active_chats: 100_000,
        daily_token_budget: 0,
    };
    settings.limits.tiers.anonymous = generous;
    settings.limits.tiers.standard = generous;
    settings.limits.tiers.premium = generous;
    settings.limits.duplicate_window_s = 0;
    settings
}

/// A loopback listener on a free port, to hand to a service's own runtime.
fn free_listener() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.set_nonblocking(true).expect("non-blocking listener");
    listener
}

/// Runs a gateway in this process on a free port.
pub async fn spawn_gateway(settings: Settings) -> ServiceHandle {
    let listener = free_listener();
    let address = listener.local_addr().expect("gateway address");
    spawn_service_thread("gateway", Some(address), move |shutdown| async move {
        let listener = TcpListener::from_std(listener).expect("gateway listener");
        if let Err(error) = gateway::run(listener, settings, shutdown).await {
            panic!("gateway failed: {error}");
        }
    })
}

/// Runs a worker in this process, its own listener (`/metrics`, `/healthz`, `/readyz`) on a free port.
pub fn spawn_worker(settings: Settings) -> ServiceHandle {
    let listener = free_listener();
    let address = listener.local_addr().expect("worker address");
    spawn_service_thread("llm-worker", Some(address), move |shutdown| async move {
        let listener = TcpListener::from_std(listener).expect("worker listener");
        if let Err(error) = llm_worker::run(listener, settings, shutdown).await {
            panic!("worker failed: {error}");
        }
    })
}

/// Runs the dam admin service in this process on a free port.
pub async fn spawn_dam(settings: Settings) -> ServiceHandle {
    let listener = free_listener();
    let address = listener.local_addr().expect("dam address");
    spawn_service_thread("dam", Some(address), move |shutdown| async move {
        let listener = TcpListener::from_std(listener).expect("dam listener");
        if let Err(error) = dam::run(listener, settings, shutdown).await {
            panic!("dam failed: {error}");
        }
    })
}
