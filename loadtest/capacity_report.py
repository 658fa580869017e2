"""The objective bench-capacity holds each step to, and what its figures mean: a step's verdict and what limited
it, the scale-out efficiency between two topologies, and the charts and Markdown of loadtest/results."""

from __future__ import annotations

import os
import time

import plots
from bench_stack import RESULTS

# The objective for one step, and its target for scale-out.
TTFT_P95_OBJECTIVE_MS = 3000.0
ERROR_OBJECTIVE_PERCENT = 0.1
EFFICIENCY_TARGET = 0.95
# A process at or above this share of one core is taken to be what limited a step (gateways and workers run one
# runtime thread each under run-local.sh, so one core is all they can use).
SATURATED_CORE_SHARE = 0.9
# The machine counts as saturated when everything measured uses this share of all its cores.
SATURATED_MACHINE_SHARE = 0.9


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


def topology_section(topology: dict) -> str:
    """One topology's capacity, how it ended, and its table of steps."""
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
    return f"""### {topology['name']} ({topology['gateways']} gateway(s), {topology['workers']} \
workers, worker concurrency {topology['worker_concurrency']})

Capacity: **{topology['capacity_users']:,} users**; it {ending}.

| users | chats/s | TTFT p50 / p95 / p99 (ms) | errors | objective | CPU per process (share of one core) | cores used: ours (machine) | Redis commands/s | queue mean / max | chats per dam CPU-second | limited by |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}
"""


def scale_out_text(result: dict, cpus: int | None) -> str:
    """The two efficiencies and what they mean, or why there is none."""
    if result.get("efficiency") is not None:
        raw = result["efficiency"]
        cpu = result.get("cpu_normalised_efficiency")
        cpu_text = (f"**{cpu:.2f}** ({'met' if cpu >= EFFICIENCY_TARGET else '**not met**'})" if cpu is not None
                    else "cannot tell (a topology has no capacity step)")
        return f"""Measured formula: `{result['formula']}`.{' **' + result['bounds_note'] + '**' if result.get('bounds_note') else ''}

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
    return result.get("note", "Only one topology was measured: no scale-out figure.")


def capacity_markdown(figures: dict) -> str:
    settings, topologies, result = figures["settings"], figures["topologies"], figures["scale_out"]
    answer = settings["answer"]
    cpus = os.cpu_count()
    sections = [topology_section(topology) for topology in topologies]
    scale_text = scale_out_text(result, cpus)
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
