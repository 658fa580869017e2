"""bench-gate (`bench.py gate`): a flood of 5,000 requests/s from 5 callers while 100 users chat (k6), then the
429s per second of one gateway pinned to one core (wrk) over a range of open connections."""

from __future__ import annotations

import os
import subprocess
import time

import plots
from bench_report import write_results
from bench_stack import RESULTS, all_work_finished, mock_stats, start_stack, wait_until
from load_generators import metric, run_k6, run_wrk
from stack_meter import admission_buckets, bucket_quantiles


def bench_gate() -> None:
    duration_s = int(os.environ.get("BENCH_DURATION_S", "30"))
    stack = start_stack("gate", gateways=1, workers=4, settings={})
    try:
        gateway = f"http://127.0.0.1:{stack.ports.gateways[0]}"
        buckets_before = admission_buckets(gateway)
        flood = run_k6(
            "flood.js",
            {"BASE_URL": gateway, "FLOOD_RATE": "5000", "FLOOD_IDENTITIES": "5", "FLOOD_FORWARDED_FOR": "1",
             "LEGIT_VUS": "100", "THINK_S": "1.5", "DURATION": f"{duration_s}s"},
            "bench-gate-flood",
        )
        inside_gateway = bucket_quantiles(buckets_before, admission_buckets(gateway))
        wait_until("every admitted chat reached its end upstream", 120, lambda: all_work_finished(stack))
        figures = gate_figures(flood, duration_s, mock_stats(stack), inside_gateway)
    finally:
        stack.stop()
    figures["one_core"] = measure_rejections_on_one_core()
    markdown = gate_markdown(figures, duration_s)
    write_gate_chart(figures["one_core"]["curve"])
    write_results("bench-gate", figures, markdown)


def gate_figures(flood: dict, duration_s: int, stats: dict, inside_gateway: dict[str, float]) -> dict:
    """The flood's and the users' figures from k6's summary, with what reached mock-llm."""
    flood_sent = metric(flood, "flood_requests")
    admitted = metric(flood, "flood_admitted") + metric(flood, "legit_chats_admitted")
    return {
        "flood": {
            "target_rate_per_s": 5000,
            "sent": flood_sent,
            "sent_per_s": flood_sent / duration_s,
            "dropped_iterations": metric(flood, "dropped_iterations"),
            "admitted": metric(flood, "flood_admitted"),
            "rejected": metric(flood, "flood_refused_edge") + metric(flood, "flood_refused_gate"),
            "rejection_ms": {stat: metric(flood, "flood_refusal_ms", stat)
                             for stat in ("med", "p(90)", "p(99)", "max")},
        },
        "users": {
            "chats_completed": metric(flood, "legit_chats_completed"),
            # A user refused under the flood counts as failed here: the gate was meant to spare them.
            "chats_failed": metric(flood, "legit_chats_failed") + metric(flood, "legit_chats_refused"),
            "chat_ms": {stat: metric(flood, "legit_chat_ms", stat) for stat in ("med", "p(90)", "p(99)")},
        },
        "mock_llm": {"requests": stats["requests"], "admitted_chats": admitted},
        "admission_inside_gateway_ms": inside_gateway,
    }


def gate_markdown(figures: dict, duration_s: int) -> str:
    curve = "\n".join(
        f"| {row['connections']} | {row['requests_per_s']:.0f} | {row['median_ms']:.2f} ms | {row['p99_ms']:.2f} ms |"
        for row in figures["one_core"]["curve"]
    )
    user_total = figures["users"]["chats_completed"] + figures["users"]["chats_failed"]
    return f"""# bench-gate ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

Flood: {figures['flood']['sent']:.0f} requests in {duration_s} s from 5 callers ({figures['flood']['sent_per_s']:.0f}/s,
target 5000/s; k6 dropped {figures['flood']['dropped_iterations']:.0f} iterations), while 100 users chatted.

| figure | value |
|---|---|
| flood requests admitted | {figures['flood']['admitted']:.0f} |
| flood requests rejected (429/503 from the gate or the edge) | {figures['flood']['rejected']:.0f} |
| 429 latency under the flood, median / p99 / max | {figures['flood']['rejection_ms']['med']:.2f} / {figures['flood']['rejection_ms']['p(99)']:.2f} / {figures['flood']['rejection_ms']['max']:.2f} ms |
| the gate's decision inside the gateway (Redis round trip included), p50 / p99, at most | {figures['admission_inside_gateway_ms']['p50']} / {figures['admission_inside_gateway_ms']['p99']} ms |
| user chats completed / failed | {figures['users']['chats_completed']:.0f} / {figures['users']['chats_failed']:.0f} (error rate {100 * figures['users']['chats_failed'] / max(user_total, 1):.2f}%) |
| user chat, request to `done`, median / p99 | {figures['users']['chat_ms']['med']:.0f} / {figures['users']['chat_ms']['p(99)']:.0f} ms |
| chats admitted / requests mock-llm received | {figures['mock_llm']['admitted_chats']:.0f} / {figures['mock_llm']['requests']} |

One gateway alone on one core (pinned to CPU 0, one runtime thread; Redis and the load generator, wrk, share
CPU 1), every request a 429 decided by the gate:

| open connections | 429s per second | median | p99 |
|---|---|---|---|
{curve}

Most 429s per second with p99 under 2 ms: {figures['one_core']['best_under_2ms_per_s']:.0f}; most at any latency:
{figures['one_core']['most_per_s']:.0f}.

![429s per second and their p99 against open connections, one gateway on one core](bench-gate-one-core.svg)
"""


def write_gate_chart(curve: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    plots.write_chart({
        "title": "Rejections by one gateway on one core",
        "x_label": "open connections (wrk)",
        "y_label": "429s per second",
        "series": [{"name": "429s per second",
                    "points": [[row["connections"], row["requests_per_s"]] for row in curve]}],
        "note": f"{os.cpu_count()} CPUs: the gateway pinned to one, Redis and wrk on the other",
    }, RESULTS / "bench-gate-one-core.svg")


def measure_rejections_on_one_core() -> dict:
    """Rejections per second and their latency, over a range of open connections, for one gateway on one core."""
    os.environ["TOKIO_WORKER_THREADS"] = "1"
    try:
        stack = start_stack("gate-one-core", gateways=1, workers=0, settings={})
    finally:
        del os.environ["TOKIO_WORKER_THREADS"]
    curve = []
    try:
        pin(stack.pid("gateway-1"), "0")
        pin(stack.pid("redis"), "1")
        url = f"http://127.0.0.1:{stack.ports.gateways[0]}/api/chats"
        for connections in (2, 4, 8, 12, 16, 32, 64):
            curve.append(run_wrk(url, connections, seconds=8))
    finally:
        stack.stop()
    under_2ms = [row["requests_per_s"] for row in curve if row["p99_ms"] < 2.0]
    return {
        "curve": curve,
        "best_under_2ms_per_s": max(under_2ms, default=0.0),
        "most_per_s": max(row["requests_per_s"] for row in curve),
    }


def pin(pid: int, cpus: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True, timeout=10)
