//! dam-load: the load generator of `make bench-overhead` and `make bench-streams`. Parses the command line,
//! raises the open-files limit, runs the subcommand, writes its JSON.

mod chat_events;
mod chat_flows;
mod chat_outcome;
mod chat_requests;
mod command_line;
mod error;
mod http_clients;
mod latency_histogram;
mod load_runner;
mod open_files_limit;
mod progress_line;
mod run_recorder;
mod run_report;
mod sse_parser;
mod stream_holding;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::command_line::{CommandLine, HoldArguments, LoadCommand};
use crate::error::LoadError;
use crate::http_clients::SourceAddressClients;
use crate::load_runner::{LoadShape, run_load};
use crate::open_files_limit::raise_open_files_limit;
use crate::run_report::{RunReport, write_json_file};
use crate::stream_holding::hold_streams;

#[tokio::main]
async fn main() -> ExitCode {
    match run_command(CommandLine::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("[dam-load] error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(command: LoadCommand) -> Result<(), LoadError> {
    let (load, shape) = match command {
        LoadCommand::ClosedLoop { load, streams } => (load, LoadShape::ClosedLoop { streams }),
        LoadCommand::OpenLoop { load, rate, max_in_flight } => {
            (load, LoadShape::OpenLoop { arrivals_per_second: rate, max_in_flight })
        }
        LoadCommand::Hold(hold) => return run_hold_command(&hold).await,
    };
    let plan = load.to_plan(shape)?;
    let open_files_limit = raise_open_files_limit(shape.most_in_flight() as u64)?;
    let clients = Arc::new(SourceAddressClients::new(load.source_addresses)?);
    let summary = run_load(&plan, clients).await;
    let report = RunReport::new(load.label.clone(), &plan, load.source_addresses, &summary, open_files_limit);
    report.print_summary();
    load.json.as_deref().map_or(Ok(()), |path| write_json_file(path, &report))
}

async fn run_hold_command(hold: &HoldArguments) -> Result<(), LoadError> {
    let plan = hold.to_plan()?;
    raise_open_files_limit(plan.streams as u64)?;
    let report = hold_streams(plan, Arc::new(SourceAddressClients::new(hold.source_addresses)?)).await?;
    hold.json.as_deref().map_or(Ok(()), |path| write_json_file(path, &report))
}
