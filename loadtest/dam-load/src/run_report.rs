//! The JSON result file of a load run: its settings, outcome counts, chats per second and every histogram's
//! summary in milliseconds. Only shapes and writing live here; the figures come from `run_recorder`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::chat_flows::ChatFlow;
use crate::error::LoadError;
use crate::load_runner::{LoadPlan, LoadRunSummary, LoadShape};
use crate::open_files_limit::OpenFilesLimit;
use crate::run_recorder::{HistogramSummaries, LifetimeCounts};

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub settings: RunSettings,
    /// Chats that ended inside the measured window.
    pub measured: MeasuredReport,
    /// Every chat of the process, warm-up and drain included: what CPU and Redis work divide by.
    pub lifetime: LifetimeReport,
    pub open_files_limit: OpenFilesLimit,
}

#[derive(Debug, Serialize)]
pub struct RunSettings {
    pub label: String,
    pub target: String,
    pub flow: ChatFlow,
    /// `closed_loop` or `open_loop`.
    pub mode: &'static str,
    pub streams: Option<usize>,
    pub arrivals_per_second: Option<f64>,
    pub max_in_flight: Option<usize>,
    pub warm_up_s: f64,
    pub duration_s: f64,
    pub drain_timeout_s: f64,
    pub chat_timeout_s: f64,
    pub source_addresses: u8,
    pub model: String,
    pub run_id: String,
}

#[derive(Debug, Serialize)]
pub struct MeasuredReport {
    pub window_s: f64,
    pub chats_ended: u64,
    pub chats_done: u64,
    /// Chats that ended with `done` in the window, per second of the window.
    pub chats_per_s: f64,
    pub outcomes: BTreeMap<String, u64>,
    pub outcome_examples: BTreeMap<String, String>,
    pub tokens_received: u64,
    pub resets_received: u64,
    pub arrivals_skipped_at_cap: u64,
    pub histograms: HistogramSummaries,
}

#[derive(Debug, Serialize)]
pub struct LifetimeReport {
    #[serde(flatten)]
    pub counts: LifetimeCounts,
    pub chats_cut_at_end: u64,
    pub elapsed_s: f64,
}

impl RunReport {
    pub fn new(
        label: String,
        plan: &LoadPlan,
        source_addresses: u8,
        summary: &LoadRunSummary,
        open_files_limit: OpenFilesLimit,
    ) -> Self {
        let (mode, streams, arrivals_per_second, max_in_flight) = match plan.shape {
            LoadShape::ClosedLoop { streams } => ("closed_loop", Some(streams), None, None),
            LoadShape::OpenLoop { arrivals_per_second, max_in_flight } => {
                ("open_loop", None, Some(arrivals_per_second), Some(max_in_flight))
            }
        };
        let window_s = plan.duration.as_secs_f64();
        let measured = summary.recorder.with_measured(|measured| MeasuredReport {
            window_s,
            chats_ended: measured.outcomes.values().sum(),
            chats_done: measured.done(),
            chats_per_s: measured.done() as f64 / window_s.max(1e-9),
            outcomes: measured.outcomes.clone(),
            outcome_examples: measured.outcome_examples.clone(),
            tokens_received: measured.tokens_received,
            resets_received: measured.resets_received,
            arrivals_skipped_at_cap: summary.arrivals_skipped_at_cap,
            histograms: measured.summaries(),
        });
        Self {
            settings: RunSettings {
                label,
                target: plan.chat.target.describe(),
                flow: plan.chat.flow,
                mode,
                streams,
                arrivals_per_second,
                max_in_flight,
                warm_up_s: plan.warm_up.as_secs_f64(),
                duration_s: window_s,
                drain_timeout_s: plan.drain_timeout.as_secs_f64(),
                chat_timeout_s: plan.chat.chat_timeout.as_secs_f64(),
                source_addresses,
                model: plan.chat.model.clone(),
                run_id: plan.run_id.clone(),
            },
            measured,
            lifetime: LifetimeReport {
                counts: summary.recorder.lifetime(),
                chats_cut_at_end: summary.chats_cut_at_end,
                elapsed_s: summary.elapsed.as_secs_f64(),
            },
            open_files_limit,
        }
    }

    /// A few lines for the terminal.
    pub fn print_summary(&self) {
        let measured = &self.measured;
        let first_token = &measured.histograms.first_token;
        eprintln!(
            "[dam-load] {}: {} chats done in {:.0} s ({:.1}/s), {} ended otherwise; ttft p50 {:.2} ms p99 {:.2} ms max {:.2} ms; outcomes {:?}",
            self.settings.label,
            measured.chats_done,
            measured.window_s,
            measured.chats_per_s,
            measured.chats_ended - measured.chats_done,
            first_token.p50_ms,
            first_token.p99_ms,
            first_token.max_ms,
            measured.outcomes,
        );
        for (outcome, example) in &measured.outcome_examples {
            eprintln!("[dam-load]   {outcome}: {example}");
        }
    }
}

/// Writes any report as pretty JSON.
pub fn write_json_file(path: &Path, report: &impl Serialize) -> Result<(), LoadError> {
    let text = serde_json::to_string_pretty(report).expect("reports serialize") + "\n";
    std::fs::write(path, text).map_err(|source| LoadError::WriteResult { path: path.to_owned(), source })
}
