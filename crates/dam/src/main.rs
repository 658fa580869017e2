//! The dam binary: telemetry, settings, bind the admin port, serve until SIGINT or SIGTERM.

use protocol::Settings;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    protocol::telemetry::init_tracing();
    let settings = Settings::load()?;
    let address = format!("{}:{}", settings.dam.host, settings.dam.port);
    let listener = TcpListener::bind(&address).await?;
    tracing::info!(address = %listener.local_addr()?, "dam listening");
    dam::run(listener, settings, protocol::shutdown::shutdown_signal()).await?;
    Ok(())
}
