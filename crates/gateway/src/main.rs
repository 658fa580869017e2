//! The gateway binary: telemetry, settings, a runtime of the configured size, bind, serve until SIGINT or SIGTERM.

use gateway::StartupError;
use protocol::Settings;

// Many small allocations per request (parsing, envelopes, Redis commands): mimalloc serves them faster than the
// system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    protocol::shutdown::exit_code(serve())
}

fn serve() -> Result<(), StartupError> {
    let settings = Settings::load()?;
    let threads = settings.gateway.runtime_threads;
    let runtime = protocol::service_runtime::build_service_runtime(threads)
        .map_err(|source| StartupError::Runtime { threads, source })?;
    runtime.block_on(async {
        let _telemetry = protocol::telemetry::init_telemetry("gateway", &settings.telemetry);
        let address = format!("{}:{}", settings.gateway.host, settings.gateway.port);
        let listener = gateway::http_server::bind_listener(&address)
            .await
            .map_err(|source| StartupError::Listen { address: address.clone(), source })?;
        let bound = listener.local_addr().map_err(|source| StartupError::Listen { address, source })?;
        tracing::info!(address = %bound, "gateway listening");
        gateway::run(listener, settings, protocol::shutdown::shutdown_signal()).await?;
        tracing::info!("gateway stopped");
        Ok(())
    })
}
