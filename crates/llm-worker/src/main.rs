//! The llm-worker binary: telemetry, settings, run until SIGINT or SIGTERM, drain, exit 0.

use protocol::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    protocol::shutdown::exit_code(serve().await)
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    protocol::telemetry::init_tracing();
    let settings = Settings::load()?;
    llm_worker::run(settings, protocol::shutdown::shutdown_signal()).await?;
    Ok(())
}
