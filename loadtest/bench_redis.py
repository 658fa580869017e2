"""bench-redis (`bench.py redis`): chats per second with the LLM taking no time at all, and what each chat costs
Redis (commands, by command, and Redis's own CPU), next to a BullMQ-like queue's 33 commands per job. At each
concurrency level dam-load keeps N chats going through nginx (closed loop); what limited the level is read from
/proc: the busiest process's share of a core, and how busy the whole machine was.

Knobs (environment): BENCH_REDIS_LEVELS (10,50,200), BENCH_REDIS_DURATION_S (15), BENCH_REDIS_WARM_UP_S (2),
BENCH_REDIS_TOKENS (5 tokens per answer), BENCH_REDIS_MONITOR_S (2: a separate run watched with MONITOR to tell
batches from other PUBLISH calls; 0 skips it), BENCH_REDIS_GATEWAYS (2), BENCH_REDIS_WORKERS (2); SKIP_BUILD=1 and
CARGO_TARGET_DIR as for the other benches.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import plots
from bench_overhead import overhead_settings
from bench_report import process_sort_key, write_results
from bench_stack import RESULTS, Stack, all_work_finished, log, start_stack, wait_until
from load_generators import dam_load_binary, run_dam_load, summarize_load_report
from stack_meter import StackMeter, costs_per_chat, measure_script_calls, process_cpu_seconds

# The baseline: a BullMQ-like job queue's Redis commands per job (adding the job, a worker taking it,
# marking it done, counted as INFO commandstats counts them: commands inside Lua scripts included).
BULLMQ_LIKE_COMMANDS_PER_JOB = 33
# One token batch costs Redis the stream-write script call, its RPUSH to the replay log and its PUBLISH.
COMMANDS_PER_BATCH = 3
# A process using this share of one core or more is taken as saturated; the machine, at this share of all cores.
SATURATED_SHARE = 0.9


def bench_redis() -> None:
    levels = [int(level) for level in os.environ.get("BENCH_REDIS_LEVELS", "10,50,200").split(",")]
    duration_s = float(os.environ.get("BENCH_REDIS_DURATION_S", "15"))
    warm_up_s = float(os.environ.get("BENCH_REDIS_WARM_UP_S", "2"))
    tokens = int(os.environ.get("BENCH_REDIS_TOKENS", "5"))
    monitor_s = float(os.environ.get("BENCH_REDIS_MONITOR_S", "2"))
    gateways = int(os.environ.get("BENCH_REDIS_GATEWAYS", "2"))
    workers = int(os.environ.get("BENCH_REDIS_WORKERS", "2"))
    binary = dam_load_binary()
    settings = {
        # Every limit lifted as for bench-overhead, then an upstream that takes no time: what is left is the dam.
        **overhead_settings(levels, workers),
        "DAM_MOCK_LLM__TIME_TO_FIRST_TOKEN_MS": "0",
        "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "0",
        "DAM_MOCK_LLM__TOKENS_PER_ANSWER": str(tokens),
    }
    stack = start_stack("redis", gateways=gateways, workers=workers, settings=settings)
    rows = []
    try:
        meter = StackMeter(stack)
        for concurrency in levels:
            rows.append(measure_redis_level(stack, meter, binary, concurrency, warm_up_s, duration_s, monitor_s))
    finally:
        stack.stop()
    figures = {
        "settings": {"levels": levels, "duration_s": duration_s, "warm_up_s": warm_up_s, "tokens_per_answer": tokens,
                     "monitor_s": monitor_s, "gateways": gateways, "workers": workers, "stack_settings": settings},
        "baseline_commands_per_job": BULLMQ_LIKE_COMMANDS_PER_JOB,
        "levels": rows,
    }
    plot_paths = write_redis_plots(figures)
    markdown = redis_markdown(figures) + "\n" + "\n".join(f"![{path.stem}]({path.name})" for path in plot_paths)
    write_results("bench-redis", figures, markdown)


class ProcessSampler:
    """CPU seconds of every stack process (mock-llm included) and the machine's busy and total time, read at the
    start and the end of dam-load's measured window, so the shares describe that window only."""

    def __init__(self, stack: Stack):
        self.pids = dict(stack.known_pids)
        self.readings: list[dict] = []

    def read(self) -> None:
        cpu = {}
        for name, pid in self.pids.items():
            try:
                cpu[name] = process_cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        self.readings.append({"at": time.monotonic(), "cpu": cpu, "machine": machine_cpu_times()})

    def read_at(self, delays_s: list[float]) -> list[threading.Timer]:
        timers = [threading.Timer(delay, self.read) for delay in delays_s]
        for timer in timers:
            timer.start()
        return timers

    def shares(self) -> dict:
        """Each process's CPU as a share of one core over the window, and the machine's busy share of all cores."""
        if len(self.readings) < 2:
            return {"window_s": 0.0, "process_core_share": {}, "machine_busy_share": None}
        first, last = self.readings[0], self.readings[-1]
        seconds = max(last["at"] - first["at"], 1e-9)
        processes = {name: (last["cpu"][name] - first["cpu"].get(name, last["cpu"][name])) / seconds
                     for name in last["cpu"]}
        busy = last["machine"][0] - first["machine"][0]
        total = last["machine"][1] - first["machine"][1]
        return {
            "window_s": seconds,
            "process_core_share": dict(sorted(processes.items(), key=lambda item: -item[1])),
            "machine_busy_share": busy / total if total else None,
        }


def machine_cpu_times() -> tuple[float, float]:
    """Busy and total jiffies of all CPUs since boot, from the first line of /proc/stat (every user's work)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest and guest_nice are already inside user and nice.
    total = sum(fields[:8])
    return float(total - idle), float(total)


def limiting_factor(shares: dict, load_generator_share: float) -> str:
    processes = dict(shares["process_core_share"], **{"dam-load": load_generator_share})
    busiest, share = max(processes.items(), key=lambda item: item[1])
    machine = shares["machine_busy_share"]
    # The stack's and the load generator's part of all CPUs: the rest of a busy machine is someone else's work.
    ours = sum(processes.values()) / (os.cpu_count() or 1)
    if machine is not None and machine >= SATURATED_SHARE:
        return (f"the machine's CPUs ({100 * machine:.0f}% busy, {100 * ours:.0f}% ours; busiest: {busiest} at "
                f"{100 * share:.0f}% of a core)")
    if share >= SATURATED_SHARE:
        return f"{busiest} ({100 * share:.0f}% of a core)"
    return f"nothing saturated: the concurrency (busiest: {busiest} at {100 * share:.0f}% of a core)"


def measure_redis_level(stack: Stack, meter: StackMeter, binary: Path, concurrency: int, warm_up_s: float,
                        duration_s: float, monitor_s: float) -> dict:
    wait_until("the stack is idle", 120, lambda: all_work_finished(stack))
    log(f"{concurrency} concurrent chats through nginx, {warm_up_s:g} s warm-up, {duration_s:g} s measured")
    sampler = ProcessSampler(stack)
    before = meter.read()
    timers = sampler.read_at([warm_up_s, warm_up_s + duration_s])
    load_started = time.monotonic()
    try:
        report, load_generator_cpu_s = run_dam_load(
            binary, ["closed-loop", "--url", stack.base_url, "--streams", str(concurrency),
                     "--warm-up-s", str(warm_up_s), "--duration-s", str(duration_s), "--label", f"redis-{concurrency}"],
            RESULTS / f"bench-redis-{concurrency}.dam-load.json", warm_up_s + duration_s + 180)
    finally:
        for timer in timers:
            timer.cancel()
    load_s = time.monotonic() - load_started
    # Workers finish their writes a moment after the client saw `done`; count those commands too.
    wait_until("the stack is idle", 120, lambda: all_work_finished(stack))
    usage = StackMeter.difference(before, meter.read())
    lifetime = report["lifetime"]
    run = summarize_load_report(report)
    costs = costs_per_chat(usage, lifetime["done"] + lifetime["failed"], load_generator_cpu_s)
    shares = sampler.shares()
    # dam-load's CPU is only known for its whole run: its average share of a core over that run.
    load_generator_share = load_generator_cpu_s / max(load_s, 1e-9)
    publishes = costs["redis_commands_per_chat_by_command"].get("publish", 0.0)
    script_calls = None
    publishes_per_batch = 1.0
    if monitor_s > 0:
        wait_until("the stack is idle", 120, lambda: all_work_finished(stack))
        log(f"{concurrency} concurrent: counting script calls with MONITOR over a separate {monitor_s:g} s run")
        script_calls = measure_script_calls(stack, binary, concurrency, monitor_s)
        # Unknown when the scripts could not be told apart: then every PUBLISH is taken as one batch.
        publishes_per_batch = script_calls["publishes_per_batch"] or 1.0
    batches = publishes / publishes_per_batch
    row = {
        "concurrency": concurrency,
        "chats_per_s": run["chats_per_s"],
        "chats_done": run["chats_done"],
        "chats_failed": run["chats_ended"] - run["chats_done"],
        "outcomes": run["outcomes"],
        "first_token_ms": run["histograms"]["first_token"],
        "redis_commands_per_chat": costs["redis_commands_per_chat"],
        "redis_commands_per_chat_by_command": costs["redis_commands_per_chat_by_command"],
        "batches_per_chat": batches,
        "publishes_per_batch": publishes_per_batch,
        "script_calls": script_calls,
        "commands_per_chat_without_batches": costs["redis_commands_per_chat"] - COMMANDS_PER_BATCH * batches,
        "redis_cpu_ms_per_chat": costs["cpu_ms_per_chat"].get("redis", 0.0),
        "cpu_ms_per_chat": costs["cpu_ms_per_chat"],
        "dam_cpu_ms_per_chat": costs["dam_cpu_ms_per_chat"],
        "mock_llm_cpu_ms_per_chat": costs["mock_llm_cpu_ms_per_chat"],
        "load_generator_cpu_ms_per_chat": costs["load_generator_cpu_ms_per_chat"],
        "chats_counted": costs["chats"],
        "window": shares,
        "load_generator_core_share": load_generator_share,
        "limited_by": limiting_factor(shares, load_generator_share),
    }
    log(f"{concurrency} concurrent: {row['chats_per_s']:.1f} chats/s, {row['redis_commands_per_chat']:.1f} Redis "
        f"commands per chat ({batches:.1f} batches), Redis CPU {row['redis_cpu_ms_per_chat']:.3f} ms per chat; "
        f"limited by {row['limited_by']}")
    return row


def write_redis_plots(figures: dict) -> list[Path]:
    rows = figures["levels"]
    settings = figures["settings"]
    note = (f"{os.cpu_count()} CPUs, Linux {os.uname().release}; {settings['gateways']} gateways, "
            f"{settings['workers']} workers; mock-llm at zero latency, {settings['tokens_per_answer']} tokens; "
            f"{settings['duration_s']:g} s per level; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    levels = [row["concurrency"] for row in rows]
    x_log = max(levels) / min(levels) >= 10
    throughput = {
        "title": "Chats per second with an LLM that takes no time",
        "x_label": "concurrent chats (closed loop, through nginx)",
        "y_label": "chats per second",
        "x_log": x_log,
        "series": [{"name": "chats/s through the dam", "points": [[row["concurrency"], row["chats_per_s"]]
                                                                  for row in rows]}],
        "note": note,
    }
    commands = {
        "title": "Redis commands per chat",
        "x_label": "concurrent chats (closed loop, through nginx)",
        "y_label": "Redis commands per chat",
        "x_log": x_log,
        "series": [
            {"name": "Traffic Dam, every token batch included",
             "points": [[row["concurrency"], row["redis_commands_per_chat"]] for row in rows]},
            {"name": f"Traffic Dam without the batches ({COMMANDS_PER_BATCH} commands each)",
             "points": [[row["concurrency"], row["commands_per_chat_without_batches"]] for row in rows]},
        ],
        "horizontal_lines": [{"name": f"BullMQ-like baseline: {BULLMQ_LIKE_COMMANDS_PER_JOB} per job",
                              "y": BULLMQ_LIKE_COMMANDS_PER_JOB}],
        "note": note,
    }
    paths = [RESULTS / "bench-redis-throughput.svg", RESULTS / "bench-redis-commands.svg"]
    for spec, path in zip((throughput, commands), paths):
        plots.write_chart(spec, path)
    return paths


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def redis_markdown(figures: dict) -> str:
    settings, rows = figures["settings"], figures["levels"]
    table = "\n".join(
        f"| {row['concurrency']:,} | {row['chats_per_s']:.1f} | {row['chats_failed']} | "
        f"{row['redis_commands_per_chat']:.1f} | {row['batches_per_chat']:.2f} | "
        f"{row['commands_per_chat_without_batches']:.1f} | {BULLMQ_LIKE_COMMANDS_PER_JOB} | "
        f"{row['redis_commands_per_chat'] / BULLMQ_LIKE_COMMANDS_PER_JOB:.1f}× | {row['redis_cpu_ms_per_chat']:.3f} | "
        f"{percent(row['window']['process_core_share'].get('redis'))} | {row['limited_by']} |"
        for row in rows)
    by_command = "\n".join(
        f"| {row['concurrency']:,} | " + ", ".join(
            f"{name} {value:.2f}" for name, value in row["redis_commands_per_chat_by_command"].items()) + " |"
        for row in rows)
    processes = sorted({name for row in rows for name in row["cpu_ms_per_chat"]}, key=process_sort_key)
    cpu_rows = "\n".join(
        f"| {row['concurrency']:,} | "
        + " | ".join(f"{row['cpu_ms_per_chat'].get(name, 0.0):.3f}" for name in processes)
        + f" | **{row['dam_cpu_ms_per_chat']:.3f}** | {row['mock_llm_cpu_ms_per_chat']:.3f} | "
        f"{row['load_generator_cpu_ms_per_chat']:.3f} |"
        for row in rows)
    share_rows = "\n".join(
        f"| {row['concurrency']:,} | {percent(row['window']['machine_busy_share'])} | " + ", ".join(
            f"{name} {percent(share)}" for name, share in list(row["window"]["process_core_share"].items())[:6])
        + f", dam-load {percent(row['load_generator_core_share'])} (whole run) |"
        for row in rows)
    return f"""# bench-redis ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

The `make run` topology ({settings['gateways']} gateways, {settings['workers']} workers, Redis, nginx) on \
{os.cpu_count()} CPUs shared with the load generator. mock-llm answers at once: no wait for the first token, \
{settings['tokens_per_answer']} tokens with no delay between them; every limit lifted, every prompt unique. At each \
level `dam-load` keeps N chats going through nginx (OpenAI flow, closed loop: a stream starts its next chat when \
its last one ends) for {settings['warm_up_s']:g} s unmeasured, then {settings['duration_s']:g} s measured.

**The baseline.** {BULLMQ_LIKE_COMMANDS_PER_JOB} Redis commands per job is a BullMQ-like queue's cost: adding a \
job, a worker taking it and marking it done, with the queue's own bookkeeping, counted as `INFO commandstats` \
counts (commands inside Lua scripts included). Such a job's result is written once at the end. A chat here does \
more: every batch of tokens goes through Redis as it arrives (a stream-write script call with an RPUSH to the \
chat's replay log and a PUBLISH to its live readers, {COMMANDS_PER_BATCH} commands), so commands per chat grow \
with the batches; the worker batches what arrives while its last write is in flight, so batches per chat fall as \
load rises. The admission checks, per-caller limits, the upstream permit and the chat's start and end are in the \
fixed part. "Without the batches" is commands per chat minus {COMMANDS_PER_BATCH} per batch, the figure to hold \
against the baseline.

| concurrent chats | chats/s | failed | Redis commands per chat | batches per chat | without the batches | BullMQ-like | ratio | Redis CPU per chat (ms) | Redis busy (of a core) | limited by |
|---|---|---|---|---|---|---|---|---|---|---|
{table}

Commands: `INFO commandstats` before and after each level's run (warm-up and drain included), our own INFO \
excluded, divided by every chat of the run. Batches: the run's PUBLISH calls per chat divided by PUBLISH calls \
per stream-write script call, counted in a separate {settings['monitor_s']:g} s run watched with `redis-cli MONITOR` \
(as bench-overhead counts them; with no MONITOR run, every PUBLISH is taken as a batch). Redis CPU: its utime + \
stime from `/proc`, the same way. Limited by: a process at {100 * SATURATED_SHARE:.0f}% of a core or more (Redis, each nginx \
worker and each gateway or worker runtime thread cannot use more), or the machine at {100 * SATURATED_SHARE:.0f}% \
of all its CPUs (other users of the machine included), over the measured window.

## Redis commands per chat, by command

| concurrent chats | calls per chat |
|---|---|
{by_command}

## CPU per chat (ms)

| concurrent chats | {' | '.join(processes)} | dam total | mock-llm | dam-load |
|---|{'---|' * len(processes)}---|---|---|
{cpu_rows}

## Who was busy (measured window, share of one core)

| concurrent chats | machine busy (all CPUs) | busiest processes |
|---|---|---|
{share_rows}
"""
