//! The `dam` command line: `dam serve` runs the admin service; every other command is a client of a running
//! dam's admin API (status, limits, intake, dead letters, API keys, blocks). Definitions and dispatch live here;
//! rendering in `status_table` and `text_output`, HTTP in `crate::admin_client`.

mod limits_assignments;
mod status_table;
mod text_output;

use std::io::BufRead;
use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use protocol::Settings;
use protocol::limits::Tier;
use serde::Serialize;

use crate::admin_client::{AdminClient, AdminClientError};
use crate::api_keys_admin::ApiKeyChange;
use crate::blocks_admin::BlockRequest;

pub use limits_assignments::{dotted_rows, patch_from_assignments};
pub use status_table::status_text;

/// The admin URL when neither `--url`, `TRAFFIC_DAM_ADMIN_URL` nor the settings give one.
pub const FALLBACK_ADMIN_URL: &str = "http://127.0.0.1:9100";

#[derive(Debug, Parser)]
#[command(
    name = "dam",
    version,
    about = "Traffic Dam's control room: run the admin service, or see and steer a running system through it.",
    after_help = "Exit codes: 0 done, 1 the dam refused or failed the request, 2 bad usage, 3 the dam is \
                  unreachable, 4 the admin token is missing or wrong."
)]
pub struct DamCommandLine {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: DamCommand,
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct AdminConnection {
    /// The dam's admin URL [default: http://{dam.host}:{dam.port} from the settings, else http://127.0.0.1:9100]
    #[arg(long, global = true, env = "TRAFFIC_DAM_ADMIN_URL", value_name = "URL")]
    pub url: Option<String>,
    /// The admin token (sent as a bearer token)
    #[arg(long, global = true, env = "DAM_DAM__ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DamCommand {
    /// Run the dam admin service on dam.host:dam.port until SIGINT or SIGTERM
    Serve,
    /// Print the settings every service would start with here (config files, then DAM_* variables) as JSON,
    /// secrets redacted; exit 1 with the reason when they do not load
    Settings,
    #[command(flatten)]
    Admin(AdminCommand),
}

/// The commands that call a running dam.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Show lanes, workers, circuit breaker, intake, limits, admissions and dead letters
    Status {
        /// Print the JSON report instead of tables
        #[arg(long)]
        json: bool,
    },
    /// Read or change the live limits
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Pause or resume intake of new chats
    #[command(subcommand)]
    Intake(IntakeCommand),
    /// Inspect, replay or drop dead letters
    #[command(subcommand)]
    Dlq(DeadLetterCommand),
    /// Manage API keys (stored hashed; never listed in clear)
    #[command(subcommand)]
    Keys(ApiKeyCommand),
    /// Block an abusive IP or API key for a while
    #[command(subcommand)]
    Block(BlockCommand),
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Show the limits in force
    Get {
        #[arg(long)]
        json: bool,
    },
    /// Change some limits: `dam limits set tiers.premium.burst=9 max_queue_depth=2000`
    Set {
        /// Assignments `path=value`, paths as `dam limits get` shows them
        #[arg(value_name = "PATH=VALUE")]
        assignments: Vec<String>,
        /// A JSON object of limits to merge (applied before the assignments)
        #[arg(long, value_name = "JSON")]
        json: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntakeCommand {
    /// Close the floodgate: new chats get 503 maintenance; queued and running chats carry on
    Pause,
    /// Open it again
    Resume,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters, oldest first
    List {
        #[arg(long, default_value_t = 50)]
        limit: u64,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long)]
        json: bool,
    },
    /// Put a dead letter (or, with --all, every replayable one) back on its lane with a fresh deadline
    Replay {
        /// The dead letter's id, as `dam dlq list` shows it
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
        /// With --all: show what would be replayed, change nothing
        #[arg(long, conflicts_with = "id")]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete a dead letter for good
    Drop { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// List stored keys (hash prefix and identity, never the key)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create or update a key; `-` reads the key from standard input (keeps it out of shell history)
    Put {
        key: String,
        /// Required for a new key
        #[arg(long, value_enum)]
        tier: Option<TierArgument>,
        /// Chats per second for this key alone
        #[arg(long)]
        rate: Option<f64>,
        /// Chats at once for this key alone
        #[arg(long)]
        burst: Option<u32>,
        /// Tokens per UTC day for this key alone (0: none)
        #[arg(long)]
        budget: Option<u64>,
        /// A label for operators
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a key, given in clear (or `-` for standard input) or as its full SHA-256 (64 hex digits)
    Delete { key: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TierArgument {
    Anonymous,
    Standard,
    Premium,
}

impl From<TierArgument> for Tier {
    fn from(tier: TierArgument) -> Self {
        match tier {
            TierArgument::Anonymous => Tier::Anonymous,
            TierArgument::Standard => Tier::Standard,
            TierArgument::Premium => Tier::Premium,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BlockCommand {
    /// Block `ip:<address>` or `key:<16 hex>` (the identity `dam keys list` shows)
    Add {
        identity: String,
        /// How long, in seconds (at most 30 days)
        #[arg(long)]
        ttl_s: u64,
        #[arg(long)]
        reason: String,
    },
    /// List blocks in force
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lift a block before its time
    Remove { identity: String },
}

/// Runs one client command against the dam and prints the answer; errors go to stderr with a non-zero code.
/// `dam settings`: the settings as the services load them, so scripts (the local supervisor) read a setting's
/// value instead of repeating its default and the loader's layering.
pub fn print_settings() -> ExitCode {
    match Settings::load() {
        Ok(settings) => match serde_json::to_string_pretty(&settings) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("dam: the settings do not serialize: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("dam: {}", protocol::shutdown::error_with_causes(&error));
            ExitCode::FAILURE
        }
    }
}

pub async fn run_admin_command(connection: &AdminConnection, command: AdminCommand) -> ExitCode {
    let url = connection.url.clone().unwrap_or_else(default_admin_url);
    let outcome = match AdminClient::new(&url, connection.token.as_deref()) {
        Ok(client) => execute(&client, command).await,
        Err(error) => Err(CommandError::Client(error)),
    };
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dam: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// A command that could not be carried out.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error(transparent)]
    Client(#[from] AdminClientError),
    #[error("{0}")]
    Usage(String),
}

impl CommandError {
    fn exit_code(&self) -> u8 {
        match self {
            CommandError::Client(error) => error.exit_code(),
            CommandError::Usage(_) => 2,
        }
    }
}

/// Calls the dam and returns what to print.
async fn execute(client: &AdminClient, command: AdminCommand) -> Result<String, CommandError> {
    use text_output::*;
    Ok(match command {
        AdminCommand::Status { json } => shown(&client.status().await?, json, status_text),
        AdminCommand::Limits(LimitsCommand::Get { json }) => {
            shown(&client.limits().await?, json, limits_text)
        }
        AdminCommand::Limits(LimitsCommand::Set { assignments, json }) => {
            let patch = patch_from_assignments(json.as_deref(), &assignments).map_err(CommandError::Usage)?;
            let limits = client.update_limits(&patch).await?;
            format!(
                "Limits updated: every gateway and worker applies them within a second.\n\n{}",
                limits_text(&limits)
            )
        }
        AdminCommand::Intake(IntakeCommand::Pause) => intake_text(&client.pause_intake().await?),
        AdminCommand::Intake(IntakeCommand::Resume) => intake_text(&client.resume_intake().await?),
        AdminCommand::Dlq(DeadLetterCommand::List { limit, offset, json }) => {
            shown(&client.dead_letters(limit, offset).await?, json, dead_letter_page_text)
        }
        AdminCommand::Dlq(DeadLetterCommand::Replay { id, all, dry_run, json }) => match id {
            Some(id) if !all => shown(&client.replay_dead_letter(&id).await?, json, replayed_text),
            _ => shown(&client.replay_all_dead_letters(dry_run).await?, json, replay_all_text),
        },
        AdminCommand::Dlq(DeadLetterCommand::Drop { id }) => {
            dropped_text(&client.drop_dead_letter(&id).await?)
        }
        AdminCommand::Keys(ApiKeyCommand::List { json }) => {
            shown(&client.api_keys().await?, json, api_keys_text)
        }
        AdminCommand::Keys(ApiKeyCommand::Put { key, tier, rate, burst, budget, name }) => {
            let change = ApiKeyChange {
                name,
                tier: tier.map(Tier::from),
                rate_per_second: rate.map(Some),
                burst: burst.map(Some),
                daily_token_budget: budget.map(Some),
            };
            api_key_saved_text(&client.put_api_key(&key_argument(key)?, &change).await?)
        }
        AdminCommand::Keys(ApiKeyCommand::Delete { key }) => {
            api_key_deleted_text(&client.delete_api_key(&key_argument(key)?).await?)
        }
        AdminCommand::Block(BlockCommand::Add { identity, ttl_s, reason }) => {
            block_added_text(&client.block(&BlockRequest { identity, ttl_s, reason }).await?)
        }
        AdminCommand::Block(BlockCommand::List { json }) => shown(&client.blocks().await?, json, blocks_text),
        AdminCommand::Block(BlockCommand::Remove { identity }) => {
            block_removed_text(&client.unblock(&identity).await?)
        }
    })
}

/// The answer as pretty JSON for scripts, or as text for people.
fn shown<T: Serialize>(answer: &T, json: bool, as_text: impl FnOnce(&T) -> String) -> String {
    if json { serde_json::to_string_pretty(answer).expect("answers serialize") } else { as_text(answer) }
}

/// A key argument; `-` reads it from the first line of standard input.
fn key_argument(key: String) -> Result<String, CommandError> {
    if key != "-" {
        return Ok(key);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|error| {
        CommandError::Usage(format!("could not read the key from standard input: {error}"))
    })?;
    let key = line.trim().to_owned();
    if key.is_empty() {
        return Err(CommandError::Usage("standard input held no key".to_owned()));
    }
    Ok(key)
}

/// `http://{dam.host}:{dam.port}` from the settings (an all-addresses host means this machine), or the fallback
/// when the settings cannot be loaded.
fn default_admin_url() -> String {
    let Ok(settings) = Settings::load() else {
        return FALLBACK_ADMIN_URL.to_owned();
    };
    let host = match settings.dam.host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => "[::1]".to_owned(),
        Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => settings.dam.host.clone(),
    };
    format!("http://{host}:{}", settings.dam.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        DamCommandLine::command().debug_assert();
    }

    #[test]
    fn replay_takes_an_id_or_all_but_not_both() {
        assert!(DamCommandLine::try_parse_from(["dam", "dlq", "replay"]).is_err());
        assert!(DamCommandLine::try_parse_from(["dam", "dlq", "replay", "x", "--all"]).is_err());
        assert!(DamCommandLine::try_parse_from(["dam", "dlq", "replay", "x", "--dry-run"]).is_err());
        assert!(DamCommandLine::try_parse_from(["dam", "dlq", "replay", "--all", "--dry-run"]).is_ok());
        assert!(DamCommandLine::try_parse_from(["dam", "--url", "http://h:1", "status", "--json"]).is_ok());
        assert!(DamCommandLine::try_parse_from(["dam", "status", "--url", "http://h:1"]).is_ok());
    }
}
