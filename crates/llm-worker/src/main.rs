//! The llm-worker binary: telemetry, settings, run until SIGINT or SIGTERM, drain, exit 0.

use protocol::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match serve().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Display, not Debug: the operator reads this line.
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    protocol::telemetry::init_tracing();
    let settings = Settings::load()?;
    llm_worker::run(settings, protocol::shutdown::shutdown_signal()).await?;
    Ok(())
}
