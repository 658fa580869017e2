"""bench-overhead (`bench.py overhead`): what the dam adds to a chat, measured against mock-llm itself in the same
run. At each concurrency level dam-load keeps N chats streaming straight at mock-llm, then through nginx and the
dam (the OpenAI flow, then the browser flow), while the CPU of every process and Redis's commands are counted."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench_report import write_results
from bench_stack import RESULTS, Stack, all_work_finished, log, start_stack, wait_until
from load_generators import dam_load_binary, run_dam_load, summarize_load_report
from overhead_report import (
    REDIS_COMMANDS_PER_BATCH,
    REDIS_COMMANDS_PER_CHAT,
    evaluate_overhead_targets,
    overhead_markdown,
    write_overhead_plots,
)
from stack_meter import StackMeter, costs_per_chat, measure_script_calls


def overhead_settings(levels: list[int], workers: int) -> dict[str, str]:
    most = max(levels)
    return {
        # The upstream: 200 ms to the first token, then 50 tokens 10 ms apart.
        "DAM_MOCK_LLM__TIME_TO_FIRST_TOKEN_MS": "200",
        "DAM_MOCK_LLM__TOKENS_PER_ANSWER": "50",
        "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "10",
        # All load comes from 127.0.0.x through nginx, a trusted proxy: one anonymous caller, whose limits must
        # not be what is measured.
        "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "1000000",
        "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "1000000",
        "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "1000000",
        "DAM_LIMITS__TIERS__ANONYMOUS__DAILY_TOKEN_BUDGET": "0",
        "DAM_LIMITS__MAX_QUEUE_DEPTH": "1000000",
        "DAM_LIMITS__MAX_OPEN_STREAMS": "100000",
        "DAM_LIMITS__LLM__MAX_REQUESTS_PER_SECOND": "1000000",
        "DAM_LIMITS__LLM__MAX_TOKENS_PER_MINUTE": "100000000000",
        "DAM_LIMITS__DUPLICATE_WINDOW_S": "0",
        # Room for every stream of the highest level at once, with a margin for uneven claims.
        "DAM_WORKER__CONCURRENCY": str(-(-most * 5 // 4 // max(workers, 1)) + 8),
    }


def bench_overhead() -> None:
    levels = [int(level) for level in os.environ.get("BENCH_OVERHEAD_LEVELS", "1,50,200,1000").split(",")]
    duration_s = float(os.environ.get("BENCH_OVERHEAD_DURATION_S", "20"))
    warm_up_s = float(os.environ.get("BENCH_OVERHEAD_WARM_UP_S", "3"))
    browser_flow = os.environ.get("BENCH_OVERHEAD_BROWSER", "1") == "1"
    monitor_s = float(os.environ.get("BENCH_OVERHEAD_MONITOR_S", "3"))
    gateways = int(os.environ.get("BENCH_OVERHEAD_GATEWAYS", "2"))
    workers = int(os.environ.get("BENCH_OVERHEAD_WORKERS", "2"))
    binary = dam_load_binary()
    settings = overhead_settings(levels, workers)
    stack = start_stack("overhead", gateways=gateways, workers=workers, settings=settings)
    rows = []
    try:
        meter = StackMeter(stack)
        log(f"dam processes measured: {', '.join(sorted(meter.pids))}")
        at_rest = measure_at_rest(meter, seconds=5)
        for streams in levels:
            rows.append(measure_overhead_level(stack, meter, binary, streams, warm_up_s, duration_s,
                                               browser_flow, monitor_s))
    finally:
        stack.stop()
    figures = {
        "settings": {"levels": levels, "duration_s": duration_s, "warm_up_s": warm_up_s, "gateways": gateways,
                     "workers": workers, "browser_flow": browser_flow, "monitor_s": monitor_s,
                     "stack_settings": settings},
        "at_rest": at_rest,
        "levels": rows,
        "targets": evaluate_overhead_targets(rows),
    }
    plot_paths = write_overhead_plots(figures)
    markdown = overhead_markdown(figures) + "\n" + "\n".join(f"![{path.stem}]({path.name})" for path in plot_paths)
    write_results("overhead", figures, markdown)


def measure_at_rest(meter: StackMeter, seconds: float) -> dict:
    """What the stack uses with no chat at all: heartbeats, limit reloads, queue watches."""
    log(f"measuring the stack at rest for {seconds:.0f} s")
    before = meter.read()
    time.sleep(seconds)
    usage = StackMeter.difference(before, meter.read())
    return {
        "cpu_ms_per_s": {name: 1000 * cpu / usage["seconds"] for name, cpu in sorted(usage["cpu_s"].items())},
        "dam_cpu_ms_per_s": 1000 * sum(usage["cpu_s"].values()) / usage["seconds"],
        "redis_commands_per_s": sum(usage["redis_commands"].values()) / usage["seconds"],
    }


def measure_overhead_level(stack: Stack, meter: StackMeter, binary: Path, streams: int, warm_up_s: float,
                           duration_s: float, browser_flow: bool, monitor_s: float) -> dict:
    limit_s = warm_up_s + duration_s + 180
    common = ["--streams", str(streams), "--warm-up-s", str(warm_up_s), "--duration-s", str(duration_s)]
    row: dict = {"streams": streams}
    runs = [("direct", f"http://127.0.0.1:{stack.ports.mock_llm}", "openai"), ("dam", stack.base_url, "openai")]
    if browser_flow:
        runs.append(("dam_browser", stack.base_url, "browser"))
    for name, url, flow in runs:
        wait_until("the stack is idle", 120, lambda: all_work_finished(stack))
        log(f"{streams} streams, {name}: {flow} flow to {url}")
        before = meter.read()
        report, load_generator_cpu_s = run_dam_load(
            binary, ["closed-loop", "--url", url, "--flow", flow, "--label", f"{name}-{streams}", *common],
            RESULTS / f"overhead-{name}-{streams}.dam-load.json", limit_s)
        if name != "direct":
            # Workers finish writing and streams close a moment after the client saw `done`.
            wait_until("the stack is idle", 120, lambda: all_work_finished(stack))
        usage = StackMeter.difference(before, meter.read())
        lifetime = report["lifetime"]
        run = summarize_load_report(report)
        run["costs"] = costs_per_chat(usage, lifetime["done"] + lifetime["failed"], load_generator_cpu_s)
        if name == "direct":
            # Only mock-llm and the load generator worked; the dam processes' figures are their rest.
            run["costs"] = {key: run["costs"][key] for key in
                            ("chats", "mock_llm_cpu_ms_per_chat", "load_generator_cpu_ms_per_chat", "seconds")}
        row[name] = run
        log(f"{streams} streams, {name}: {run['chats_per_s']:.1f} chats/s, first token p50 "
            f"{run['histograms']['first_token']['p50_ms']:.1f} ms p99 {run['histograms']['first_token']['p99_ms']:.1f} ms"
            + (f", dam CPU {run['costs']['dam_cpu_ms_per_chat']:.2f} ms/chat, Redis "
               f"{run['costs']['redis_commands_per_chat']:.1f} commands/chat" if name != "direct" else ""))
    direct, dam = row["direct"], row["dam"]
    row["throughput_ratio"] = dam["chats_per_s"] / max(direct["chats_per_s"], 1e-9)
    row["added_first_token_ms"] = {
        stat: dam["histograms"]["first_token"][f"{stat}_ms"] - direct["histograms"]["first_token"][f"{stat}_ms"]
        for stat in ("p50", "p99", "max")
    }
    if monitor_s > 0:
        wait_until("the stack is idle", 120, lambda: all_work_finished(stack))
        log(f"{streams} streams: counting script calls with MONITOR over a separate {monitor_s:.0f} s run")
        row["script_calls"] = measure_script_calls(stack, binary, streams, monitor_s)
        publishes_per_batch = row["script_calls"]["publishes_per_batch"]
    else:
        # Without a MONITOR run, take each batch to publish once (true of the stream-write scripts since they
        # publish a whole batch as one message).
        publishes_per_batch = 1.0
    if publishes_per_batch:
        publishes = dam["costs"]["redis_commands_per_chat_by_command"].get("publish", 0.0)
        row["batches_per_chat"] = publishes / publishes_per_batch
        row["redis_allowed_per_chat"] = REDIS_COMMANDS_PER_CHAT + REDIS_COMMANDS_PER_BATCH * row["batches_per_chat"]
    return row
