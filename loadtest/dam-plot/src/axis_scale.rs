//! An axis's range and tick marks, chosen from the values it must show: linear axes start at 0 (so heights can be
//! compared by eye) and end a little above the largest value; logarithmic ones span the values with a margin.
//! The same type is the plotters coordinate of the axis, so a chart has one type whichever axes are logarithmic.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// Share of the linear span added above the largest value (or below the smallest negative one), so the top
/// point's marker is not cut by the frame.
const LINEAR_HEADROOM: f64 = 0.05;
/// Factor beyond the extreme values of a logarithmic axis, for the same reason.
const LOG_MARGIN_FACTOR: f64 = 1.4;
/// About this many labelled ticks on a linear axis: enough to read values off, few enough to stay legible.
const LINEAR_TICK_COUNT: f64 = 6.0;
/// More labelled ticks than this on a logarithmic axis, and only the powers of ten keep their labels.
const MOST_LOG_TICKS: usize = 12;

#[derive(Debug, Clone, PartialEq)]
pub struct AxisScale {
    pub start: f64,
    pub end: f64,
    pub logarithmic: bool,
    /// Labelled ticks, each with a grid line.
    pub ticks: Vec<f64>,
    /// Fainter grid lines between the ticks.
    pub minor_ticks: Vec<f64>,
}

impl AxisScale {
    /// From 0 (or below, for negative values) to a round value a little above the largest. Values must be finite.
    pub fn linear_from_zero(values: impl IntoIterator<Item = f64>) -> Self {
        let (mut low, mut high) = (0.0_f64, 0.0_f64);
        for value in values {
            low = low.min(value);
            high = high.max(value);
        }
        let all_zero = high - low <= f64::EPSILON;
        if all_zero {
            // Show 0 to 1 rather than an empty range.
            high = low + 1.0;
        }
        let span = high - low;
        let padded_high = if high > 0.0 && !all_zero { high + span * LINEAR_HEADROOM } else { high };
        let padded_low = if low < 0.0 { low - span * LINEAR_HEADROOM } else { low };
        let step = round_step((padded_high - padded_low) / LINEAR_TICK_COUNT);
        let start = (padded_low / step).floor() * step;
        let end = (padded_high / step).ceil() * step;
        let tick_count = ((end - start) / step).round() as i64;
        let ticks = (0..=tick_count).map(|index| start + index as f64 * step).collect();
        let minor_ticks = (0..tick_count).map(|index| start + (index as f64 + 0.5) * step).collect();
        Self { start, end, logarithmic: false, ticks, minor_ticks }
    }

    /// From a little below the smallest value to a little above the largest, ticks at 1, 2 and 5 times the powers
    /// of ten in between (only the powers when that is too many). Values must be finite and above 0.
    pub fn logarithmic(values: impl IntoIterator<Item = f64>) -> Self {
        let (mut low, mut high) = (f64::INFINITY, 0.0_f64);
        for value in values {
            low = low.min(value);
            high = high.max(value);
        }
        if !low.is_finite() {
            (low, high) = (1.0, 1.0);
        }
        let (start, end) = (low / LOG_MARGIN_FACTOR, high * LOG_MARGIN_FACTOR);
        let decades = start.log10().floor() as i32..=end.log10().ceil() as i32;
        let multiples_of = |mantissas: &[f64]| -> Vec<f64> {
            decades
                .clone()
                .flat_map(|decade| mantissas.iter().map(move |mantissa| mantissa * 10_f64.powi(decade)))
                .filter(|value| (start..=end).contains(value))
                .collect()
        };
        let mut ticks = multiples_of(&[1.0, 2.0, 5.0]);
        if ticks.len() > MOST_LOG_TICKS {
            ticks = multiples_of(&[1.0]);
        }
        let every_digit: Vec<f64> = (1..=9).map(f64::from).collect();
        if ticks.len() < 3 {
            // Less than a decade wide: label every digit.
            ticks = multiples_of(&every_digit);
        }
        if ticks.len() < 2 {
            // Narrower still: label the values themselves.
            ticks = vec![low, high];
            ticks.dedup();
        }
        let minor_ticks =
            multiples_of(&every_digit).into_iter().filter(|value| !ticks.contains(value)).collect();
        Self { start, end, logarithmic: true, ticks, minor_ticks }
    }
}

impl AxisScale {
    /// Where a value sits along the axis, as the fraction from `start` (0) to `end` (1).
    pub fn fraction_of(&self, value: f64) -> f64 {
        if self.logarithmic {
            (value.ln() - self.start.ln()) / (self.end.ln() - self.start.ln())
        } else {
            (value - self.start) / (self.end - self.start)
        }
    }
}

impl Ranged for AxisScale {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let pixels = f64::from(limit.1) - f64::from(limit.0);
        // Bounded, so a value far off the axis lands far off the chart instead of overflowing.
        let offset = (self.fraction_of(*value) * pixels).round().clamp(-1e6, 1e6);
        limit.0.saturating_add(offset as i32)
    }

    /// The labelled ticks for the bold grid; the minor ones when plotters asks for light lines.
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { self.minor_ticks.clone() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.start..self.end
    }
}

/// The round step (1, 2, 2.5 or 5 times a power of ten) nearest above `raw`.
fn round_step(raw: f64) -> f64 {
    let power = 10_f64.powf(raw.log10().floor());
    let mantissa = raw / power;
    let round = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|&candidate| mantissa <= candidate + 1e-9);
    round.unwrap_or(10.0) * power
}

/// A tick label: as few decimals as the value needs, thousands separated by commas (`1,000`, `0.25`, `2.5`).
pub fn format_tick(value: f64) -> String {
    let decimals = (0..=6)
        .find(|&decimals| {
            let scale = 10_f64.powi(decimals);
            ((value * scale).round() / scale - value).abs() <= 1e-9 * value.abs().max(1.0)
        })
        .unwrap_or(6) as usize;
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) =
        text.split_once('.').map_or((text.as_str(), None), |(whole, fraction)| (whole, Some(fraction)));
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value < 0.0 && text.chars().any(|digit| digit.is_ascii_digit() && digit != '0') {
        "-"
    } else {
        ""
    };
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_axis_starts_at_zero_and_ends_on_a_round_tick_above_the_largest_value() {
        let axis = AxisScale::linear_from_zero([12.0, 47.0, 95.0]);
        assert_eq!(axis.start, 0.0);
        assert!(axis.end > 95.0 && axis.end <= 120.0, "end {}", axis.end);
        assert_eq!(axis.ticks.first(), Some(&0.0));
        assert_eq!(axis.ticks.last(), Some(&axis.end));
    }

    #[test]
    fn linear_axis_of_only_zeros_is_zero_to_one() {
        let axis = AxisScale::linear_from_zero([0.0, 0.0]);
        assert_eq!((axis.start, axis.end), (0.0, 1.0));
    }

    #[test]
    fn linear_axis_reaches_below_zero_for_negative_values() {
        let axis = AxisScale::linear_from_zero([-3.0, 10.0]);
        assert!(axis.start < -3.0);
        assert!(axis.ticks.contains(&0.0));
    }

    #[test]
    fn logarithmic_axis_spans_the_values_with_ticks_at_one_two_and_five() {
        let axis = AxisScale::logarithmic([1.0, 50.0, 200.0, 1000.0]);
        assert!(axis.start < 1.0 && axis.end > 1000.0);
        assert_eq!(axis.ticks, vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]);
    }

    #[test]
    fn narrow_logarithmic_axis_labels_every_digit() {
        let axis = AxisScale::logarithmic([3.0, 4.0]);
        assert_eq!(axis.ticks, vec![3.0, 4.0, 5.0]);
    }

    #[test]
    fn tick_labels_are_short_and_grouped_by_thousands() {
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(2.5), "2.5");
        assert_eq!(format_tick(0.1 + 0.2), "0.3");
        assert_eq!(format_tick(1000.0), "1,000");
        assert_eq!(format_tick(-1250.0), "-1,250");
        assert_eq!(format_tick(123456.0), "123,456");
    }
}
