//! Latency histograms at microsecond resolution (HDR) and their summary in milliseconds, as the result file
//! and the progress line show them.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency a histogram tells apart from longer ones: an hour, far above any chat's timeout.
const HIGHEST_TRACKABLE_MICROSECONDS: u64 = 3_600_000_000;
/// Three significant figures: a value is known to 0.1% (1 µs at 1 ms, 1 ms at 1 s).
const SIGNIFICANT_FIGURES: u8 = 3;

/// One latency distribution.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    microseconds: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let microseconds = Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_MICROSECONDS, SIGNIFICANT_FIGURES)
            .expect("constant histogram bounds are valid");
        Self { microseconds }
    }

    /// Records one latency; anything beyond the trackable range counts as the highest value.
    pub fn record(&mut self, latency: Duration) {
        let microseconds = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.microseconds.saturating_record(microseconds);
    }

    pub fn count(&self) -> u64 {
        self.microseconds.len()
    }

    /// The latency at `quantile` (0.0 to 1.0) in milliseconds, or `None` when nothing was recorded.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        (self.count() > 0).then(|| microseconds_to_ms(self.microseconds.value_at_quantile(quantile)))
    }

    pub fn summary(&self) -> LatencySummary {
        if self.count() == 0 {
            return LatencySummary::default();
        }
        let at = |quantile: f64| microseconds_to_ms(self.microseconds.value_at_quantile(quantile));
        LatencySummary {
            count: self.count(),
            min_ms: microseconds_to_ms(self.microseconds.min()),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: microseconds_to_ms(self.microseconds.max()),
            mean_ms: self.microseconds.mean() / 1000.0,
        }
    }
}

/// What the result file holds for one histogram; every field is 0 when nothing was recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    /// The capacity objective is stated at the 95th percentile.
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn microseconds_to_ms(microseconds: u64) -> f64 {
    microseconds as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the histogram's precision: 0.1% of the value, and at least its 1 µs resolution.
    fn assert_close(actual: f64, expected: f64) {
        let tolerance = (expected * 0.001).max(0.001);
        assert!((actual - expected).abs() <= tolerance, "{actual} is not within {tolerance} of {expected}");
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
        assert_eq!(LatencyHistogram::new().quantile_ms(0.5), None);
    }

    #[test]
    fn the_summary_gives_quantiles_in_milliseconds() {
        let mut histogram = LatencyHistogram::new();
        for milliseconds in 1..=1000 {
            histogram.record(Duration::from_millis(milliseconds));
        }
        let summary = histogram.summary();
        assert_eq!(summary.count, 1000);
        assert_close(summary.min_ms, 1.0);
        assert_close(summary.p50_ms, 500.0);
        assert_close(summary.p90_ms, 900.0);
        assert_close(summary.p95_ms, 950.0);
        assert_close(summary.p99_ms, 990.0);
        assert_close(summary.p999_ms, 999.0);
        assert_close(summary.max_ms, 1000.0);
        assert_close(summary.mean_ms, 500.5);
    }

    #[test]
    fn sub_millisecond_latencies_keep_microsecond_resolution() {
        let mut histogram = LatencyHistogram::new();
        histogram.record(Duration::from_micros(250));
        histogram.record(Duration::from_micros(750));
        let summary = histogram.summary();
        assert_close(summary.min_ms, 0.25);
        assert_close(summary.max_ms, 0.75);
        assert_close(summary.mean_ms, 0.5);
    }

    #[test]
    fn latencies_beyond_the_range_count_as_the_highest_value() {
        let mut histogram = LatencyHistogram::new();
        histogram.record(Duration::from_secs(10 * 3600));
        histogram.record(Duration::ZERO);
        let summary = histogram.summary();
        assert_eq!(summary.count, 2);
        assert_close(summary.max_ms, 3_600_000.0);
        assert_close(summary.min_ms, 0.001);
    }
}
