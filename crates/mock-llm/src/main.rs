//! The mock-llm binary: telemetry, settings, listener, then the library's `run` until ctrl-c or SIGTERM.
//! Everything else lives in the library, so tests run the same server in-process.

use mock_llm::StartupError;
use protocol::settings::Settings;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    protocol::shutdown::exit_code(serve().await)
}

async fn serve() -> Result<(), StartupError> {
    let all_settings = Settings::load()?;
    let _telemetry = protocol::telemetry::init_telemetry("mock-llm", &all_settings.telemetry);
    let settings = all_settings.mock_llm;
    let address = format!("{}:{}", settings.host, settings.port);
    let listen_failed = |source| StartupError::Listen { address: address.clone(), source };
    let listener = TcpListener::bind((settings.host.as_str(), settings.port)).await.map_err(listen_failed)?;
    let bound = listener.local_addr().map_err(listen_failed)?;
    // Printed as well as logged, so scripts that start the mock can read the bound port from stdout.
    println!("mock-llm listening on http://{bound}/v1");
    tracing::info!(address = %bound, models = ?settings.models, "mock-llm listening");

    mock_llm::run(listener, settings, protocol::shutdown::shutdown_signal())
        .await
        .map_err(StartupError::Serve)
}
