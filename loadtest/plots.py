"""Charts for the benchmarks: `write_chart(spec, svg_path)` hands a chart spec to dam-plot (loadtest/dam-plot) and
keeps the spec beside the SVG as <name>.spec.json, so the figures behind every plot stay with it.

The spec: {"title", "x_label", "y_label", "x_log" (optional), "y_log" (optional), "series": [{"name", "points":
[[x, y], ...]}], "horizontal_lines": [{"name", "y"}] (optional), "note" (optional: a line under the chart)}.
dam-plot is built in release unless SKIP_BUILD=1 (then the one already in CARGO_TARGET_DIR, or target/, is used);
BENCH_DAM_PLOT names another binary.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The binary once built or found, so a bench drawing several charts runs cargo once.
_binary: Path | None = None


def dam_plot_binary() -> Path:
    global _binary
    if _binary is not None:
        return _binary
    if os.environ.get("BENCH_DAM_PLOT"):
        _binary = Path(os.environ["BENCH_DAM_PLOT"])
        return _binary
    configured = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = (configured if configured.is_absolute() else ROOT / configured) / "release" / "dam-plot"
    if os.environ.get("SKIP_BUILD") != "1":
        print("[plots] building the chart maker: cargo build --release -p dam-plot", flush=True)
        built = subprocess.run(["cargo", "build", "--release", "-p", "dam-plot"], cwd=ROOT, timeout=1800)
        if built.returncode != 0:
            raise RuntimeError(f"cargo build --release -p dam-plot failed (exit status {built.returncode})")
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: build it (cargo build --release -p dam-plot), unset SKIP_BUILD, "
                           "or set BENCH_DAM_PLOT")
    _binary = binary
    return binary


def spec_path_for(svg_path: Path) -> Path:
    """overhead-ratio.svg -> overhead-ratio.spec.json, in the same directory."""
    return svg_path.with_name(f"{svg_path.stem}.spec.json")


def write_chart(spec: dict, svg_path: Path) -> None:
    """Draws `spec` into `svg_path` with dam-plot and writes the spec beside it. Raises RuntimeError with dam-plot's
    own message when the spec cannot be drawn (no series, an empty one, a value that is not a finite number, ...)."""
    svg_path = Path(svg_path)
    for series in spec.get("series", []):
        for index, point in enumerate(series.get("points", [])):
            if not all(isinstance(value, (int, float)) and math.isfinite(value) for value in point):
                raise RuntimeError(f"cannot draw {svg_path.name}: the series {series.get('name')!r} has the point "
                                   f"{point!r} at {index}, not two finite numbers")
    svg_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path = spec_path_for(svg_path)
    spec_path.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n")
    drawn = subprocess.run([str(dam_plot_binary()), str(spec_path), str(svg_path)], capture_output=True, text=True,
                           timeout=60)
    if drawn.returncode != 0:
        message = (drawn.stderr or drawn.stdout).strip() or f"exit status {drawn.returncode}"
        raise RuntimeError(f"dam-plot could not draw {svg_path}: {message}")
