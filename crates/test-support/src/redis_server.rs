//! A real `redis-server` for tests: started on a free loopback port with persistence off, stopped (and its
//! temporary directory removed) when dropped. It can be stopped and restarted on the same port to test outages.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting redis-server gets to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// One redis-server process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    process: Option<Child>,
    directory: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a redis-server on a free port and waits until it answers.
    pub async fn start() -> Self {
        let directory = tempfile::tempdir().expect("temporary directory for redis-server");
        let port = free_loopback_port();
        let mut server = Self { port, process: None, directory };
        server.spawn_process().await;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A client for direct inspection and arrangement in tests.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid redis url")
    }

    /// A multiplexed connection for direct inspection and arrangement in tests.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client().get_multiplexed_async_connection().await.expect("connect to test redis-server")
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn_process().await;
    }

    async fn spawn_process(&mut self) {
        let process = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--maxclients", "10000", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.directory.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the tests (`.ci/run` installs it)");
        self.process = Some(process);
        self.wait_until_answering().await;
    }

    async fn wait_until_answering(&self) {
        let started = Instant::now();
        loop {
            if let Ok(mut connection) = self.client().get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(started.elapsed() < STARTUP_TIMEOUT, "redis-server on port {} did not start", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A key prefix no other test uses, so tests can share a Redis without seeing each other's keys.
pub fn unique_key_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}
