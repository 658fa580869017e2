//! The `dam` binary: `dam serve` runs the admin service, `dam settings` prints the settings as services load them;
//! every other subcommand is the operators' client of the admin service.

use std::process::ExitCode;

use clap::Parser;
use dam::cli::{DamCommand, DamCommandLine, print_settings, run_admin_command};

#[tokio::main]
async fn main() -> ExitCode {
    let command_line = DamCommandLine::parse();
    match command_line.command {
        DamCommand::Serve => match dam::serve_until_signalled().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                let error = protocol::shutdown::error_with_causes(&error);
                tracing::error!(%error, "dam stopped");
                eprintln!("dam: {error}");
                ExitCode::FAILURE
            }
        },
        DamCommand::Settings => print_settings(),
        DamCommand::Admin(command) => run_admin_command(&command_line.connection, command).await,
    }
}
