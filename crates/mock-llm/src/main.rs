//! The mock-llm binary: telemetry, settings, listener, then the library's `run` until ctrl-c or SIGTERM.
//! Everything else lives in the library, so tests run the same server in-process.

use protocol::settings::Settings;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    protocol::shutdown::exit_code(serve().await)
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let all_settings = Settings::load()?;
    let _telemetry = protocol::telemetry::init_telemetry("mock-llm", &all_settings.telemetry);
    let settings = all_settings.mock_llm;
    let listener = TcpListener::bind((settings.host.as_str(), settings.port)).await?;
    let address = listener.local_addr()?;
    // Printed as well as logged, so scripts that start the mock can read the bound port from stdout.
    println!("mock-llm listening on http://{address}/v1");
    tracing::info!(%address, models = ?settings.models, "mock-llm listening");

    mock_llm::run(listener, settings, protocol::shutdown::shutdown_signal()).await?;
    Ok(())
}
