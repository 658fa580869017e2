//! The gateway binary: telemetry, settings, a runtime of the configured size, bind, serve until SIGINT or SIGTERM.

use protocol::Settings;

// Many small allocations per request (parsing, envelopes, Redis commands): mimalloc serves them faster than the
// system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    protocol::shutdown::exit_code(serve())
}

fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    let runtime = protocol::service_runtime::build_service_runtime(settings.gateway.runtime_threads)?;
    runtime.block_on(async {
        let _telemetry = protocol::telemetry::init_telemetry("gateway", &settings.telemetry);
        let address = format!("{}:{}", settings.gateway.host, settings.gateway.port);
        let listener = gateway::http_server::bind_listener(&address).await?;
        tracing::info!(address = %listener.local_addr()?, "gateway listening");
        gateway::run(listener, settings, protocol::shutdown::shutdown_signal()).await?;
        tracing::info!("gateway stopped");
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
