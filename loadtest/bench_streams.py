"""bench-streams (`bench.py streams`): one gateway holding up to 18,000 open event streams of queued chats, opened
by `dam-load hold` from several source addresses: its memory per stream, CPU and admission latency at each count."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import plots
from bench_report import met, write_results
from bench_stack import RESULTS, log, start_stack
from load_generators import dam_load_binary, hold_streams_with_dam_load, stop_holders
from stack_meter import process_cpu_seconds


# The target for one open stream's memory on a gateway.
STREAM_MEMORY_TARGET_KIB = 16


def bench_streams() -> None:
    """One gateway holding up to 18,000 open event streams of queued chats, opened by `dam-load hold` from several
    127.0.0.x source addresses: its memory per stream, CPU and admission latency at each count."""
    counts = [int(count) for count in os.environ.get("BENCH_STREAM_COUNTS", "1000,6000,12000,18000").split(",")]
    binary = dam_load_binary()
    settings = {
        "DAM_LIMITS__MAX_OPEN_STREAMS": str(max(counts) + 1000),
        "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "1000000",
        "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "1000000",
        "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "1000000",
        "DAM_LIMITS__MAX_QUEUE_DEPTH": "1000000",
        "DAM_LIMITS__DUPLICATE_WINDOW_S": "0",
    }
    # No workers: every chat stays queued, so every stream stays open and gets a queue update each second.
    stack = start_stack("streams", gateways=1, workers=0, settings=settings)
    holders: list[subprocess.Popen] = []
    rows = []
    try:
        port = stack.ports.gateways[0]
        gateway_pid = stack.pid("gateway-1")
        check_open_files_limit(gateway_pid, max(counts))
        rows.append(measure_streams(port, gateway_pid, 0, {}))
        held = 0
        for count in counts:
            opening = hold_streams_with_dam_load(binary, port, count - held, stack.run_dir / f"hold-{count}.json")
            holders.append(opening["process"])
            held += opening["report"]["opened"]
            time.sleep(3)
            rows.append(measure_streams(port, gateway_pid, held, opening["report"]))
            if opening["report"]["failed"]:
                log(f"stopping here: {opening['report']['failed']} streams failed to open")
                break
    finally:
        stop_holders(holders)
        stack.stop()
    baseline_kib = rows[0]["gateway_rss_kib"]
    for row in rows[1:]:
        row["kib_per_stream"] = (row["gateway_rss_kib"] - baseline_kib) / max(row["open_streams"], 1)
    figures = {"rows": rows, "target_kib_per_stream": STREAM_MEMORY_TARGET_KIB}
    table = "\n".join(
        f"| {row['open_streams']:,} | {row['gateway_rss_kib'] / 1024:.0f} | "
        + (f"{row['kib_per_stream']:.1f} | {met(row['kib_per_stream'] <= STREAM_MEMORY_TARGET_KIB)} | "
           if "kib_per_stream" in row else "- | - | ")
        + f"{row['gateway_cpu_percent']:.0f}% | "
        f"{row['admission_ms_median']:.2f} / {row['admission_ms_max']:.2f} | {row['opening']} |"
        for row in rows
    )
    markdown = f"""# bench-streams ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

One gateway holding open event streams of queued chats (no workers; each stream gets a `queued` update every \
second), opened with `dam-load hold` from 8 source addresses. KiB per stream = (RSS at N - RSS at 0) / N; the \
target is at most {STREAM_MEMORY_TARGET_KIB} KiB per stream, up to 18,000 streams on one gateway.

| open streams | gateway RSS (MiB) | KiB per stream | ≤ {STREAM_MEMORY_TARGET_KIB} KiB | gateway CPU | POST /api/chats median / max (ms), 50 probes | opening these streams: failed, POST→202 p50 / p99 |
|---|---|---|---|---|---|---|
{table}

![Memory per stream and admission latency against open streams](bench-streams.svg)
"""
    measured = [row for row in rows if "kib_per_stream" in row]
    if measured:
        RESULTS.mkdir(parents=True, exist_ok=True)
        plots.write_chart({
            "title": "One gateway holding open event streams",
            "x_label": "open event streams",
            "y_label": "KiB per stream; ms",
            "series": [
                {"name": "KiB per stream", "points": [[row["open_streams"], row["kib_per_stream"]] for row in measured]},
                {"name": "POST /api/chats median (ms)",
                 "points": [[row["open_streams"], row["admission_ms_median"]] for row in measured]},
            ],
            "horizontal_lines": [{"name": f"target: {STREAM_MEMORY_TARGET_KIB} KiB per stream",
                                  "y": STREAM_MEMORY_TARGET_KIB}],
            "note": f"{os.cpu_count()} CPUs; streams of queued chats, opened by dam-load hold",
        }, RESULTS / "bench-streams.svg")
    write_results("bench-streams", figures, markdown)


def check_open_files_limit(pid: int, streams: int) -> None:
    """A gateway holding N streams needs N sockets; say so at once when its limit cannot hold them."""
    limits = Path(f"/proc/{pid}/limits").read_text()
    soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
    log(f"the gateway's open-files limit is {soft}")
    if soft != "unlimited" and int(soft) < streams + 200:
        log(f"warning: {soft} open files cannot hold {streams} streams; raise the hard limit (ulimit -Hn) first")


def measure_streams(port: int, gateway_pid: int, open_count: int, opening: dict) -> dict:
    status = Path(f"/proc/{gateway_pid}/status").read_text()
    rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    cpu_before = process_cpu_seconds(gateway_pid)
    time.sleep(2)
    cpu_percent = 100 * (process_cpu_seconds(gateway_pid) - cpu_before) / 2
    latencies = []
    for index in range(50):
        body = json.dumps({"message": f"probe {open_count}-{index}"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/chats", data=body,
                                         headers={"content-type": "application/json", "x-forwarded-for": "10.40.0.1"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    row = {
        "open_streams": open_count,
        "gateway_rss_kib": rss_kib,
        "gateway_cpu_percent": cpu_percent,
        "admission_ms_median": latencies[len(latencies) // 2],
        "admission_ms_max": latencies[-1],
        "opening": (f"{opening['failed']}, {opening['admission']['p50_ms']:.2f} / {opening['admission']['p99_ms']:.2f} ms"
                    if opening else "-"),
        "hold_report": opening or None,
    }
    log(json.dumps({key: value for key, value in row.items() if key != "hold_report"}))
    return row
