//! The Traffic Dam services a test starts in its own process, each on a free loopback port with the settings it is
//! given: gateway, worker and dam.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;

use protocol::Settings;
use tokio::net::TcpListener;

use crate::service_thread::{ServiceHandle, spawn_service_thread};

/// Runs a gateway in this process on a free port.
pub async fn spawn_gateway(settings: Settings) -> ServiceHandle {
    spawn_listening_service("gateway", "gateway", move |listener, shutdown| {
        gateway::run(listener, settings, shutdown)
    })
}

/// Runs a worker in this process, its own listener (`/metrics`, `/healthz`, `/readyz`) on a free port.
pub fn spawn_worker(settings: Settings) -> ServiceHandle {
    spawn_listening_service("llm-worker", "worker", move |listener, shutdown| {
        llm_worker::run(listener, settings, shutdown)
    })
}

/// Runs the dam admin service in this process on a free port.
pub async fn spawn_dam(settings: Settings) -> ServiceHandle {
    spawn_listening_service("dam", "dam", move |listener, shutdown| dam::run(listener, settings, shutdown))
}

/// Runs `run` on a thread of its own named `thread_name`, serving on a free port. A run that fails panics with
/// `<service> failed: <error>`, which the handle reports as the service's crash.
fn spawn_listening_service<Run, Running, Error>(
    thread_name: &str,
    service: &'static str,
    run: Run,
) -> ServiceHandle
where
    Run: FnOnce(TcpListener, Pin<Box<dyn Future<Output = ()> + Send>>) -> Running + Send + 'static,
    Running: Future<Output = Result<(), Error>>,
    Error: Display,
{
    let listener = free_listener();
    let address = listener.local_addr().unwrap_or_else(|error| panic!("{service} address: {error}"));
    spawn_service_thread(thread_name, Some(address), move |shutdown| async move {
        let listener =
            TcpListener::from_std(listener).unwrap_or_else(|error| panic!("{service} listener: {error}"));
        if let Err(error) = run(listener, shutdown).await {
            panic!("{service} failed: {error}");
        }
    })
}

/// A loopback listener on a free port, to hand to a service's own runtime.
fn free_listener() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.set_nonblocking(true).expect("non-blocking listener");
    listener
}
