//! dam-plot: the benchmarks' charts. A JSON chart spec (`chart_spec`) in, an SVG line chart out
//! (`chart_rendering`), so every bench draws its figures the same way without a plotting library of its own.

pub mod axis_scale;
pub mod chart_rendering;
pub mod chart_spec;
pub mod error;

pub use chart_rendering::{render_chart_svg, write_chart_file};
pub use chart_spec::{ChartSpec, HorizontalLineSpec, SeriesSpec};
pub use error::PlotError;
