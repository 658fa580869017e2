//! The one error type of dam-plot: a spec it cannot read or will not draw, and drawing or writing that failed.
//! Every message names what to fix; none of them is a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("could not read the chart spec {path}: {source}")]
    ReadSpec { path: PathBuf, source: std::io::Error },
    #[error("the chart spec is not valid JSON of the expected shape: {0}")]
    ParseSpec(#[source] serde_json::Error),
    #[error(
        "the chart spec holds NaN or Infinity, which JSON cannot carry: every value must be a finite number ({0})"
    )]
    NonFiniteInJson(#[source] serde_json::Error),
    #[error("the chart has no series: give at least one, with at least one point")]
    NoSeries,
    #[error("the series \"{series}\" has no points")]
    EmptySeries { series: String },
    #[error("the series \"{series}\" has a non-finite {axis} value at point {point} (counting from 0)")]
    NonFiniteValue { series: String, point: usize, axis: &'static str },
    #[error("the horizontal line \"{line}\" is at a non-finite y")]
    NonFiniteLine { line: String },
    #[error("{what} has {axis} = {value}, which a logarithmic {axis} axis cannot show (only values above 0)")]
    NotPositiveOnLogAxis { what: String, axis: &'static str, value: f64 },
    #[error("drawing the chart failed: {0}")]
    Drawing(String),
    #[error("could not write the chart {path}: {source}")]
    WriteSvg { path: PathBuf, source: std::io::Error },
}
