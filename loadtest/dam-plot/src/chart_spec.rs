//! The chart spec that benchmarks hand to dam-plot (JSON), and the checks that refuse one it cannot draw well.
//! Drawing lives in `chart_rendering`; axis ranges and ticks in `axis_scale`.

use serde::Deserialize;

use crate::error::PlotError;

/// One line chart: every series against the same two axes, objectives as dashed horizontal lines.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSpec {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    #[serde(default)]
    pub x_log: bool,
    #[serde(default)]
    pub y_log: bool,
    pub series: Vec<SeriesSpec>,
    #[serde(default)]
    pub horizontal_lines: Vec<HorizontalLineSpec>,
    /// One line of small print under the chart, e.g. the machine the figures come from.
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesSpec {
    pub name: String,
    /// `[x, y]` pairs, drawn joined in the order given.
    pub points: Vec<[f64; 2]>,
}

/// A named level across the whole chart, such as an objective (`p99 ≤ 20 ms`) or a baseline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HorizontalLineSpec {
    pub name: String,
    pub y: f64,
}

impl ChartSpec {
    /// Parses and checks a spec: what this returns can be drawn.
    pub fn from_json(text: &str) -> Result<Self, PlotError> {
        let spec: Self = serde_json::from_str(text).map_err(|error| {
            // Python's json module writes NaN and Infinity unless told not to; say so rather than "expected value".
            if ["NaN", "Infinity"].iter().any(|token| text.contains(token)) {
                PlotError::NonFiniteInJson(error)
            } else {
                PlotError::ParseSpec(error)
            }
        })?;
        spec.check_drawable()?;
        Ok(spec)
    }

    /// Refuses what would make a misleading or broken chart: nothing to draw, non-finite values, and values
    /// at or below zero on a logarithmic axis.
    pub fn check_drawable(&self) -> Result<(), PlotError> {
        if self.series.is_empty() {
            return Err(PlotError::NoSeries);
        }
        for series in &self.series {
            if series.points.is_empty() {
                return Err(PlotError::EmptySeries { series: series.name.clone() });
            }
            for (point, &[x, y]) in series.points.iter().enumerate() {
                for (axis, value, log) in [("x", x, self.x_log), ("y", y, self.y_log)] {
                    if !value.is_finite() {
                        return Err(PlotError::NonFiniteValue { series: series.name.clone(), point, axis });
                    }
                    if log && value <= 0.0 {
                        let what = format!("the series \"{}\" at point {point}", series.name);
                        return Err(PlotError::NotPositiveOnLogAxis { what, axis, value });
                    }
                }
            }
        }
        for line in &self.horizontal_lines {
            if !line.y.is_finite() {
                return Err(PlotError::NonFiniteLine { line: line.name.clone() });
            }
            if self.y_log && line.y <= 0.0 {
                let what = format!("the horizontal line \"{}\"", line.name);
                return Err(PlotError::NotPositiveOnLogAxis { what, axis: "y", value: line.y });
            }
        }
        Ok(())
    }

    pub fn x_values(&self) -> impl Iterator<Item = f64> + '_ {
        self.series.iter().flat_map(|series| series.points.iter().map(|point| point[0]))
    }

    /// Every y the chart must show: the points' and the horizontal lines'.
    pub fn y_values(&self) -> impl Iterator<Item = f64> + '_ {
        let points = self.series.iter().flat_map(|series| series.points.iter().map(|point| point[1]));
        points.chain(self.horizontal_lines.iter().map(|line| line.y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_SPEC: &str = r#"{"title": "t", "x_label": "x", "y_label": "y", "x_log": true,
        "series": [{"name": "s", "points": [[1, 2], [10, 3]]}], "horizontal_lines": [{"name": "h", "y": 0}]}"#;

    #[test]
    fn a_spec_with_only_the_required_fields_is_accepted() {
        let spec = ChartSpec::from_json(
            r#"{"title": "t", "x_label": "x", "y_label": "y", "series": [{"name": "s", "points": [[0, 1]]}]}"#,
        )
        .expect("a minimal spec");
        assert!(!spec.x_log && !spec.y_log && spec.horizontal_lines.is_empty() && spec.note.is_none());
    }

    #[test]
    fn a_horizontal_line_at_zero_is_fine_on_a_linear_y_axis() {
        ChartSpec::from_json(GOOD_SPEC).expect("x is logarithmic, y is not");
    }

    #[test]
    fn a_chart_without_series_is_refused() {
        let error = ChartSpec::from_json(r#"{"title": "t", "x_label": "x", "y_label": "y", "series": []}"#)
            .expect_err("nothing to draw");
        assert!(matches!(error, PlotError::NoSeries), "{error}");
    }

    #[test]
    fn an_empty_series_is_refused_by_name() {
        let error = ChartSpec::from_json(
            r#"{"title": "t", "x_label": "x", "y_label": "y", "series": [{"name": "chats/s", "points": []}]}"#,
        )
        .expect_err("an empty series");
        assert!(matches!(error, PlotError::EmptySeries { .. }), "{error}");
        assert!(error.to_string().contains("\"chats/s\" has no points"), "{error}");
    }

    #[test]
    fn nan_written_by_python_is_refused_with_a_message_that_says_so() {
        let error = ChartSpec::from_json(
            r#"{"title": "t", "x_label": "x", "y_label": "y", "series": [{"name": "s", "points": [[1, NaN]]}]}"#,
        )
        .expect_err("NaN is not JSON");
        assert!(matches!(error, PlotError::NonFiniteInJson(_)), "{error}");
        assert!(error.to_string().contains("finite number"), "{error}");
    }

    #[test]
    fn a_non_finite_value_in_a_built_spec_is_refused_with_its_series_and_point() {
        let mut spec = ChartSpec::from_json(GOOD_SPEC).expect("a good spec");
        spec.series[0].points[1][1] = f64::INFINITY;
        let error = spec.check_drawable().expect_err("infinity cannot be drawn");
        assert_eq!(
            error.to_string(),
            "the series \"s\" has a non-finite y value at point 1 (counting from 0)"
        );
    }

    #[test]
    fn zero_on_a_logarithmic_axis_is_refused() {
        let error = ChartSpec::from_json(&GOOD_SPEC.replace("\"x_log\": true", "\"y_log\": true"))
            .expect_err("the line at y = 0 cannot sit on a log axis");
        assert!(matches!(error, PlotError::NotPositiveOnLogAxis { axis: "y", .. }), "{error}");
        assert!(error.to_string().contains("horizontal line \"h\""), "{error}");
    }

    #[test]
    fn a_misspelt_field_is_refused_rather_than_ignored() {
        let error = ChartSpec::from_json(&GOOD_SPEC.replace("horizontal_lines", "horizontal_line"))
            .expect_err("unknown field");
        assert!(matches!(error, PlotError::ParseSpec(_)), "{error}");
        assert!(error.to_string().contains("unknown field `horizontal_line`"), "{error}");
    }
}
