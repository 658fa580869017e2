#!/usr/bin/env python3
"""Runs the fault tests: every `tests/chaos/scenario_*.py` (or the ones named on the command line), one after the
other, each against a stack of its own (see tests/chaos/README.md for the interface). `--long` runs the long
versions (`make chaos`); without it the short ones (`make test`). Prints each scenario's figures and broken
promises, then `N passed, N failed`; exits non-zero on any failure."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

CHAOS_DIR = Path(__file__).resolve().parent
ROOT = CHAOS_DIR.parents[1]
sys.path.insert(0, str(CHAOS_DIR))
from chaos_stack import ScenarioResult  # noqa: E402 - beside this file

BINARIES = ["gateway", "llm-worker", "dam", "mock-llm"]


def scenario_files(names: list[str]) -> list[Path]:
    files = sorted(CHAOS_DIR.glob("scenario_*.py"))
    if not names:
        return files
    wanted = {name.removeprefix("scenario_").removesuffix(".py") for name in names}
    chosen = [path for path in files if path.stem.removeprefix("scenario_") in wanted]
    unknown = wanted - {path.stem.removeprefix("scenario_") for path in chosen}
    if unknown:
        known = ", ".join(path.stem.removeprefix("scenario_") for path in files)
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))} (known: {known})")
    return chosen


def load_scenario(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses (and pickling) look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_once() -> None:
    """Builds the debug binaries once, so no scenario's stack builds (each then starts with SKIP_BUILD=1)."""
    command = ["cargo", "build", *[argument for binary in BINARIES for argument in ("-p", binary)]]
    print(f"building: {' '.join(command)}", flush=True)
    subprocess.run(command, cwd=ROOT, check=True, timeout=1800)
    os.environ["SKIP_BUILD"] = "1"
    os.environ.setdefault("SKIP_DEPS", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--long", action="store_true", help="the long versions (make chaos)")
    parser.add_argument("--no-build", action="store_true", help="use the debug binaries as they are")
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all), e.g. workers redis_stall")
    arguments = parser.parse_args()

    files = scenario_files(arguments.scenarios)
    if not arguments.no_build:
        build_once()
    else:
        os.environ["SKIP_BUILD"] = "1"
    passed, failed, started_all = [], [], time.monotonic()
    for path in files:
        name = path.stem.removeprefix("scenario_")
        started = time.monotonic()
        print(f"\n=== {name} ({'long' if arguments.long else 'short'})", flush=True)
        try:
            module = load_scenario(path)
            if getattr(module, "DESCRIPTION", None):
                print(f"  {module.DESCRIPTION}", flush=True)
            result = module.run(arguments.long)
            if not isinstance(result, ScenarioResult):
                raise TypeError(f"run() returned {type(result).__name__}, not a ScenarioResult")
        except Exception as error:  # noqa: BLE001 - a crashing scenario is that scenario's failure
            result = ScenarioResult(name, failures=[f"{type(error).__name__}: {error}"])
            traceback.print_exc()
        took = time.monotonic() - started
        print(f"  figures: {json.dumps(result.figures, sort_keys=True, default=str)}", flush=True)
        if result.failures:
            failed.append(name)
            print(f"FAIL {name} ({took:.0f}s):", flush=True)
            for failure in result.failures:
                print(f"    - {failure}", flush=True)
        else:
            passed.append(name)
            print(f"PASS {name} ({took:.0f}s)", flush=True)
    print(f"\n{len(passed)} passed, {len(failed)} failed ({time.monotonic() - started_all:.0f}s)"
          + (f": {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
