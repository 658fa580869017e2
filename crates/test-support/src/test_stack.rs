//! `TestStack`: a whole Traffic Dam in one test process, on port 0: a real redis-server, mock-llm, any number of
//! gateways and workers, all sharing a key prefix unique to the test. Each service can be stopped gracefully or
//! killed (its task aborted) to test failures. Running a service is `service_thread.rs` and `stack_services.rs`;
//! the stack's HTTP requests are `stack_requests.rs`, its bounded waits `stack_waiting.rs`. The processes of a
//! real deployment are described in `deploy/topology.toml`; this is the Rust tests' in-process harness, with the
//! same stop order (services before the Redis and mock-llm they use).

use mock_llm::MockLlmHandle;
use protocol::Settings;
use protocol::settings::MockLlmSettings;

use crate::redis_server::{RedisServer, unique_key_prefix};
// Named here too, so `test_stack::ServiceHandle` and `test_stack::spawn_gateway` keep working.
pub use crate::service_thread::{ServiceHandle, spawn_service_thread};
pub use crate::stack_services::{spawn_dam, spawn_gateway, spawn_worker};

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

    /// A connection to this stack's Redis for arranging and inspecting state.
    pub async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        self.redis.connection().await
    }

    pub fn keys(&self) -> protocol::RedisKeys {
        protocol::RedisKeys::new(self.settings.redis.key_prefix.clone())
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
