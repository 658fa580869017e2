//! Draws a checked `ChartSpec` as SVG with plotters: lines with a marker per point, dashed named horizontal
//! lines, a legend and the note under the plot. Ranges and ticks come from `axis_scale`.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::axis_scale::{AxisScale, format_tick};
use crate::chart_spec::ChartSpec;
use crate::error::PlotError;

const WIDTH: u32 = 880;
const CHART_HEIGHT: u32 = 480;
const LEGEND_ROW_HEIGHT: u32 = 24;
const NOTE_HEIGHT: u32 = 22;
const FONT: &str = "sans-serif";
/// Series colours (the tableau palette without its red, which the horizontal lines use), and a marker shape each,
/// so series stay apart in grey print and for colour-blind readers.
const SERIES_COLOURS: [RGBColor; 9] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];
const LINE_COLOUR: RGBColor = RGBColor(0xc0, 0x30, 0x30);
const MARKER_SIZE: i32 = 4;

#[derive(Debug, Clone, Copy)]
enum MarkerShape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

const MARKER_SHAPES: [MarkerShape; 4] =
    [MarkerShape::Circle, MarkerShape::Square, MarkerShape::Triangle, MarkerShape::Diamond];

/// The chart as an SVG document. Checks the spec first, so a hand-built spec is refused as a parsed one is.
pub fn render_chart_svg(spec: &ChartSpec) -> Result<String, PlotError> {
    spec.check_drawable()?;
    let x_axis = axis_for(spec.x_values(), spec.x_log);
    let y_axis = axis_for(spec.y_values(), spec.y_log);
    let legend_rows = legend_layout(spec).len() as u32;
    let note_height = note_lines(spec).len() as u32 * NOTE_HEIGHT;
    let height = CHART_HEIGHT + legend_rows * LEGEND_ROW_HEIGHT + note_height + 8;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let (chart_area, below) = root.split_vertically(CHART_HEIGHT);
        draw_plot(&chart_area, spec, x_axis, y_axis)?;
        draw_legend_and_note(&below, spec)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

/// Reads, checks and draws `spec_path` into `svg_path`.
pub fn write_chart_file(spec_path: &Path, svg_path: &Path) -> Result<(), PlotError> {
    let text = std::fs::read_to_string(spec_path)
        .map_err(|source| PlotError::ReadSpec { path: spec_path.to_path_buf(), source })?;
    let svg = render_chart_svg(&ChartSpec::from_json(&text)?)?;
    std::fs::write(svg_path, svg)
        .map_err(|source| PlotError::WriteSvg { path: svg_path.to_path_buf(), source })
}

fn axis_for(values: impl Iterator<Item = f64>, logarithmic: bool) -> AxisScale {
    if logarithmic { AxisScale::logarithmic(values) } else { AxisScale::linear_from_zero(values) }
}

fn drawing_error(error: impl std::fmt::Display) -> PlotError {
    PlotError::Drawing(error.to_string())
}

type Chart<'area, 'svg> = ChartContext<'area, SVGBackend<'svg>, Cartesian2d<AxisScale, AxisScale>>;

fn draw_plot(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    spec: &ChartSpec,
    x: AxisScale,
    y: AxisScale,
) -> Result<(), PlotError> {
    let (x_start, x_end, y_start) = (x.start, x.end, y.start);
    let mut chart = ChartBuilder::on(area)
        .caption(&spec.title, (FONT, 24))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .x_desc(&spec.x_label)
        .y_desc(&spec.y_label)
        .x_label_formatter(&|value| format_tick(*value))
        .y_label_formatter(&|value| format_tick(*value))
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .light_line_style(RGBColor(0xf2, 0xf2, 0xf2))
        .draw()
        .map_err(drawing_error)?;

    let line_style = ShapeStyle { color: LINE_COLOUR.to_rgba(), filled: false, stroke_width: 2 };
    for line in &spec.horizontal_lines {
        let ends = [(x_start, line.y), (x_end, line.y)];
        chart.draw_series(DashedLineSeries::new(ends, 9, 6, line_style)).map_err(drawing_error)?;
    }
    let series_points: Vec<Vec<(f64, f64)>> =
        spec.series.iter().map(|series| series.points.iter().map(|&[x, y]| (x, y)).collect()).collect();
    for (index, points) in series_points.iter().enumerate() {
        let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
        chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2))).map_err(drawing_error)?;
    }
    // Markers after every line, the first series' last (on top): where two series coincide, the smaller marker
    // of the earlier one still shows on the later one's.
    for (index, points) in series_points.iter().enumerate().rev() {
        let colour = SERIES_COLOURS[index % SERIES_COLOURS.len()];
        draw_markers(&mut chart, points, MARKER_SHAPES[index % MARKER_SHAPES.len()], colour)?;
    }

    // The lines' names go on the root area in pixels, right-aligned just above their line, or just below it when
    // another line would cross the name there; a name that would overlap one already placed moves left of it.
    let right_edge = chart.backend_coord(&(x_end, y_start)).0;
    let line_pixels: Vec<i32> =
        spec.horizontal_lines.iter().map(|line| chart.backend_coord(&(x_start, line.y)).1).collect();
    let style = TextStyle::from((FONT, 14).into_font()).color(&LINE_COLOUR);
    let mut placed: Vec<LabelBox> = Vec::new();
    for (line, &line_pixel) in spec.horizontal_lines.iter().zip(&line_pixels) {
        let (width, height) = area.estimate_text_size(&line.name, &style).map_err(drawing_error)?;
        let (width, height) = (width as i32, height as i32);
        // plotters' estimate of an SVG text's height is a little short of what a browser draws: keep a margin.
        let crossed = |top: i32, bottom: i32| {
            line_pixels.iter().any(|&other| other != line_pixel && (top - 4..=bottom + 4).contains(&other))
        };
        let above = (line_pixel - 3 - height, line_pixel - 3);
        let below = (line_pixel + 3, line_pixel + 3 + height);
        let (top, bottom) =
            if crossed(above.0, above.1) && !crossed(below.0, below.1) { below } else { above };
        let mut label = LabelBox { left: right_edge - 6 - width, right: right_edge - 6, top, bottom };
        while let Some(other) = placed.iter().find(|other| other.overlaps(&label)) {
            label.right = other.left - 14;
            label.left = label.right - width;
        }
        placed.push(label);
        let (base_x, base_y) = area.get_base_pixel();
        let anchored = style.pos(Pos::new(HPos::Right, VPos::Top));
        area.draw(&Text::new(line.name.clone(), (label.right - base_x, label.top - base_y), anchored))
            .map_err(drawing_error)?;
    }
    Ok(())
}

/// Where a horizontal line's name sits, in pixels.
#[derive(Debug, Clone, Copy)]
struct LabelBox {
    left: i32,
    right: i32,
    top: i32,
    bottom: i32,
}

impl LabelBox {
    fn overlaps(&self, other: &LabelBox) -> bool {
        self.left < other.right
            && other.left < self.right
            && self.top < other.bottom
            && other.top < self.bottom
    }
}

fn draw_markers(
    chart: &mut Chart<'_, '_>,
    points: &[(f64, f64)],
    shape: MarkerShape,
    colour: RGBColor,
) -> Result<(), PlotError> {
    let style = colour.filled();
    let size = MARKER_SIZE;
    let points = points.iter().copied();
    match shape {
        MarkerShape::Circle => chart.draw_series(points.map(|point| Circle::new(point, size, style))),
        // A little larger than the circle drawn over it where two series meet, so both show.
        MarkerShape::Square => chart.draw_series(points.map(|point| {
            EmptyElement::at(point) + Rectangle::new([(-size - 1, -size - 1), (size + 1, size + 1)], style)
        })),
        MarkerShape::Triangle => {
            chart.draw_series(points.map(|point| TriangleMarker::new(point, size + 2, style)))
        }
        MarkerShape::Diamond => chart.draw_series(points.map(|point| {
            let corners = vec![(0, -size - 1), (size + 1, 0), (0, size + 1), (-size - 1, 0)];
            EmptyElement::at(point) + Polygon::new(corners, style)
        })),
    }
    .map_err(drawing_error)?;
    Ok(())
}

/// The note, wrapped at spaces to the chart's width (at about 6.5 px a character of 14 px text).
fn note_lines(spec: &ChartSpec) -> Vec<String> {
    let most_characters = (WIDTH as usize - 32) * 2 / 13;
    let mut lines: Vec<String> = Vec::new();
    for word in spec.note.as_deref().unwrap_or_default().split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= most_characters => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// The legend's entries by row: (series index, x offset), wrapping when a row would run past the chart's width.
fn legend_layout(spec: &ChartSpec) -> Vec<Vec<(usize, i32)>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut x = 0;
    for (index, series) in spec.series.iter().enumerate() {
        // The sample line, the name at about 8 px a character (plotters has no font metrics for SVG), a gap.
        let width = 64 + 8 * series.name.chars().count() as i32;
        if x > 0 && x + width > WIDTH as i32 - 100 {
            rows.push(std::mem::take(&mut row));
            x = 0;
        }
        row.push((index, x));
        x += width;
    }
    rows.push(row);
    rows
}

fn draw_legend_and_note(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    spec: &ChartSpec,
) -> Result<(), PlotError> {
    let left = 86;
    let text_style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (row_index, row) in legend_layout(spec).into_iter().enumerate() {
        let y = row_index as i32 * LEGEND_ROW_HEIGHT as i32 + LEGEND_ROW_HEIGHT as i32 / 2;
        for (series_index, offset) in row {
            let colour = SERIES_COLOURS[series_index % SERIES_COLOURS.len()];
            let x = left + offset;
            area.draw(&PathElement::new(vec![(x, y), (x + 26, y)], colour.stroke_width(2)))
                .map_err(drawing_error)?;
            let marker_style = colour.filled();
            let centre = (x + 13, y);
            match MARKER_SHAPES[series_index % MARKER_SHAPES.len()] {
                MarkerShape::Circle => area.draw(&Circle::new(centre, MARKER_SIZE, marker_style)),
                MarkerShape::Square => area.draw(&Rectangle::new(
                    [(centre.0 - MARKER_SIZE, y - MARKER_SIZE), (centre.0 + MARKER_SIZE, y + MARKER_SIZE)],
                    marker_style,
                )),
                MarkerShape::Triangle => {
                    area.draw(&TriangleMarker::new(centre, MARKER_SIZE + 2, marker_style))
                }
                MarkerShape::Diamond => {
                    let size = MARKER_SIZE + 1;
                    let corners = vec![
                        (centre.0, y - size),
                        (centre.0 + size, y),
                        (centre.0, y + size),
                        (centre.0 - size, y),
                    ];
                    area.draw(&Polygon::new(corners, marker_style))
                }
            }
            .map_err(drawing_error)?;
            let name = spec.series[series_index].name.clone();
            area.draw(&Text::new(name, (x + 34, y), text_style.clone())).map_err(drawing_error)?;
        }
    }
    let rows = legend_layout(spec).len() as i32;
    let style = TextStyle::from((FONT, 14).into_font()).color(&RGBColor(0x55, 0x55, 0x55));
    for (index, line) in note_lines(spec).into_iter().enumerate() {
        let y = rows * LEGEND_ROW_HEIGHT as i32 + 6 + index as i32 * NOTE_HEIGHT as i32;
        area.draw(&Text::new(line, (left - 70, y), style.clone())).map_err(drawing_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart_spec::{HorizontalLineSpec, SeriesSpec};

    fn redis_commands_chart() -> ChartSpec {
        ChartSpec {
            title: "Redis commands per chat".to_string(),
            x_label: "concurrent chats".to_string(),
            y_label: "commands per chat".to_string(),
            x_log: true,
            y_log: false,
            series: vec![
                SeriesSpec {
                    name: "Traffic Dam".to_string(),
                    points: vec![[10.0, 120.0], [50.0, 110.5], [200.0, 90.0]],
                },
                SeriesSpec {
                    name: "batches per chat".to_string(),
                    points: vec![[10.0, 40.0], [200.0, 20.0]],
                },
            ],
            horizontal_lines: vec![HorizontalLineSpec {
                name: "BullMQ-like: 33 per job".to_string(),
                y: 33.0,
            }],
            note: Some("2 CPUs & <noisy> neighbours".to_string()),
        }
    }

    #[test]
    fn the_svg_holds_the_title_the_series_names_the_line_name_and_the_note() {
        let svg = render_chart_svg(&redis_commands_chart()).expect("a drawable chart");
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for text in ["Redis commands per chat", "Traffic Dam", "batches per chat", "BullMQ-like: 33 per job"]
        {
            assert!(svg.contains(text), "{text} missing from the SVG");
        }
        assert!(svg.contains("concurrent chats") && svg.contains("commands per chat"), "axis labels missing");
        // Text is escaped, so the SVG stays well-formed XML.
        assert!(svg.contains("2 CPUs &amp; &lt;noisy&gt; neighbours"), "the note, escaped");
    }

    #[test]
    fn each_point_gets_a_marker_and_the_horizontal_line_is_dashed() {
        let mut spec = redis_commands_chart();
        spec.series.truncate(1);
        let svg = render_chart_svg(&spec).expect("a drawable chart");
        // The first series' markers are circles: three on the chart, one in the legend.
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
        // A dashed line is many short segments in the line colour; a plain one would be a single polyline.
        let dashes = svg.matches(r##"stroke="#C03030""##).count();
        assert!(dashes > 10, "{dashes} segments in the line colour");
    }

    #[test]
    fn a_logarithmic_axis_is_labelled_at_one_two_and_five() {
        let mut spec = redis_commands_chart();
        spec.y_log = true;
        let svg = render_chart_svg(&spec).expect("a drawable chart");
        // plotters writes each text on a line of its own.
        for label in ["\n10\n", "\n20\n", "\n50\n", "\n100\n", "\n200\n"] {
            assert!(svg.contains(label), "tick label {label} missing");
        }
    }

    #[test]
    fn a_bad_spec_built_in_code_is_refused_before_drawing() {
        let mut spec = redis_commands_chart();
        spec.series[1].points.clear();
        let error = render_chart_svg(&spec).expect_err("an empty series");
        assert!(matches!(error, PlotError::EmptySeries { .. }), "{error}");
    }

    #[test]
    fn a_spec_file_becomes_an_svg_file() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let spec_path = directory.path().join("chart.spec.json");
        let svg_path = directory.path().join("chart.svg");
        std::fs::write(
            &spec_path,
            r#"{"title": "chats per second", "x_label": "streams", "y_label": "chats/s",
                "series": [{"name": "through the dam", "points": [[5, 40.5], [20, 150]]}],
                "horizontal_lines": [{"name": "objective", "y": 100}], "note": "measured here"}"#,
        )
        .expect("writing the spec");
        write_chart_file(&spec_path, &svg_path).expect("drawing the spec");
        let svg = std::fs::read_to_string(&svg_path).expect("the SVG was written");
        for text in ["chats per second", "through the dam", "objective", "measured here"] {
            assert!(svg.contains(text), "{text} missing from the SVG file");
        }
    }

    #[test]
    fn a_missing_spec_file_is_a_clear_error_naming_it() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let missing = directory.path().join("nowhere.json");
        let error = write_chart_file(&missing, &directory.path().join("out.svg")).expect_err("no such file");
        assert!(matches!(error, PlotError::ReadSpec { .. }), "{error}");
        assert!(error.to_string().contains("nowhere.json"), "{error}");
    }
}
