"""The load generators the benches drive: k6 scenarios (loadtest/k6), wrk for one gateway's rejection curve, and
dam-load (loadtest/dam-load) for closed-loop runs and for holding event streams open. Every run is bounded in
time."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

from bench_stack import RESULTS, ROOT, log, target_dir

K6 = shutil.which("k6") or "k6"


# k6's exit code when the run finished but some of its thresholds were crossed.
K6_THRESHOLDS_CROSSED = 99


def run_k6(script: str, environment: dict[str, str], summary_name: str, cpus: str | None = None,
           k6_arguments: list[str] | None = None) -> dict:
    """One k6 scenario from loadtest/k6/ (`script` is its file name there); its JSON summary. Crossed thresholds
    are logged, not raised: a bench reports its figures whether or not the system met them."""
    summary_path = RESULTS / f"{summary_name}.k6.json"
    command = [K6, "run", "--quiet", "--no-color", *(k6_arguments or []), str(ROOT / "loadtest" / "k6" / script)]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    env = dict(os.environ, SUMMARY_PATH=str(summary_path), **environment)
    log(f"k6 {script} {json.dumps(environment)}")
    finished = subprocess.run(command, env=env, timeout=600)
    if finished.returncode == K6_THRESHOLDS_CROSSED:
        log(f"k6 {script}: some thresholds were crossed (see its summary above)")
    elif finished.returncode != 0:
        raise RuntimeError(f"k6 {script} exited with {finished.returncode}")
    return json.loads(summary_path.read_text())


def metric(summary: dict, name: str, field: str = "count", default: float = 0.0) -> float:
    return summary["metrics"].get(name, {}).get("values", {}).get(field, default)


def run_wrk(url: str, connections: int, seconds: int) -> dict:
    """One wrk run on CPU 1: requests per second and latency percentiles."""
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
               "-s", str(ROOT / "loadtest" / "gate_rejections.lua"), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    row = {
        "connections": connections,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "median_ms": wrk_latency_ms(output, "50%"),
        "p99_ms": wrk_latency_ms(output, "99%"),
        "refused_share": int(refused.group(1)) / requests if refused else 0.0,
    }
    log(json.dumps(row))
    return row


def wrk_latency_ms(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{re.escape(percentile)}\s+([\d.]+)(us|ms|s)", output).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def dam_load_binary() -> Path:
    """The load generator: BENCH_DAM_LOAD if set, else built here (cargo build --release -p dam-load) unless
    SKIP_BUILD=1, in which case the one already in the target directory is used."""
    if os.environ.get("BENCH_DAM_LOAD"):
        return Path(os.environ["BENCH_DAM_LOAD"])
    binary = target_dir() / "release" / "dam-load"
    if os.environ.get("SKIP_BUILD") != "1":
        log("building the load generator: cargo build --release -p dam-load")
        subprocess.run(["cargo", "build", "--release", "-p", "dam-load"], cwd=ROOT, check=True, timeout=1800)
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: build it (cargo build --release -p dam-load) or set BENCH_DAM_LOAD")
    return binary


def run_dam_load(binary: Path, arguments: list[str], json_path: Path, limit_s: float) -> tuple[dict, float]:
    """One dam-load run (its progress lines go to the terminal); its report and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen([str(binary), *arguments, "--json", str(json_path)], stdin=subprocess.DEVNULL)
    try:
        process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise RuntimeError(f"dam-load did not finish within {limit_s:.0f}s") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"dam-load exited with {process.returncode}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(json_path.read_text()), used


def summarize_load_report(report: dict) -> dict:
    measured = report["measured"]
    return {
        "chats_per_s": measured["chats_per_s"],
        "chats_done": measured["chats_done"],
        "chats_ended": measured["chats_ended"],
        "outcomes": measured["outcomes"],
        "outcome_examples": measured["outcome_examples"],
        "tokens_per_chat": measured["tokens_received"] / max(measured["chats_ended"], 1),
        "histograms": measured["histograms"],
        "lifetime": report["lifetime"],
    }


def hold_streams_with_dam_load(binary: Path, port: int, streams: int, json_path: Path) -> dict:
    """Starts `dam-load hold` for `streams` more streams and waits until it reports them open (or failed); the
    process keeps holding them until stop_holders."""
    log(f"opening {streams} more event streams with dam-load hold")
    command = [str(binary), "hold", "--url", f"http://127.0.0.1:{port}", "--streams", str(streams),
               "--source-addresses", "8", "--open-concurrency", "64", "--open-timeout-s", "300",
               "--json", str(json_path)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 330
    try:
        for line in process.stdout:
            report = json.loads(line)
            if report.get("event") == "all_open":
                failures = ", ".join(f"{count} {reason}" for reason, count in report["failures"].items())
                log(f"dam-load hold: {report['opened']} opened, {report['failed']} failed {failures}".rstrip())
                for reason, example in report["failure_examples"].items():
                    log(f"  {reason}: {example}")
                return {"process": process, "report": report}
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"dam-load hold exited or timed out before reporting (exit status {process.poll()})")
    except BaseException:
        stop_holders([process])
        raise


def stop_holders(holders: list[subprocess.Popen]) -> None:
    for process in holders:
        if process.poll() is None:
            process.terminate()
    for process in holders:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
