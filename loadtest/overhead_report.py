"""bench-overhead's targets and report: each target judged against the measured levels, the Markdown tables
(throughput and first token, CPU per chat, Redis commands per chat) and the two charts against concurrency."""

from __future__ import annotations

import os
import time
from pathlib import Path

import plots
from bench_report import met, process_sort_key
from bench_stack import RESULTS
from stack_meter import ADMIT_SCRIPT, STREAM_WRITE_SCRIPTS


# The targets, by concurrency level.
ADDED_FIRST_TOKEN_TARGETS_MS = [(50, "p50", 1.0), (50, "p99", 5.0), (200, "p99", 20.0)]
THROUGHPUT_RATIO_TARGETS = [(200, 0.95), (1000, 0.9)]
DAM_CPU_TARGET_MS_PER_CHAT = 1.0
REDIS_COMMANDS_PER_CHAT = 30
REDIS_COMMANDS_PER_BATCH = 2


def streams_text(streams: int) -> str:
    return f"{streams:,} stream{'' if streams == 1 else 's'}"


def verdict_text(target: dict) -> str:
    if target["met"] is not None:
        return met(target["met"])
    return "not run" if target["figure"] is None else "cannot tell"


def evaluate_overhead_targets(rows: list[dict]) -> list[dict]:
    """Each target with its figure and whether it is met; a level not run is `not run`."""
    by_level = {row["streams"]: row for row in rows}
    targets = []
    for level, stat, limit in ADDED_FIRST_TOKEN_TARGETS_MS:
        row = by_level.get(level)
        figure = row["added_first_token_ms"][stat] if row else None
        targets.append({"target": f"first token added at {level} streams, {stat} ≤ {limit:g} ms",
                        "figure": None if figure is None else f"{figure:+.2f} ms",
                        "met": None if figure is None else figure <= limit})
    for level, ratio in THROUGHPUT_RATIO_TARGETS:
        row = by_level.get(level)
        figure = row["throughput_ratio"] if row else None
        targets.append({"target": f"throughput at {level} streams ≥ {ratio:g}× direct",
                        "figure": None if figure is None else f"{figure:.3f}×",
                        "met": None if figure is None else figure >= ratio})
    for row in rows:
        cpu = row["dam"]["costs"]["dam_cpu_ms_per_chat"]
        targets.append({"target": f"all dam processes ≤ {DAM_CPU_TARGET_MS_PER_CHAT:g} ms CPU per chat at "
                                  f"{streams_text(row['streams'])}",
                        "figure": f"{cpu:.2f} ms", "met": cpu <= DAM_CPU_TARGET_MS_PER_CHAT})
    for row in rows:
        if "redis_allowed_per_chat" not in row:
            targets.append({"target": f"Redis ≤ {REDIS_COMMANDS_PER_CHAT} commands per chat + "
                                      f"{REDIS_COMMANDS_PER_BATCH} per batch at {streams_text(row['streams'])}",
                            "figure": f"{row['dam']['costs']['redis_commands_per_chat']:.1f}, batches unknown",
                            "met": None})
            continue
        commands = row["dam"]["costs"]["redis_commands_per_chat"]
        batches = row["batches_per_chat"]
        targets.append({"target": f"Redis ≤ {REDIS_COMMANDS_PER_CHAT} commands per chat + "
                                  f"{REDIS_COMMANDS_PER_BATCH} per batch at {streams_text(row['streams'])}",
                        "figure": f"{commands:.1f} for {batches:.1f} batches (allowed {row['redis_allowed_per_chat']:.1f})",
                        "met": commands <= row["redis_allowed_per_chat"]})
    return targets


def latency_text(histogram: dict) -> str:
    return f"{histogram['p50_ms']:.1f} / {histogram['p99_ms']:.1f} / {histogram['max_ms']:.1f}"


def failed_chats(run: dict) -> int:
    return run["chats_ended"] - run["chats_done"]


def throughput_table_rows(rows: list[dict]) -> list[str]:
    """Per level, the OpenAI flow against direct, then the browser flow when it ran."""
    throughput_rows = []
    for row in rows:
        direct, dam = row["direct"], row["dam"]
        added = row["added_first_token_ms"]
        throughput_rows.append(
            f"| {row['streams']} | OpenAI via nginx | {direct['chats_per_s']:.1f} | {dam['chats_per_s']:.1f} | "
            f"{row['throughput_ratio']:.3f} | {latency_text(direct['histograms']['first_token'])} | "
            f"{latency_text(dam['histograms']['first_token'])} | {added['p50']:+.2f} / {added['p99']:+.2f} / "
            f"{added['max']:+.2f} | {dam['tokens_per_chat']:.1f} | {failed_chats(direct)} / {failed_chats(dam)} |")
        if "dam_browser" in row:
            browser = row["dam_browser"]
            first_token = browser["histograms"]["first_token"]
            direct_first_token = direct["histograms"]["first_token"]
            throughput_rows.append(
                f"| {row['streams']} | browser via nginx | (same) | {browser['chats_per_s']:.1f} | "
                f"{browser['chats_per_s'] / max(direct['chats_per_s'], 1e-9):.3f} | (same) | "
                f"{latency_text(first_token)} | "
                f"{first_token['p50_ms'] - direct_first_token['p50_ms']:+.2f} / "
                f"{first_token['p99_ms'] - direct_first_token['p99_ms']:+.2f} / "
                f"{first_token['max_ms'] - direct_first_token['max_ms']:+.2f} | {browser['tokens_per_chat']:.1f} | "
                f"- / {failed_chats(browser)} |")
    return throughput_rows


def cpu_table_rows(rows: list[dict], processes: list[str]) -> list[str]:
    cpu_rows = []
    for row in rows:
        for name, label in (("dam", "OpenAI"), ("dam_browser", "browser")):
            if name not in row:
                continue
            costs = row[name]["costs"]
            cells = " | ".join(f"{costs['cpu_ms_per_chat'].get(process, 0.0):.3f}" for process in processes)
            cpu_rows.append(
                f"| {row['streams']} | {label} | {costs['chats']} | {cells} | **{costs['dam_cpu_ms_per_chat']:.3f}** | "
                f"{costs['mock_llm_cpu_ms_per_chat']:.3f} | {costs['load_generator_cpu_ms_per_chat']:.3f} |")
    return cpu_rows


def redis_table_rows(rows: list[dict]) -> list[str]:
    redis_rows = []
    for row in rows:
        costs = row["dam"]["costs"]
        calls = row.get("script_calls") or {"script_calls_per_chat": {}}
        known = "redis_allowed_per_chat" in row
        batches = f"{row['batches_per_chat']:.1f}" if known else "unknown"
        allowed = f"{row['redis_allowed_per_chat']:.1f}" if known else "-"
        verdict = met(costs["redis_commands_per_chat"] <= row["redis_allowed_per_chat"]) if known else "-"
        top = ", ".join(f"{name} {value:.1f}" for name, value in
                        list(costs["redis_commands_per_chat_by_command"].items())[:8])
        scripts = ", ".join(f"{name} {value:.2f}" for name, value in calls["script_calls_per_chat"].items()) or "-"
        if calls.get("publishes_per_batch"):
            scripts += f" ({calls['publishes_per_batch']:.2f} PUBLISH per batch)"
        redis_rows.append(f"| {row['streams']} | {costs['redis_commands_per_chat']:.1f} | {batches} | {allowed} | "
                          f"{verdict} | {top} | {scripts} |")
    return redis_rows


def overhead_markdown(figures: dict) -> str:
    settings, rows = figures["settings"], figures["levels"]
    targets = "\n".join(
        f"| {target['target']} | {target['figure'] or '-'} | "
        f"{verdict_text(target)} |" for target in figures["targets"]
    )

    processes = sorted({name for row in rows for name in row["dam"]["costs"]["cpu_ms_per_chat"]},
                       key=process_sort_key)
    throughput_rows = throughput_table_rows(rows)
    cpu_rows = cpu_table_rows(rows, processes)
    redis_rows = redis_table_rows(rows)
    at_rest = figures["at_rest"]
    write_scripts = ", ".join(f"`{name}.lua`" for name in STREAM_WRITE_SCRIPTS)
    return f"""# bench-overhead ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

The `make run` topology ({settings['gateways']} gateways, {settings['workers']} workers, Redis, nginx) on \
{os.cpu_count()} CPUs shared with the load generator, with mock-llm answering 50 tokens, the first after 200 ms, \
then 10 ms apart; every limit lifted so nothing is refused, every prompt unique so nothing is joined. At each \
level `dam-load` keeps N chats streaming (closed loop: a stream starts its next chat when its last one ends) for \
{settings['warm_up_s']:g} s unmeasured, then {settings['duration_s']:g} s measured: first straight at mock-llm's \
OpenAI endpoint ("direct"), then the same through nginx and the dam, then the browser flow through the dam, in \
one run on one stack.

## Targets

| target | figure | |
|---|---|---|
{targets}

## Throughput and first token

First token: request sent to the first non-empty text, in ms (p50 / p99 / max); added = through the dam minus \
direct, statistic by statistic (the browser flow's against the direct OpenAI run). Pieces per chat: text pieces \
the client received (direct: one per token, 50).

| streams | flow | direct chats/s | dam chats/s | ratio | direct first token | dam first token | added p50 / p99 / max | pieces per chat | failed direct / dam |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(throughput_rows)}

## CPU per chat (ms)

CPU seconds (utime + stime from `/proc/<pid>/stat`) of each process over the whole load run (warm-up and drain \
included), divided by every chat of that run. nginx is its master and workers together. mock-llm and the load \
generator are not the dam and are shown apart. At rest the dam processes use {at_rest['dam_cpu_ms_per_s']:.1f} ms \
of CPU per second and Redis serves {at_rest['redis_commands_per_s']:.1f} commands per second; that is included \
above, and is most of it at 1 stream.

| streams | flow | chats | {' | '.join(processes)} | dam total | mock-llm | dam-load |
|---|---|---|{'---|' * len(processes)}---|---|---|
{chr(10).join(cpu_rows)}

## Redis commands per chat (OpenAI flow)

`INFO commandstats` before and after the load run (commands inside scripts included, our own INFO excluded), \
divided by its chats. Allowed = {REDIS_COMMANDS_PER_CHAT} + {REDIS_COMMANDS_PER_BATCH} × batches per chat.

How batches were counted: a batch is one call of a stream-write script ({write_scripts}, whichever the build \
has), and each call publishes its batch. A separate {settings['monitor_s']:g} s run at the same level, watched \
whole with `redis-cli MONITOR`, counts EVALSHA calls by script SHA1 (script calls per chat below, per call of \
`{ADMIT_SCRIPT}.lua`, one per chat) and PUBLISH commands per batch. MONITOR slows Redis, which makes batches \
larger, so the batches of the measured run are its own PUBLISH calls divided by PUBLISH per batch.

| streams | commands per chat | batches per chat | allowed | | by command (per chat) | script calls per chat (MONITOR run) |
|---|---|---|---|---|---|---|
{chr(10).join(redis_rows)}
"""


def write_overhead_plots(figures: dict) -> list[Path]:
    """Two charts against concurrency: the throughput ratio, and the first token added (log scale when every value
    is above 0, since it spans milliseconds to seconds), each with its targets as dashed lines."""
    rows = figures["levels"]
    settings = figures["settings"]
    note = (f"{os.cpu_count()} CPUs, Linux {os.uname().release}; {settings['gateways']} gateways, "
            f"{settings['workers']} workers; mock-llm 200 ms to the first token, then 50 tokens 10 ms apart; "
            f"{settings['duration_s']:g} s per level; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    levels_span = max(row["streams"] for row in rows) / min(row["streams"] for row in rows)

    def browser_rows() -> list[dict]:
        return [row for row in rows if "dam_browser" in row]

    ratio_series = [{"name": "OpenAI flow", "points": [[row["streams"], row["throughput_ratio"]] for row in rows]}]
    if browser_rows():
        ratio_series.append({"name": "browser flow", "points": [
            [row["streams"], row["dam_browser"]["chats_per_s"] / max(row["direct"]["chats_per_s"], 1e-9)]
            for row in browser_rows()]})
    throughput = {
        "title": "Throughput through the dam ÷ straight to mock-llm",
        "x_label": "concurrent streams",
        "y_label": "chats/s through the dam ÷ direct",
        "x_log": levels_span >= 10,
        "series": ratio_series,
        "horizontal_lines": [{"name": f"target ≥ {ratio:g} at {level:,} streams", "y": ratio}
                             for level, ratio in THROUGHPUT_RATIO_TARGETS],
        "note": note,
    }

    def added(run: dict, row: dict, stat: str) -> float:
        return (run["histograms"]["first_token"][f"{stat}_ms"]
                - row["direct"]["histograms"]["first_token"][f"{stat}_ms"])

    first_token_series = [
        {"name": f"{stat} (OpenAI flow)", "points": [[row["streams"], added(row["dam"], row, stat)] for row in rows]}
        for stat in ("p50", "p99")
    ]
    if browser_rows():
        first_token_series.append({"name": "p99 (browser flow)", "points": [
            [row["streams"], added(row["dam_browser"], row, "p99")] for row in browser_rows()]})
    lines = [{"name": f"target: {stat} ≤ {limit:g} ms at {level:,}", "y": limit}
             for level, stat, limit in ADDED_FIRST_TOKEN_TARGETS_MS]
    every_value = [point[1] for series in first_token_series for point in series["points"]]
    logarithmic = all(value > 0 for value in every_value)
    first_token = {
        "title": "First token added by the dam (dam minus direct)",
        "x_label": "concurrent streams",
        "y_label": "ms added" + (" (log scale)" if logarithmic else ""),
        "x_log": levels_span >= 10,
        "y_log": logarithmic,
        "series": first_token_series,
        "horizontal_lines": lines,
        "note": note,
    }
    paths = [RESULTS / "overhead-throughput.svg", RESULTS / "overhead-first-token.svg"]
    for spec, path in zip((throughput, first_token), paths):
        plots.write_chart(spec, path)
    return paths
