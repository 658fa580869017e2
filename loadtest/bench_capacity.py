"""bench-capacity: how many concurrent users one topology holds within the objective (p95 time to first token under
3 s, under 0.1% errors), for 1 gateway + 2 workers and then 2 gateways + 4 workers, and the scale-out efficiency
between them, raw and against the CPU the processes actually had. Run through `make bench-capacity`.

Knobs (environment): BENCH_CAPACITY_STEPS (users per step, 50,100,200,400,600,800,1000,1200,1500,2000),
BENCH_CAPACITY_STEP_S (measured seconds per step, 30), BENCH_CAPACITY_WARM_UP_S (5), BENCH_CAPACITY_TTFT_MS (1000),
BENCH_CAPACITY_INTER_TOKEN_MS (25, i.e. 40 tokens/s), BENCH_CAPACITY_TOKENS (200), BENCH_CAPACITY_TOPOLOGIES
(1x2,2x4: gateways x workers); SKIP_BUILD=1, CARGO_TARGET_DIR and BENCH_DAM_LOAD as for every bench.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from bench_overhead import overhead_settings
from bench_report import write_results
from bench_stack import RESULTS, Stack, all_work_finished, log, mock_stats, queue_depth, start_stack, wait_until
from capacity_report import (
    EFFICIENCY_TARGET,
    ERROR_OBJECTIVE_PERCENT,
    TTFT_P95_OBJECTIVE_MS,
    capacity_markdown,
    limiting_factors,
    scale_out,
    step_verdict,
    write_capacity_charts,
)
from load_generators import dam_load_binary, summarize_load_report
from stack_meter import StackMeter, process_cpu_seconds


# How often the queue sampler reads /admin/status.
QUEUE_SAMPLE_INTERVAL_S = 1.0
# Longest wait for a step's chats to end after its window, beyond the window itself.
STEP_OVERRUN_S = 240.0


def bench_capacity() -> None:
    steps = [int(step) for step in os.environ.get(
        "BENCH_CAPACITY_STEPS", "50,100,200,400,600,800,1000,1200,1500,2000").split(",")]
    step_s = float(os.environ.get("BENCH_CAPACITY_STEP_S", "30"))
    warm_up_s = float(os.environ.get("BENCH_CAPACITY_WARM_UP_S", "5"))
    answer = {
        "time_to_first_token_ms": int(os.environ.get("BENCH_CAPACITY_TTFT_MS", "1000")),
        "inter_token_delay_ms": int(os.environ.get("BENCH_CAPACITY_INTER_TOKEN_MS", "25")),
        "tokens_per_answer": int(os.environ.get("BENCH_CAPACITY_TOKENS", "200")),
    }
    topologies = [tuple(int(count) for count in text.split("x"))
                  for text in os.environ.get("BENCH_CAPACITY_TOPOLOGIES", "1x2,2x4").split(",")]
    chat_s = (answer["time_to_first_token_ms"] + answer["tokens_per_answer"] * answer["inter_token_delay_ms"]) / 1000
    if step_s < 2 * chat_s:
        # Only chats that end inside the window are measured: a window shorter than a chat measures none.
        log(f"warning: a chat takes about {chat_s:g} s, so a {step_s:g} s window measures few chats or none; "
            f"raise BENCH_CAPACITY_STEP_S or shorten the answer (BENCH_CAPACITY_TOKENS)")
    binary = dam_load_binary()
    measured = []
    for gateways, workers in topologies:
        measured.append(measure_topology(binary, gateways, workers, steps, warm_up_s, step_s, answer))
    figures = {
        "settings": {"steps": steps, "step_s": step_s, "warm_up_s": warm_up_s, "answer": answer,
                     "objective": {"ttft_p95_ms_below": TTFT_P95_OBJECTIVE_MS,
                                   "errors_percent_below": ERROR_OBJECTIVE_PERCENT},
                     "efficiency_target": EFFICIENCY_TARGET},
        "topologies": measured,
        "scale_out": scale_out(measured),
    }
    write_capacity_charts(figures)
    markdown = capacity_markdown(figures)
    write_results("bench-capacity", figures, markdown)
    for key in ("formula", "cpu_normalised_formula", "bounds_note"):
        if figures["scale_out"].get(key):
            log(figures["scale_out"][key])


def capacity_settings(steps: list[int], workers: int, answer: dict) -> dict[str, str]:
    """The overhead bench's lifted limits (per caller, LLM, queue, streams; worker concurrency sized for the
    largest step, so neither is what a step measures), with the realistic answer instead of its short one. The
    edge's limits are lifted by Stack itself, since no EDGE_* setting is given."""
    settings = overhead_settings(steps, workers)
    settings.update({
        "DAM_MOCK_LLM__TIME_TO_FIRST_TOKEN_MS": str(answer["time_to_first_token_ms"]),
        "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": str(answer["inter_token_delay_ms"]),
        "DAM_MOCK_LLM__TOKENS_PER_ANSWER": str(answer["tokens_per_answer"]),
    })
    return settings


def topology_name(gateways: int, workers: int) -> str:
    return f"{gateways}g+{workers}w"


def measure_topology(binary: Path, gateways: int, workers: int, steps: list[int], warm_up_s: float,
                     step_s: float, answer: dict) -> dict:
    """Steps load up on a fresh stack of this topology until a step breaks the objective (that step is kept and
    is the last)."""
    name = topology_name(gateways, workers)
    settings = capacity_settings(steps, workers, answer)
    stack = start_stack(f"capacity-{gateways}g{workers}w", gateways=gateways, workers=workers, settings=settings)
    sampler = QueueSampler(stack)
    rows = []
    try:
        meter = StackMeter(stack)
        log(f"{name}: processes measured: {', '.join(sorted(meter.pids))}, mock-llm")
        sampler.start()
        for users in steps:
            row = measure_step(stack, meter, sampler, binary, name, users, warm_up_s, step_s)
            rows.append(row)
            if not row["meets_objective"]:
                log(f"{name}: {users} users break the objective ({row['verdict']}); stopping here")
                break
    finally:
        sampler.stop()
        stack.stop()
    held = [row["users"] for row in rows if row["meets_objective"]]
    capacity_row = next((row for row in rows if row["users"] == max(held)), None) if held else None
    broken = rows[-1] if rows and not rows[-1]["meets_objective"] else None
    return {
        "name": name,
        "gateways": gateways,
        "workers": workers,
        "worker_concurrency": int(settings["DAM_WORKER__CONCURRENCY"]),
        "steps": rows,
        "capacity_users": max(held, default=0),
        "capacity_step": capacity_row,
        "breaking_step": broken["users"] if broken else None,
        "queue_depth_samples": sampler.samples,
        "step_marks": sampler.marks,
    }


def measure_step(stack: Stack, meter: StackMeter, sampler: QueueSampler, binary: Path, topology: str, users: int,
                 warm_up_s: float, step_s: float) -> dict:
    """One step: dam-load keeps `users` chats streaming through nginx; CPU, Redis commands and mock-llm's counts
    are read at the edges of the measured window only (not over warm-up and drain, when the load is lower)."""
    wait_until("the stack is idle", 120, lambda: all_work_finished(stack))
    json_path = RESULTS / f"bench-capacity-{topology}-{users}.dam-load.json"
    command = [str(binary), "closed-loop", "--url", stack.base_url, "--streams", str(users),
               "--warm-up-s", str(warm_up_s), "--duration-s", str(step_s), "--label", f"{topology}-{users}",
               "--json", str(json_path)]
    log(f"{topology}: {users} users for {warm_up_s:g} s of warm-up and {step_s:g} s measured")
    sampler.mark(f"{users} users")
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        time.sleep(warm_up_s)
        before = window_reading(stack, meter, process.pid)
        time.sleep(max(step_s - (time.monotonic() - started - warm_up_s), 0.0))
        after = window_reading(stack, meter, process.pid)
        process.wait(timeout=step_s + STEP_OVERRUN_S)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        raise
    if process.returncode != 0:
        raise RuntimeError(f"dam-load exited with {process.returncode}")
    report = summarize_load_report(json.loads(json_path.read_text()))
    return step_row(users, report, before, after, sampler.depths_between(before["at"], after["at"]))


def window_reading(stack: Stack, meter: StackMeter, load_generator_pid: int) -> dict:
    reading = meter.read()
    reading["load_generator_cpu"] = process_cpu_seconds(load_generator_pid)
    reading["mock"] = mock_stats(stack)
    reading["machine"] = machine_cpu_ticks()
    return reading


def machine_cpu_ticks() -> tuple[int, int]:
    """Busy and total ticks of every CPU since boot (/proc/stat), to see load from outside the bench too."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def step_row(users: int, report: dict, before: dict, after: dict, depths: list[int]) -> dict:
    usage = StackMeter.difference(before, after)
    seconds = usage["seconds"]
    first_token = report["histograms"]["first_token"]
    if "p95_ms" not in first_token:
        raise RuntimeError("this dam-load reports no p95: rebuild it (cargo build --release -p dam-load)")
    ended = report["chats_ended"]
    errors_percent = 100.0 * (ended - report["chats_done"]) / ended if ended else 100.0
    # Each process's CPU as a share of one core over the measured window.
    core_share = {name: cpu / seconds for name, cpu in sorted(usage["cpu_s"].items())}
    core_share["mock-llm"] = usage["mock_cpu_s"] / seconds
    core_share["dam-load"] = (after["load_generator_cpu"] - before["load_generator_cpu"]) / seconds
    dam_core_share = sum(share for name, share in core_share.items() if name not in ("mock-llm", "dam-load"))
    busy = after["machine"][0] - before["machine"][0]
    total = after["machine"][1] - before["machine"][1]
    cpus = os.cpu_count() or 1
    upstream_requests = after["mock"]["requests"] - before["mock"]["requests"]
    row = {
        "users": users,
        "chats_per_s": report["chats_per_s"],
        "chats_done": report["chats_done"],
        "chats_ended": ended,
        "errors_percent": errors_percent,
        "outcomes": report["outcomes"],
        "outcome_examples": report["outcome_examples"],
        "ttft_ms": {"p50": first_token["p50_ms"], "p95": first_token["p95_ms"], "p99": first_token["p99_ms"]},
        "tokens_per_chat": report["tokens_per_chat"],
        "window_s": seconds,
        "core_share": core_share,
        "dam_core_share": dam_core_share,
        "measured_cores_used": sum(core_share.values()),
        "machine_cores_used": cpus * busy / total if total else 0.0,
        "redis_commands_per_s": sum(usage["redis_commands"].values()) / seconds,
        "upstream_requests_per_s": upstream_requests / seconds,
        "queue_depth": {"mean": sum(depths) / len(depths) if depths else 0.0, "max": max(depths, default=0)},
    }
    # Chats per CPU-second the dam's own processes used: the cost of a chat, whatever the topology.
    row["chats_per_dam_cpu_s"] = row["chats_per_s"] / dam_core_share if dam_core_share else 0.0
    row["meets_objective"] = (ended > 0 and first_token["p95_ms"] < TTFT_P95_OBJECTIVE_MS
                              and errors_percent < ERROR_OBJECTIVE_PERCENT)
    row["verdict"] = step_verdict(row)
    row["limited_by"] = limiting_factors(row, cpus)
    log(f"{users} users: {row['chats_per_s']:.1f} chats/s, ttft p50/p95/p99 {row['ttft_ms']['p50']:.0f}/"
        f"{row['ttft_ms']['p95']:.0f}/{row['ttft_ms']['p99']:.0f} ms, errors {errors_percent:.2f}%, "
        f"{row['measured_cores_used']:.2f} of {cpus} cores (machine {row['machine_cores_used']:.2f}), "
        f"Redis {row['redis_commands_per_s']:.0f} commands/s, queue max {row['queue_depth']['max']}; "
        f"{row['verdict']}; limited by: {', '.join(row['limited_by']) or 'nothing saturated'}")
    return row


class QueueSampler:
    """Reads the lanes' total depth from the dam's /admin/status every second in a thread, for the whole
    topology's run; `mark` notes where each step begins."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.samples: list[dict] = []
        self.marks: list[dict] = []
        self.started_at = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.sample_until_stopped, daemon=True)

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=15)

    def mark(self, label: str) -> None:
        self.marks.append({"t_s": time.monotonic() - self.started_at, "label": label})

    def sample_until_stopped(self) -> None:
        while not self.stopping.is_set():
            at = time.monotonic()
            try:
                depth = queue_depth(self.stack)
            except (OSError, ValueError) as error:
                log(f"queue sample failed: {error}")
            else:
                step = self.marks[-1]["label"] if self.marks else ""
                self.samples.append({"t_s": at - self.started_at, "at": at, "depth": depth, "step": step})
            self.stopping.wait(QUEUE_SAMPLE_INTERVAL_S)

    def depths_between(self, start: float, end: float) -> list[int]:
        return [sample["depth"] for sample in list(self.samples) if start <= sample["at"] <= end]
