//! The llm-worker binary: telemetry, settings, a runtime of the configured size, bind the worker's own listener
//! (`/metrics`, `/healthz`, `/readyz`), run until SIGINT or SIGTERM, drain, exit 0.

use protocol::Settings;

// Every token costs a few small allocations (the upstream chunk, the event, the Redis command): mimalloc serves
// them with less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    protocol::shutdown::exit_code(serve())
}

fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    let runtime = protocol::service_runtime::build_service_runtime(settings.worker.runtime_threads)?;
    runtime.block_on(async {
        let _telemetry = protocol::telemetry::init_telemetry("llm-worker", &settings.telemetry);
        let address = format!("{}:{}", settings.worker.host, settings.worker.port);
        // Several workers on one host each need their own port: say which setting to change.
        let listener = tokio::net::TcpListener::bind(&address).await.map_err(|error| {
            format!("cannot listen on {address} for /metrics, /healthz and /readyz: {error} (each worker on a host needs its own worker.port, DAM_WORKER__PORT)")
        })?;
        llm_worker::run(listener, settings, protocol::shutdown::shutdown_signal()).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
