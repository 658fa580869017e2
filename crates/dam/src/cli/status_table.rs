//! `dam status` for people: the status report as a few aligned tables (intake, circuit, lanes, workers,
//! admissions over the last minute, dead letters, the limits in force).

use crate::limits_admin::LimitsSource;
use crate::status_report::StatusReport;

use super::limits_assignments::dotted_rows;
use super::text_output::{format_duration_ms, render_rows, render_table};

/// The whole report, one section after another; a section with nothing to show is left out.
pub fn status_text(report: &StatusReport) -> String {
    let sections = [
        Some(overview_section(report)),
        Some(lanes_section(report)),
        Some(workers_section(report)),
        Some(admissions_section(report)),
        job_outcomes_section(report),
        Some(limits_section(report)),
    ];
    sections.into_iter().flatten().collect::<Vec<_>>().join("\n\n")
}

/// Intake, circuit breaker, jobs running, workers and dead letters, one line each.
fn overview_section(report: &StatusReport) -> String {
    let intake = if report.intake.paused {
        match report.intake.paused_at_ms {
            Some(at) => format!("PAUSED for {} (new chats get 503 maintenance)", since(report, at)),
            None => "PAUSED (new chats get 503 maintenance)".to_owned(),
        }
    } else {
        "open".to_owned()
    };
    let circuit = match (report.circuit_breaker.state.as_str(), report.circuit_breaker.open_until_ms) {
        ("open", Some(until)) if until > report.generated_at_ms => {
            format!("OPEN (probes in {})", format_duration_ms(until - report.generated_at_ms))
        }
        (state, _) => state.to_owned(),
    };
    let workers = &report.workers;
    let dead_letters = &report.dead_letters;
    let overview = vec![
        vec!["Intake".to_owned(), intake],
        vec!["Circuit breaker".to_owned(), circuit],
        vec!["Jobs running".to_owned(), report.jobs_running.to_string()],
        vec![
            "Workers".to_owned(),
            format!("{} alive, {} presumed dead", workers.alive.len(), workers.presumed_dead.len()),
        ],
        vec![
            "Dead letters".to_owned(),
            format!(
                "{} (replayed so far: {}, dropped by the caps: {})",
                dead_letters.size, dead_letters.replayed_total, dead_letters.dropped_total
            ),
        ],
    ];
    render_rows(&overview)
}

fn lanes_section(report: &StatusReport) -> String {
    let lanes: Vec<Vec<String>> = report
        .lanes
        .iter()
        .map(|lane| {
            vec![
                lane.lane.as_str().to_owned(),
                lane.depth.to_string(),
                lane.oldest_wait_ms.map(format_duration_ms).unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    render_table(&["LANE", "DEPTH", "OLDEST WAIT"], &lanes)
}

/// Live workers first, then those presumed dead.
fn workers_section(report: &StatusReport) -> String {
    let workers: Vec<Vec<String>> = report
        .workers
        .alive
        .iter()
        .map(|worker| (worker, "alive"))
        .chain(report.workers.presumed_dead.iter().map(|worker| (worker, "presumed dead")))
        .map(|(worker, state)| {
            vec![
                worker.id.clone(),
                state.to_owned(),
                worker
                    .last_heartbeat_ms
                    .map(|beat| format!("{} ago", since(report, beat)))
                    .unwrap_or_else(|| "-".to_owned()),
                worker.jobs_in_flight.to_string(),
            ]
        })
        .collect();
    if workers.is_empty() {
        return "WORKERS\nnone registered".to_owned();
    }
    render_table(&["WORKER", "STATE", "LAST HEARTBEAT", "IN FLIGHT"], &workers)
}

/// Admitted and joined chats, then each refusal reason.
fn admissions_section(report: &StatusReport) -> String {
    let admissions = &report.admissions_last_minute;
    let mut decisions = vec![
        vec!["admitted".to_owned(), admissions.admitted.to_string()],
        vec!["joined (duplicates)".to_owned(), admissions.joined.to_string()],
    ];
    decisions.extend(
        admissions
            .rejected
            .iter()
            .map(|(reason, count)| vec![format!("rejected: {reason}"), count.to_string()]),
    );
    let header = format!("ADMISSIONS, LAST {} s", admissions.window_s);
    render_table(&[header.as_str(), "COUNT"], &decisions)
}

/// How jobs ended over the same window; `None` when none did.
fn job_outcomes_section(report: &StatusReport) -> Option<String> {
    let outcomes: Vec<Vec<String>> = report
        .job_outcomes_last_minute
        .iter()
        .map(|(outcome, count)| vec![outcome.clone(), count.to_string()])
        .collect();
    if outcomes.is_empty() {
        return None;
    }
    let header = format!("JOB OUTCOMES, LAST {} s", report.admissions_last_minute.window_s);
    Some(render_table(&[header.as_str(), "COUNT"], &outcomes))
}

/// Every limit as a dotted path and its value, saying whether they are live or the settings' defaults.
fn limits_section(report: &StatusReport) -> String {
    let limits = serde_json::to_value(&report.limits.limits).unwrap_or_default();
    let limit_rows: Vec<Vec<String>> =
        dotted_rows(&limits).into_iter().map(|(path, value)| vec![path, value]).collect();
    let source = match report.limits.source {
        LimitsSource::Live => "LIMITS (live)",
        LimitsSource::Settings => "LIMITS (from settings)",
    };
    render_table(&[source, "VALUE"], &limit_rows)
}

fn since(report: &StatusReport, then_ms: u64) -> String {
    format_duration_ms(report.generated_at_ms.saturating_sub(then_ms))
}
