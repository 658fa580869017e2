//! The llm-worker binary: telemetry, settings, a runtime of the configured size, run until SIGINT or SIGTERM,
//! drain, exit 0.

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
        llm_worker::run(settings, protocol::shutdown::shutdown_signal()).await
    })?;
    Ok(())
}
