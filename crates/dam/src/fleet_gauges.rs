//! The gauges no single gateway or worker can see (queue depths, oldest waits, dead letters, workers alive),
//! read from Redis when `/metrics` is scraped, so they are never staler than the scrape.

use crate::app_state::AdminState;
use crate::status_report::{StatusReport, collect_status_report};

/// Refreshes the fleet gauges; when Redis does not answer, `dam_fleet_gauges_fresh` drops to 0 and the other
/// gauges keep their last values.
pub async fn refresh_fleet_gauges(state: &AdminState) {
    match collect_status_report(state).await {
        Ok(report) => {
            record_fleet_gauges(&report);
            metrics::gauge!("dam_fleet_gauges_fresh").set(1.0);
        }
        Err(error) => {
            tracing::warn!(%error, "fleet gauges not refreshed");
            metrics::gauge!("dam_fleet_gauges_fresh").set(0.0);
        }
    }
}

pub fn record_fleet_gauges(report: &StatusReport) {
    for lane in &report.lanes {
        let name = lane.lane.as_str();
        metrics::gauge!("dam_queue_depth", "lane" => name).set(lane.depth as f64);
        let oldest_wait_s = lane.oldest_wait_ms.unwrap_or(0) as f64 / 1_000.0;
        metrics::gauge!("dam_queue_oldest_wait_seconds", "lane" => name).set(oldest_wait_s);
    }
    metrics::gauge!("dam_jobs_running").set(report.jobs_running as f64);
    metrics::gauge!("dam_workers_alive").set(report.workers.alive.len() as f64);
    metrics::gauge!("dam_workers_presumed_dead").set(report.workers.presumed_dead.len() as f64);
    metrics::gauge!("dam_dead_letters").set(report.dead_letters.size as f64);
    metrics::counter!("dam_dead_letters_replayed_total").absolute(report.dead_letters.replayed_total);
    metrics::gauge!("dam_intake_paused").set(if report.intake.paused { 1.0 } else { 0.0 });
    let circuit_open = report.circuit_breaker.state == "open";
    metrics::gauge!("dam_circuit_breaker_open").set(if circuit_open { 1.0 } else { 0.0 });
}
