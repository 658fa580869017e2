//! `dam status` for people: the status report as a few aligned tables (intake, circuit, lanes, workers,
//! admissions over the last minute, dead letters, the limits in force).

use crate::status_report::StatusReport;

use super::limits_assignments::dotted_rows;
use super::text_output::{format_duration_ms, render_rows, render_table};

pub fn status_text(report: &StatusReport) -> String {
    let mut sections = Vec::new();

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
    let overview = vec![
        vec!["Intake".to_owned(), intake],
        vec!["Circuit breaker".to_owned(), circuit],
        vec!["Jobs running".to_owned(), report.jobs_running.to_string()],
        vec![
            "Workers".to_owned(),
            format!(
                "{} alive, {} presumed dead",
                report.workers.alive.len(),
                report.workers.presumed_dead.len()
            ),
        ],
        vec![
            "Dead letters".to_owned(),
            format!(
                "{} (replayed so far: {}, dropped by the caps: {})",
                report.dead_letters.size,
                report.dead_letters.replayed_total,
                report.dead_letters.dropped_total
            ),
        ],
    ];
    sections.push(render_rows(&overview));

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
    sections.push(render_table(&["LANE", "DEPTH", "OLDEST WAIT"], &lanes));

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
        sections.push("WORKERS\nnone registered".to_owned());
    } else {
        sections.push(render_table(&["WORKER", "STATE", "LAST HEARTBEAT", "IN FLIGHT"], &workers));
    }

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
    sections.push(render_table(&[header.as_str(), "COUNT"], &decisions));

    let outcomes: Vec<Vec<String>> = report
        .job_outcomes_last_minute
        .iter()
        .map(|(outcome, count)| vec![outcome.clone(), count.to_string()])
        .collect();
    if !outcomes.is_empty() {
        let header = format!("JOB OUTCOMES, LAST {} s", admissions.window_s);
        sections.push(render_table(&[header.as_str(), "COUNT"], &outcomes));
    }

    let limits = serde_json::to_value(&report.limits.limits).unwrap_or_default();
    let limit_rows: Vec<Vec<String>> =
        dotted_rows(&limits).into_iter().map(|(path, value)| vec![path, value]).collect();
    let source = match report.limits.source {
        crate::limits_admin::LimitsSource::Live => "LIMITS (live)",
        crate::limits_admin::LimitsSource::Settings => "LIMITS (from settings)",
    };
    sections.push(render_table(&[source, "VALUE"], &limit_rows));

    sections.join("\n\n")
}

fn since(report: &StatusReport, then_ms: u64) -> String {
    format_duration_ms(report.generated_at_ms.saturating_sub(then_ms))
}
