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

import plots
from bench import (
    RESULTS,
    Stack,
    StackMeter,
    all_work_finished,
    dam_load_binary,
    log,
    mock_stats,
    overhead_settings,
    process_cpu_seconds,
    queue_depth,
    start_stack,
    summarize_load_report,
    wait_until,
    write_results,
)

# The objective for one step, and its target for scale-out.
TTFT_P95_OBJECTIVE_MS = 3000.0
ERROR_OBJECTIVE_PERCENT = 0.1
EFFICIENCY_TARGET = 0.95
# A process at or above this share of one core is taken to be what limited a step (gateways and workers run one
# runtime thread each under run-local.sh, so one core is all they can use).
SATURATED_CORE_SHARE = 0.9
# The machine counts as saturated when everything measured uses this share of all its cores.
SATURATED_MACHINE_SHARE = 0.9
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


def step_verdict(row: dict) -> str:
    if row["meets_objective"]:
        return "meets the objective"
    reasons = []
    if row["chats_ended"] == 0:
        reasons.append("no chat ended in the window")
    if row["ttft_ms"]["p95"] >= TTFT_P95_OBJECTIVE_MS:
        reasons.append(f"TTFT p95 {row['ttft_ms']['p95']:.0f} ms ≥ {TTFT_P95_OBJECTIVE_MS:.0f} ms")
    if row["errors_percent"] >= ERROR_OBJECTIVE_PERCENT:
        reasons.append(f"errors {row['errors_percent']:.2f}% ≥ {ERROR_OBJECTIVE_PERCENT}%")
    return "; ".join(reasons)


def limiting_factors(row: dict, cpus: int) -> list[str]:
    """What stood at its limit in this step, from the CPU shares: a single-threaded process at a whole core, Redis
    (single-threaded too), the machine's cores all busy, or work waiting in the queue while nothing is at its
    limit (then the LLM side: mock-llm or a limit left in place)."""
    factors = []
    if row["machine_cores_used"] >= SATURATED_MACHINE_SHARE * cpus:
        factors.append(f"the machine's {cpus} cores ({row['machine_cores_used']:.2f} busy, "
                       f"{row['measured_cores_used']:.2f} of them this bench's processes)")
    for name, share in sorted(row["core_share"].items(), key=lambda item: -item[1]):
        if share >= SATURATED_CORE_SHARE:
            # nginx is its master and workers together, so its share may pass one core without any one of them
            # being at its limit.
            what = {"redis": "Redis CPU", "nginx": "nginx CPU (all its processes)"}.get(name, f"{name} CPU")
            factors.append(f"{what} ({100 * share:.0f}% of a core)")
    if not factors and row["queue_depth"]["mean"] >= 1:
        factors.append(f"chats waited in the queue (mean {row['queue_depth']['mean']:.0f}) with no process "
                       "saturated: the LLM side (mock-llm or an LLM limit) or the workers' claims")
    return factors


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


def scale_out(topologies: list[dict]) -> dict:
    """Efficiency of the bigger topology against N copies of the first: raw (users held), and per CPU-second the
    dam's processes used at each one's capacity step."""
    if len(topologies) < 2:
        return {}
    base, bigger = topologies[0], topologies[-1]
    copies = bigger["gateways"] / base["gateways"]
    result: dict = {"base": base["name"], "bigger": bigger["name"], "copies": copies,
                    "base_capacity_users": base["capacity_users"], "bigger_capacity_users": bigger["capacity_users"]}
    if base["capacity_users"] == 0:
        result["efficiency"] = None
        result["note"] = f"{base['name']} met the objective at no step: no base to scale from"
        return result
    efficiency = bigger["capacity_users"] / (copies * base["capacity_users"])
    result["efficiency"] = efficiency
    # A topology that met the objective at every step has a capacity of at least its last step, not exactly it.
    unbroken = [topology["name"] for topology in (base, bigger) if topology["breaking_step"] is None]
    if unbroken:
        result["bounds_note"] = (f"{' and '.join(unbroken)} met the objective at every step run, so its capacity is "
                                 "only a lower bound and the efficiency is not a measurement: add higher steps "
                                 "(BENCH_CAPACITY_STEPS).")
    result["efficiency_met"] = efficiency >= EFFICIENCY_TARGET
    result["formula"] = (f"capacity = base × N × efficiency = {base['capacity_users']} × N × {efficiency:.2f} "
                         f"(base: {base['name']}, N copies of it; measured N = {copies:g}: "
                         f"{base['capacity_users']} × {copies:g} × {efficiency:.2f} = "
                         f"{base['capacity_users'] * copies * efficiency:.0f} users)")
    # CPU per chat falls as load rises (fuller batches), so the two topologies are compared at the same load: the
    # largest step both met the objective at.
    shared_users = min(base["capacity_users"], bigger["capacity_users"])
    base_step = next((row for row in base["steps"] if row["users"] == shared_users), None)
    bigger_step = next((row for row in bigger["steps"] if row["users"] == shared_users), None)
    result["cpu_normalised_at_users"] = shared_users
    if base_step and bigger_step and base_step["chats_per_dam_cpu_s"]:
        cpu_efficiency = bigger_step["chats_per_dam_cpu_s"] / base_step["chats_per_dam_cpu_s"]
        result["cpu_normalised_efficiency"] = cpu_efficiency
        result["cpu_normalised_met"] = cpu_efficiency >= EFFICIENCY_TARGET
        result["cpu_normalised_formula"] = (
            f"capacity ≈ {base['capacity_users']} × N × {cpu_efficiency:.2f} when every copy has CPU of its own")
    return result


def write_capacity_charts(figures: dict) -> None:
    topologies = figures["topologies"]
    machine = f"{os.cpu_count()} CPUs shared by every topology's processes and the load generator"
    answer = figures["settings"]["answer"]
    charts = {
        "bench-capacity-ttft.svg": {
            "title": "Time to first token, p95, against concurrent users",
            "x_label": "concurrent users (streams)", "y_label": "TTFT p95 (ms)",
            "series": [{"name": topology["name"], "points": [[row["users"], row["ttft_ms"]["p95"]]
                                                             for row in topology["steps"]]}
                       for topology in topologies],
            "horizontal_lines": [{"name": "objective: p95 < 3 s", "y": TTFT_P95_OBJECTIVE_MS}],
            "note": f"{machine}; answers: first token after {answer['time_to_first_token_ms']} ms, "
                    f"{answer['tokens_per_answer']} tokens {answer['inter_token_delay_ms']} ms apart",
        },
        "bench-capacity-throughput.svg": {
            "title": "Throughput against concurrent users",
            "x_label": "concurrent users (streams)", "y_label": "chats per second",
            "series": [{"name": topology["name"], "points": [[row["users"], row["chats_per_s"]]
                                                             for row in topology["steps"]]}
                       for topology in topologies],
            "note": machine,
        },
        "bench-capacity-queue.svg": {
            "title": "Queue depth over time (all lanes), each topology from its first step",
            "x_label": "seconds since the topology's first step", "y_label": "chats waiting",
            "series": [{"name": topology["name"], "points": [[round(sample["t_s"], 1), sample["depth"]]
                                                             for sample in topology["queue_depth_samples"]]}
                       for topology in topologies],
            "note": "steps: " + "; ".join(
                f"{topology['name']} " + ", ".join(f"{mark['label']} at {mark['t_s']:.0f} s"
                                                   for mark in topology.get("step_marks", []))
                for topology in topologies),
        },
    }
    for file_name, spec in charts.items():
        plots.write_chart(spec, RESULTS / file_name)
    figures["charts"] = sorted(charts)


def capacity_markdown(figures: dict) -> str:
    settings, topologies, result = figures["settings"], figures["topologies"], figures["scale_out"]
    answer = settings["answer"]
    cpus = os.cpu_count()
    sections = []
    for topology in topologies:
        lines = []
        for row in topology["steps"]:
            processes = ", ".join(f"{name} {100 * share:.0f}%" for name, share in row["core_share"].items())
            lines.append(
                f"| {row['users']:,} | {row['chats_per_s']:.1f} | {row['ttft_ms']['p50']:.0f} / "
                f"{row['ttft_ms']['p95']:.0f} / {row['ttft_ms']['p99']:.0f} | {row['errors_percent']:.2f}% | "
                f"{'met' if row['meets_objective'] else '**broken**'} | {processes} | "
                f"{row['measured_cores_used']:.2f} ({row['machine_cores_used']:.2f}) | "
                f"{row['redis_commands_per_s']:,.0f} | {row['queue_depth']['mean']:.0f} / {row['queue_depth']['max']} | "
                f"{row['chats_per_dam_cpu_s']:.1f} | {'; '.join(row['limited_by']) or '-'} |")
        broken = topology["breaking_step"]
        limits = "; ".join(topology["steps"][-1]["limited_by"]) or "no process saturated"
        ending = (f"broke the objective at **{broken:,} users** ({topology['steps'][-1]['verdict']}; limited by: "
                  f"{limits})" if broken is not None
                  else "met the objective at every step run (the steps did not reach its limit)")
        sections.append(f"""### {topology['name']} ({topology['gateways']} gateway(s), {topology['workers']} \
workers, worker concurrency {topology['worker_concurrency']})

Capacity: **{topology['capacity_users']:,} users**; it {ending}.

| users | chats/s | TTFT p50 / p95 / p99 (ms) | errors | objective | CPU per process (share of one core) | cores used: ours (machine) | Redis commands/s | queue mean / max | chats per dam CPU-second | limited by |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}
""")

    if result.get("efficiency") is not None:
        raw = result["efficiency"]
        cpu = result.get("cpu_normalised_efficiency")
        cpu_text = (f"**{cpu:.2f}** ({'met' if cpu >= EFFICIENCY_TARGET else '**not met**'})" if cpu is not None
                    else "cannot tell (a topology has no capacity step)")
        scale_text = f"""Measured formula: `{result['formula']}`.{' **' + result['bounds_note'] + '**' if result.get('bounds_note') else ''}

| figure | value | target ≥ {EFFICIENCY_TARGET} |
|---|---|---|
| raw efficiency = capacity({result['bigger']}) / ({result['copies']:g} × capacity({result['base']})) = \
{result['bigger_capacity_users']:,} / ({result['copies']:g} × {result['base_capacity_users']:,}) | **{raw:.2f}** | \
{'met' if result['efficiency_met'] else '**not met**'} |
| CPU-normalised efficiency = chats per dam CPU-second of {result['bigger']} / the same of {result['base']}, \
both at {result.get('cpu_normalised_at_users', 0):,} users (the largest step both met) | {cpu_text} | |

What each figure means. Both topologies ran on the same {cpus} cores, which the load generator and mock-llm share \
with them, so {result['bigger']} is not twice the hardware: its extra gateways and workers compete with each other \
for the same CPU. The **raw** efficiency is what this machine gives and says little about scale-out: with the CPU \
the limit, perfect scaling would still show about 1 / {result['copies']:g}. The **CPU-normalised** efficiency asks \
whether a chat costs the bigger topology more CPU (load-balancer imbalance, Redis contention, per-instance overhead \
show up there): at 1.0 a copy given its own cores would hold as many users as the base, so \
`{result.get('cpu_normalised_formula', 'capacity = base × N × (CPU-normalised efficiency)')}`. It assumes CPU is \
what limits (see "limited by"); a step limited by Redis or the LLM side would not scale that way."""
    else:
        scale_text = result.get("note", "Only one topology was measured: no scale-out figure.")

    return f"""# bench-capacity ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

Objective per step: TTFT p95 under {TTFT_P95_OBJECTIVE_MS / 1000:g} s and under {ERROR_OBJECTIVE_PERCENT}% errors. \
mock-llm answers {answer['tokens_per_answer']} tokens, the first after {answer['time_to_first_token_ms']} ms, then \
{answer['inter_token_delay_ms']} ms apart ({1000 / max(answer['inter_token_delay_ms'], 1):.0f} tokens/s). At each \
step `dam-load closed-loop` keeps N users streaming through nginx (OpenAI flow; a user starts a new chat as soon as \
the last ends) for {settings['warm_up_s']:g} s unmeasured, then {settings['step_s']:g} s measured; steps go up until \
one breaks the objective. Per-caller, LLM, queue and edge limits are lifted and worker concurrency is sized for the \
largest step, so none of them is what a step measures. A topology's capacity is the largest step that met the \
objective (so it is known only to the spacing of the steps). Machine: {cpus} CPUs, everything (load generator, \
mock-llm, Redis, nginx, gateways, workers) on it, shared with whatever else ran; "machine" cores used counts every \
process on it (/proc/stat).

CPU per process, Redis commands/s and queue depth are read over the measured window only. "Limited by" names a \
process at ≥ {100 * SATURATED_CORE_SHARE:.0f}% of a core (gateways and workers run one runtime thread each, so one \
core is their ceiling; Redis is single-threaded), the machine's cores ≥ {100 * SATURATED_MACHINE_SHARE:.0f}% busy, \
or chats waiting with nothing saturated (the LLM side).

## Scale-out

{scale_text}

## Steps

{chr(10).join(sections)}
## Charts

![TTFT p95 against users](bench-capacity-ttft.svg)

![Throughput against users](bench-capacity-throughput.svg)

![Queue depth over time](bench-capacity-queue.svg)
"""
