//! The llm-worker binary: telemetry, settings, a runtime of the configured size, bind the worker's own listener
//! (`/metrics`, `/healthz`, `/readyz`), run until SIGINT or SIGTERM, drain, exit 0.

use llm_worker::StartupError;
use protocol::Settings;

// Every token costs a few small allocations (the upstream chunk, the event, the Redis command): mimalloc serves
// them with less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    protocol::shutdown::exit_code(serve())
}

fn serve() -> Result<(), StartupError> {
    let settings = Settings::load()?;
    let threads = settings.worker.runtime_threads;
    let runtime = protocol::service_runtime::build_service_runtime(threads)
        .map_err(|source| StartupError::Runtime { threads, source })?;
    runtime.block_on(async {
        let _telemetry = protocol::telemetry::init_telemetry("llm-worker", &settings.telemetry);
        let address = format!("{}:{}", settings.worker.host, settings.worker.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|source| StartupError::Listen { address, source })?;
        llm_worker::run(listener, settings, protocol::shutdown::shutdown_signal()).await
    })
}
