//! `TestStack`: a whole Traffic Dam in one test process, on port 0: a real redis-server, mock-llm, any number of
//! gateways and workers, all sharing a key prefix unique to the test. Each service can be stopped gracefully or
//! killed (its task aborted) to test failures.

use std::net::SocketAddr;
use std::time::Duration;

use mock_llm::MockLlmHandle;
use protocol::Settings;
use protocol::settings::MockLlmSettings;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

/// A running service inside the test process.
#[derive(Debug)]
pub struct ServiceHandle {
    /// The bound address, for HTTP services.
    pub address: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ServiceHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.address.expect("this service listens on HTTP"))
    }

    /// Asks the service to shut down gracefully and waits (bounded) until it has.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }

    /// Kills the service as a crash would: its tasks stop at once, nothing is cleaned up.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Redis, mock-llm, gateways and workers for one test.
#[derive(Debug)]
pub struct TestStack {
    pub redis: RedisServer,
    pub mock_llm: MockLlmHandle,
    /// The settings every service of this stack was started with (unique key prefix, mock-llm URL).
    pub settings: Settings,
    pub gateways: Vec<ServiceHandle>,
    pub workers: Vec<ServiceHandle>,
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

    pub fn gateway_url(&self, index: usize) -> String {
        self.gateways[index].url()
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
    settings
}

/// Runs a gateway in this process on a free port.
pub async fn spawn_gateway(settings: Settings) -> ServiceHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a gateway port");
    let address = listener.local_addr().expect("gateway address");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(error) = gateway::run(listener, settings, async move {
            let _ = stopped.await;
        })
        .await
        {
            panic!("gateway failed: {error}");
        }
    });
    ServiceHandle { address: Some(address), shutdown: Some(shutdown), task }
}

/// Runs a worker in this process.
pub fn spawn_worker(settings: Settings) -> ServiceHandle {
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(error) = llm_worker::run(settings, async move {
            let _ = stopped.await;
        })
        .await
        {
            panic!("worker failed: {error}");
        }
    });
    ServiceHandle { address: None, shutdown: Some(shutdown), task }
}

/// Runs the dam admin service in this process on a free port.
pub async fn spawn_dam(settings: Settings) -> ServiceHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a dam port");
    let address = listener.local_addr().expect("dam address");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(error) = dam::run(listener, settings, async move {
            let _ = stopped.await;
        })
        .await
        {
            panic!("dam failed: {error}");
        }
    });
    ServiceHandle { address: Some(address), shutdown: Some(shutdown), task }
}
