//! How the command line shows answers to people: aligned tables and one-line confirmations. `--json` prints the
//! service's JSON instead, for scripts; nothing here is parsed by machines.

use crate::api_keys_admin::{ApiKeyDeleted, ApiKeyListing, ApiKeySaved};
use crate::blocks_admin::{ActiveBlock, BlockListing, BlockRemoved};
use crate::dead_letters_admin::{DeadLetterPage, DroppedDeadLetter, ReplayAllReport, ReplayedJob};
use crate::intake_admin::IntakeState;
use crate::limits_admin::{LimitsInForce, LimitsSource};

use super::limits_assignments::dotted_rows;

/// Columns separated by two spaces, each as wide as its widest cell, under a header line.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut all_rows = vec![headers.iter().map(|header| header.to_string()).collect()];
    all_rows.extend(rows.iter().cloned());
    render_rows(&all_rows)
}

/// Rows aligned in columns separated by two spaces, without a header.
pub fn render_rows(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if column >= widths.len() {
                widths.push(0);
            }
            widths[column] = widths[column].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(column, cell)| format!("{cell:<width$}", width = widths.get(column).copied().unwrap_or(0)))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    rows.iter().map(|row| line(row.clone())).collect::<Vec<_>>().join("\n")
}

/// `850 ms`, `4.2 s`, `3 min 5 s`, `2 h 3 min`.
pub fn format_duration_ms(milliseconds: u64) -> String {
    let seconds = milliseconds / 1_000;
    match milliseconds {
        0..1_000 => format!("{milliseconds} ms"),
        1_000..60_000 => format!("{:.1} s", milliseconds as f64 / 1_000.0),
        60_000..3_600_000 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3_600, seconds % 3_600 / 60),
    }
}

pub fn limits_text(limits: &LimitsInForce) -> String {
    let source = match limits.source {
        LimitsSource::Live => "live (set through the dam)",
        LimitsSource::Settings => "from settings (nothing set live)",
    };
    let value = serde_json::to_value(&limits.limits).unwrap_or_default();
    let rows: Vec<Vec<String>> =
        dotted_rows(&value).into_iter().map(|(path, value)| vec![path, value]).collect();
    format!("Limits in force: {source}\n\n{}", render_table(&["LIMIT", "VALUE"], &rows))
}

pub fn intake_text(intake: &IntakeState) -> String {
    if intake.paused {
        "Intake paused: new chats get 503 maintenance; queued and running chats carry on.".to_owned()
    } else {
        "Intake open: new chats are admitted.".to_owned()
    }
}

pub fn dead_letter_page_text(page: &DeadLetterPage) -> String {
    if page.items.is_empty() {
        return format!("No dead letters here ({} in the list).", page.total);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|item| {
            vec![
                item.id.clone(),
                item.reason.clone(),
                item.lane.map(|lane| lane.as_str().to_owned()).unwrap_or_else(|| "-".to_owned()),
                item.attempts.to_string(),
                if item.replayable { "yes".to_owned() } else { "no".to_owned() },
                shorten(&item.last_error, 60),
            ]
        })
        .collect();
    let shown_to = page.offset + page.items.len() as u64;
    format!(
        "{}\n\nShowing {}-{} of {}.",
        render_table(&["ID", "REASON", "LANE", "ATTEMPTS", "REPLAYABLE", "LAST ERROR"], &rows),
        page.offset + 1,
        shown_to,
        page.total
    )
}

pub fn replayed_text(job: &ReplayedJob) -> String {
    format!(
        "Replayed {} onto the {} lane at position {}. Follow it at {}",
        job.job_id,
        job.lane.as_str(),
        job.position,
        job.events_url
    )
}

pub fn replay_all_text(report: &ReplayAllReport) -> String {
    let mut lines = Vec::new();
    let verb = if report.dry_run { "Would replay" } else { "Replayed" };
    lines.push(format!("{verb} {} dead letter(s).", report.jobs.len()));
    for job in &report.jobs {
        let position = job.position.map(|position| format!(" at position {position}")).unwrap_or_default();
        lines.push(format!("  {} -> {} lane{position}", job.job_id, job.lane.as_str()));
    }
    if !report.not_replayable.is_empty() {
        lines.push(format!("{} cannot be replayed and stay in the list:", report.not_replayable.len()));
        for record in &report.not_replayable {
            lines.push(format!("  {}: {}", record.id, record.reason));
        }
    }
    if report.dry_run {
        lines.push("Dry run: nothing was changed.".to_owned());
    }
    lines.join("\n")
}

pub fn dropped_text(dropped: &DroppedDeadLetter) -> String {
    format!("Dropped dead letter {}.", dropped.id)
}

pub fn api_keys_text(listing: &ApiKeyListing) -> String {
    if listing.keys.is_empty() {
        return "No API keys are stored in Redis (keys from settings files are not listed).".to_owned();
    }
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let rows: Vec<Vec<String>> = listing
        .keys
        .iter()
        .map(|key| match &key.record {
            Some(record) => vec![
                record.name.clone(),
                record.tier.as_str().to_owned(),
                key.identity.clone(),
                key.hash_prefix.clone(),
                optional(record.rate_per_second.map(|rate| rate.to_string())),
                optional(record.burst.map(|burst| burst.to_string())),
                optional(record.daily_token_budget.map(|budget| budget.to_string())),
            ],
            None => vec![
                "(unreadable record)".to_owned(),
                "-".to_owned(),
                key.identity.clone(),
                key.hash_prefix.clone(),
            ],
        })
        .collect();
    render_table(&["NAME", "TIER", "IDENTITY", "HASH PREFIX", "RATE/S", "BURST", "DAILY TOKENS"], &rows)
}

pub fn api_key_saved_text(saved: &ApiKeySaved) -> String {
    let verb = if saved.created { "Created" } else { "Updated" };
    let tier = saved.key.record.as_ref().map(|record| record.tier.as_str()).unwrap_or("-");
    format!("{verb} API key {} (hash {}…, tier {tier}).", saved.key.identity, saved.key.hash_prefix)
}

pub fn api_key_deleted_text(deleted: &ApiKeyDeleted) -> String {
    format!("Deleted API key {} (hash {}…).", deleted.identity, deleted.hash_prefix)
}

pub fn block_added_text(block: &ActiveBlock) -> String {
    format!(
        "Blocked {} for {} ({}). The gateways answer 403 blocked until it lifts.",
        block.identity,
        format_duration_ms(block.remaining_s * 1_000),
        block.reason
    )
}

pub fn blocks_text(listing: &BlockListing) -> String {
    if listing.blocks.is_empty() {
        return "No blocks in force.".to_owned();
    }
    let rows: Vec<Vec<String>> = listing
        .blocks
        .iter()
        .map(|block| {
            vec![block.identity.clone(), format_duration_ms(block.remaining_s * 1_000), block.reason.clone()]
        })
        .collect();
    render_table(&["IDENTITY", "LIFTS IN", "REASON"], &rows)
}

pub fn block_removed_text(removed: &BlockRemoved) -> String {
    format!("Unblocked {}.", removed.identity)
}

fn shorten(text: &str, most_chars: usize) -> String {
    let single_line = text.replace(['\n', '\r'], " ");
    if single_line.chars().count() <= most_chars {
        return single_line;
    }
    let mut shortened: String = single_line.chars().take(most_chars - 1).collect();
    shortened.push('…');
    shortened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_to_the_widest_cell() {
        let table = render_table(
            &["LANE", "DEPTH"],
            &[vec!["premium".into(), "3".into()], vec!["x".into(), "12".into()]],
        );
        assert_eq!(table, "LANE     DEPTH\npremium  3\nx        12");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration_ms(850), "850 ms");
        assert_eq!(format_duration_ms(4_200), "4.2 s");
        assert_eq!(format_duration_ms(185_000), "3 min 5 s");
        assert_eq!(format_duration_ms(7_380_000), "2 h 3 min");
    }
}
