//! The Traffic Dam services a test starts in its own process, each on a free loopback port with the settings it is
//! given: gateway, worker and dam.

use protocol::Settings;
use tokio::net::TcpListener;

use crate::service_thread::{ServiceHandle, spawn_service_thread};

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
