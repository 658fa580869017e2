//! The gate, against a real Redis and two gateways: rate, concurrency and queue bounds hold across instances,
//! identities cannot be spoofed, duplicates join, rejections are fast and explain themselves. The stack options and
//! limits below are shared by the three files.

mod callers_and_joins;
mod limits_across_gateways;
mod refusals;

use protocol::Settings;
use protocol::limits::TierLimits;
use serde_json::Value;
use test_support::StackOptions;

/// Two gateways and no worker: admitted chats stay queued, so the tests can count them there.
fn no_workers() -> StackOptions {
    StackOptions { gateways: 2, workers: 0, ..StackOptions::default() }
}

/// Gives the anonymous tier (every caller of these tests without an API key) `limits`.
fn anonymous(settings: &mut Settings, limits: TierLimits) {
    settings.limits.tiers.anonymous = limits;
}

/// Limits no test reaches; each test narrows the one it checks.
fn generous() -> TierLimits {
    TierLimits {
        rate_per_second: 100_000.0,
        burst: 100_000,
        max_active_chats: 100_000,
        daily_token_budget: 0,
    }
}

/// The status and the error body's machine-readable `code` (empty when the body has none).
async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json body");
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
}
