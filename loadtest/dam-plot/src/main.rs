//! `dam-plot SPEC.json OUT.svg`: draws one chart spec (see `chart_spec`) as an SVG. The benches call it through
//! `loadtest/plots.py`; everything but reading the command line lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: dam-plot SPEC.json OUT.svg";

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.as_slice() {
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        [spec_path, svg_path] => {
            match dam_plot::write_chart_file(&PathBuf::from(spec_path), &PathBuf::from(svg_path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("dam-plot: {spec_path}: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
