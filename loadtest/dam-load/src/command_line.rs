//! The command line: subcommands and their arguments (clap), turned into the plans the runners take. No
//! network or file work happens here.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::chat_flows::{ChatFlow, ChatRequestSettings};
use crate::error::LoadError;
use crate::http_clients::LoopbackTarget;
use crate::load_runner::{LoadPlan, LoadShape};
use crate::stream_holding::HoldPlan;

/// Load for Traffic Dam (or mock-llm) on this machine: many streamed chats at once, over HTTP/1.1 from several
/// 127.0.0.x source addresses, with latency histograms written as JSON.
#[derive(Debug, Parser)]
#[command(name = "dam-load", version)]
pub struct CommandLine {
    #[command(subcommand)]
    pub command: LoadCommand,
}

#[derive(Debug, Subcommand)]
pub enum LoadCommand {
    /// N concurrent streams, each starting a new chat as soon as its last one ended.
    ClosedLoop {
        #[command(flatten)]
        load: LoadArguments,
        /// Concurrent chat streams.
        #[arg(long)]
        streams: usize,
    },
    /// Chats arriving at a fixed rate, whatever the answers do, with a cap on chats in flight.
    OpenLoop {
        #[command(flatten)]
        load: LoadArguments,
        /// New chats per second.
        #[arg(long)]
        rate: f64,
        /// Arrivals beyond this many running chats are skipped (and counted).
        #[arg(long, default_value_t = 2000)]
        max_in_flight: usize,
    },
    /// Opens N browser-flow event streams and keeps them open until SIGINT/SIGTERM or --hold-s passes.
    Hold(HoldArguments),
}

#[derive(Debug, Args)]
pub struct HoldArguments {
    /// Base URL of a gateway or of nginx, on loopback.
    #[arg(long)]
    pub url: String,
    /// Streams to open.
    #[arg(long)]
    pub streams: usize,
    /// Connections come from 127.0.0.1 .. 127.0.0.N.
    #[arg(long, default_value_t = 8)]
    pub source_addresses: u8,
    /// Streams being opened at once.
    #[arg(long, default_value_t = 64)]
    pub open_concurrency: usize,
    /// Longest wait for all streams to open or fail, in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub open_timeout_s: f64,
    /// Hold this long once open, in seconds; without it, until a signal.
    #[arg(long)]
    pub hold_s: Option<f64>,
    /// Where to write the final report as JSON (it is also printed on stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What both load shapes take.
#[derive(Debug, Args)]
pub struct LoadArguments {
    /// Base URL: nginx or a gateway (either flow), or mock-llm (OpenAI flow); on loopback.
    #[arg(long)]
    pub url: String,
    #[arg(long, value_enum, default_value_t = ChatFlow::Openai)]
    pub flow: ChatFlow,
    /// Seconds of load before the measured window; its chats are not measured.
    #[arg(long, default_value_t = 3.0)]
    pub warm_up_s: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 20.0)]
    pub duration_s: f64,
    /// After the window, seconds the chats still running get to end before they are cut.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout_s: f64,
    /// A chat running longer than this many seconds ends as `timed_out`.
    #[arg(long, default_value_t = 120.0)]
    pub chat_timeout_s: f64,
    /// Connections come from 127.0.0.1 .. 127.0.0.N.
    #[arg(long, default_value_t = 8)]
    pub source_addresses: u8,
    /// The model named in OpenAI requests.
    #[arg(long, default_value = "mock-1")]
    pub model: String,
    /// A name for this run in the result file and the summary line.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Where to write the result file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl LoadArguments {
    pub fn to_plan(&self, shape: LoadShape) -> Result<LoadPlan, LoadError> {
        if let LoadShape::OpenLoop { arrivals_per_second, .. } = shape
            && !(arrivals_per_second > 0.0 && arrivals_per_second.is_finite())
        {
            return Err(LoadError::InvalidArgument(format!(
                "--rate must be above 0, got {arrivals_per_second}"
            )));
        }
        if shape.most_in_flight() == 0 {
            return Err(LoadError::InvalidArgument(
                "--streams and --max-in-flight must be at least 1".to_owned(),
            ));
        }
        Ok(LoadPlan {
            shape,
            warm_up: seconds("--warm-up-s", self.warm_up_s)?,
            duration: seconds("--duration-s", self.duration_s)?,
            drain_timeout: seconds("--drain-timeout-s", self.drain_timeout_s)?,
            chat: ChatRequestSettings {
                flow: self.flow,
                target: LoopbackTarget::parse(&self.url)?,
                model: self.model.clone(),
                chat_timeout: seconds("--chat-timeout-s", self.chat_timeout_s)?,
            },
            run_id: new_run_id(),
        })
    }
}

impl HoldArguments {
    pub fn to_plan(&self) -> Result<HoldPlan, LoadError> {
        Ok(HoldPlan {
            target: LoopbackTarget::parse(&self.url)?,
            streams: self.streams,
            open_concurrency: self.open_concurrency,
            open_timeout: seconds("--open-timeout-s", self.open_timeout_s)?,
            hold_for: self.hold_s.map(|hold_s| seconds("--hold-s", hold_s)).transpose()?,
            run_id: new_run_id(),
        })
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration, LoadError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        LoadError::InvalidArgument(format!("{name} must be a number of seconds of 0 or more, got {value}"))
    })
}

/// Unique across runs and processes: the process id and the start time.
fn new_run_id() -> String {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{:x}-{:x}", std::process::id(), since_epoch.as_nanos())
}
