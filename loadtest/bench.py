#!/usr/bin/env python3
"""Benchmarks of Traffic Dam on this machine, run through `make bench-*`. Each starts the real topology with
deploy/run-local.sh (release build, loopback only), drives it with k6 or dam-load (loadtest/dam-load), reads what
reached mock-llm, writes its figures to loadtest/results/<bench>.json and .md, and stops everything it started.
Loops are bounded in time.

  bench.py gate       a flood of 5,000 requests/s from 5 callers while 100 users chat; then the 429 throughput of
                      one gateway pinned to one core
  bench-llm-rate      (bench.py llm-rate) a burst of 2,000 chats drained by 4 workers under a global 100 requests/s
  bench.py streams    memory per stream and admission latency of one gateway holding up to 18,000 event streams
  bench.py cancel     how soon a cancelled chat's upstream stream is closed
  bench.py overhead   what the dam adds to a chat (throughput, first token, CPU and Redis commands per chat) at
                      1 to 1,000 concurrent streams, against mock-llm direct in the same run
  bench.py capacity   (bench_capacity.py) users held at p95 TTFT < 3 s by 1 gateway + 2 workers, then 2 + 4
  bench.py flood      (bench_flood.py) legitimate users with and without a 5,000 requests/s flood
  bench.py redis      (bench_redis.py) chats/s at zero LLM latency and Redis commands per chat

Knobs (environment): BENCH_DURATION_S, BENCH_CHATS, BENCH_STREAM_COUNTS; BENCH_OVERHEAD_LEVELS (1,50,200,1000),
BENCH_OVERHEAD_DURATION_S (20), BENCH_OVERHEAD_WARM_UP_S (3), BENCH_OVERHEAD_BROWSER (1), BENCH_OVERHEAD_MONITOR_S
(3; 0 skips counting batches), BENCH_OVERHEAD_GATEWAYS (2), BENCH_OVERHEAD_WORKERS (2); BENCH_DAM_LOAD (a
dam-load binary to use); SKIP_BUILD=1 and CARGO_TARGET_DIR as for deploy/run-local.sh.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import Stack, pick_ports  # noqa: E402 - the shared module lives beside the run script

import plots  # noqa: E402 - loadtest/plots.py, beside this file

RESULTS = ROOT / "loadtest" / "results"
K6 = shutil.which("k6") or "k6"


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def start_stack(name: str, gateways: int, workers: int, settings: dict[str, str]) -> Stack:
    run_dir = ROOT / ".run" / f"bench-{name}-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    stack = Stack(run_dir, pick_ports(gateways), profile="release", workers=workers, settings=settings)
    log(f"starting the stack ({gateways} gateway(s), {workers} worker(s)) in {run_dir}")
    stack.start()
    stack.wait_until_up()
    return stack


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def queue_depth(stack: Stack) -> int:
    """Chats waiting in every lane, as the dam reports them (it listens on loopback without a token here)."""
    status = get_json(f"http://127.0.0.1:{stack.ports.admin}/admin/status")
    return sum(lane["depth"] for lane in status["lanes"])


def mock_stats(stack: Stack) -> dict:
    return get_json(f"http://127.0.0.1:{stack.ports.mock_llm}/stats")


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


def wait_until(what: str, limit_s: float, condition) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit_s:
            raise RuntimeError(f"timed out after {limit_s:.0f}s waiting until {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def all_work_finished(stack: Stack) -> bool:
    return queue_depth(stack) == 0 and mock_stats(stack)["in_flight"] == 0


def pin(pid: int, cpus: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True, timeout=10)


def write_results(name: str, figures: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    figures["machine"] = {"cpus": os.cpu_count(), "kernel": os.uname().release}
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    log(f"results in {RESULTS / (name + '.md')}")
    print(markdown)


# ------------------------------------------------------------------------------------------------------------


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
        stats = mock_stats(stack)
        flood_sent = metric(flood, "flood_requests")
        admitted = metric(flood, "flood_admitted") + metric(flood, "legit_chats_admitted")
        figures = {
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

    finally:
        stack.stop()
    figures["one_core"] = measure_rejections_on_one_core()
    curve = "\n".join(
        f"| {row['connections']} | {row['requests_per_s']:.0f} | {row['median_ms']:.2f} ms | {row['p99_ms']:.2f} ms |"
        for row in figures["one_core"]["curve"]
    )

    user_total = figures["users"]["chats_completed"] + figures["users"]["chats_failed"]
    markdown = f"""# bench-gate ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

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
    RESULTS.mkdir(parents=True, exist_ok=True)
    plots.write_chart({
        "title": "Rejections by one gateway on one core",
        "x_label": "open connections (wrk)",
        "y_label": "429s per second",
        "series": [{"name": "429s per second",
                    "points": [[row["connections"], row["requests_per_s"]] for row in figures["one_core"]["curve"]]}],
        "note": f"{os.cpu_count()} CPUs: the gateway pinned to one, Redis and wrk on the other",
    }, RESULTS / "bench-gate-one-core.svg")
    write_results("bench-gate", figures, markdown)


def admission_buckets(gateway: str) -> dict[float, float]:
    """The gateway's admission-latency histogram: cumulative counts by upper bound in seconds."""
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets = {}
    for line in text.splitlines():
        found = re.match(r'dam_gateway_admission_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if found:
            buckets[float(found.group(1))] = float(found.group(2))
    return buckets


def bucket_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """p50 and p99 (as bucket upper bounds, in ms) of what the histogram counted between two scrapes."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1] if counts else 0.0
    result = {}
    for name, share in (("p50", 0.5), ("p99", 0.99)):
        bound = next((bound for bound, count in counts if total and count >= share * total), float("inf"))
        result[name] = bound * 1000
    return result


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


def bench_llm_rate() -> None:
    chats = int(os.environ.get("BENCH_CHATS", "2000"))
    settings = {
        "DAM_LIMITS__LLM__MAX_REQUESTS_PER_SECOND": "100",
        # One client sends the whole burst: its own limits must not be what holds it back.
        "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "100000",
        "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "100000",
        "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "100000",
        "DAM_LIMITS__DUPLICATE_WINDOW_S": "0",
        # Nobody listens to these chats; they must not be cancelled as abandoned while they wait.
        "DAM_WORKER__ABANDON_GRACE_MS": "600000",
        "DAM_MOCK_LLM__TOKENS_PER_ANSWER": "16",
        "DAM_MOCK_LLM__TIME_TO_FIRST_TOKEN_MS": "20",
        "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "5",
    }
    stack = start_stack("llm-rate", gateways=1, workers=4, settings=settings)
    samples: list[tuple[float, int, int]] = []
    try:
        gateway = f"http://127.0.0.1:{stack.ports.gateways[0]}"
        started = time.monotonic()
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                samples.append((time.monotonic() - started, queue_depth(stack), mock_stats(stack)["requests"]))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        burst = run_k6("llm_burst.js", {"BASE_URL": gateway, "CHATS": str(chats), "VUS": "100"}, "bench-llm-rate")
        burst_s = time.monotonic() - started
        drained_s = wait_until(
            "the queue drained", 300, lambda: mock_stats(stack)["completed"] >= metric(burst, "burst_admitted")
        ) + burst_s
        stop_sampling.set()
        sampler.join(timeout=5)
        stats = mock_stats(stack)
    finally:
        stack.stop()

    peak_depth = max(depth for _, depth, _ in samples)
    # The steady drain rate: requests seen between 10% and 90% of the burst, over the time that took.
    low = next(at for at, _, seen in samples if seen >= 0.1 * chats)
    high = next((at for at, _, seen in samples if seen >= 0.9 * chats), samples[-1][0])
    steady_rate = 0.8 * chats / max(high - low, 1e-6)
    figures = {
        "chats": chats,
        "admitted": metric(burst, "burst_admitted"),
        "refused": metric(burst, "burst_refused"),
        "burst_sent_in_s": burst_s,
        "peak_queue_depth": peak_depth,
        "drained_in_s": drained_s,
        "steady_drain_per_s": steady_rate,
        "limit_per_s": 100,
        "mock_llm": stats,
        "samples": samples,
    }
    markdown = f"""# bench-llm-rate ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

{chats} chats sent at once ({burst_s:.1f} s to send them all) to 1 gateway, drained by 4 workers under
`limits.llm.max_requests_per_second = 100`.

| figure | value |
|---|---|
| admitted / refused | {figures['admitted']:.0f} / {figures['refused']:.0f} |
| peak queue depth | {peak_depth} |
| most request starts mock-llm saw in any one second | {stats['max_starts_in_one_second']} (limit 100) |
| steady drain rate (10% to 90% of the burst) | {steady_rate:.1f} chats/s |
| burst fully answered after | {drained_s:.1f} s |
| mock-llm requests / completed / failed | {stats['requests']} / {stats['completed']} / {stats['failed']} |

![Queue depth and requests that reached mock-llm over time](bench-llm-rate-queue.svg)
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    plots.write_chart({
        "title": f"A burst of {chats} chats drained under 100 LLM requests/s",
        "x_label": "seconds since the burst began",
        "y_label": "chats",
        "series": [
            {"name": "waiting in the queue", "points": [[at, depth] for at, depth, _ in samples]},
            {"name": "requests mock-llm has seen", "points": [[at, seen] for at, _, seen in samples]},
        ],
        "horizontal_lines": [{"name": f"the burst: {chats} chats", "y": chats}],
        "note": f"{os.cpu_count()} CPUs; 1 gateway, 4 workers; limits.llm.max_requests_per_second = 100",
    }, RESULTS / "bench-llm-rate-queue.svg")
    write_results("bench-llm-rate", figures, markdown)


def bench_cancel() -> None:
    """How long after `DELETE /api/chats/{id}` the upstream stream of a running chat is closed, as mock-llm sees
    it (its `cancelled_by_client` count rises), over 20 chats."""
    settings = {
        "DAM_MOCK_LLM__TOKENS_PER_ANSWER": "400",
        "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "20",
        "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "1000",
        "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "1000",
    }
    stack = start_stack("cancel", gateways=1, workers=1, settings=settings)
    delays_ms = []
    try:
        gateway = f"http://127.0.0.1:{stack.ports.gateways[0]}"
        for index in range(20):
            request = urllib.request.Request(f"{gateway}/api/chats", data=json.dumps(
                {"message": f"cancel me {index}"}).encode(), headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                created = json.loads(response.read())
            events = urllib.request.urlopen(f"{gateway}{created['events_url']}", timeout=30)
            while b"event: token" not in events.readline():
                pass
            cancelled_before = mock_stats(stack)["cancelled_by_client"]
            started = time.perf_counter()
            delete = urllib.request.Request(f"{gateway}/api/chats/{created['id']}", method="DELETE")
            urllib.request.urlopen(delete, timeout=10).read()
            while mock_stats(stack)["cancelled_by_client"] == cancelled_before:
                if time.perf_counter() - started > 10:
                    raise RuntimeError("the upstream stream was not closed within 10 s")
                time.sleep(0.002)
            delays_ms.append((time.perf_counter() - started) * 1000)
            events.close()
    finally:
        stack.stop()
    delays_ms.sort()
    figures = {"delays_ms": delays_ms, "median_ms": delays_ms[len(delays_ms) // 2], "max_ms": delays_ms[-1]}
    markdown = f"""# bench-cancel ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

From `DELETE /api/chats/{{id}}` sent to mock-llm counting the running answer's stream as closed by its client,
{len(delays_ms)} chats (each measured by polling mock-llm's /stats every 2 ms):
median {figures['median_ms']:.1f} ms, max {figures['max_ms']:.1f} ms.

![Time from DELETE to the upstream stream closed, every chat in order](bench-cancel.svg)
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    plots.write_chart({
        "title": "From DELETE /api/chats/{id} to the upstream stream closed",
        "x_label": "cancelled chats, fastest first",
        "y_label": "ms",
        "series": [{"name": "DELETE to upstream closed",
                    "points": [[index + 1, delay] for index, delay in enumerate(delays_ms)]}],
        "note": f"{os.cpu_count()} CPUs; mock-llm's /stats polled every 2 ms",
    }, RESULTS / "bench-cancel.svg")
    write_results("bench-cancel", figures, markdown)


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


# The target for one open stream's memory on a gateway.
STREAM_MEMORY_TARGET_KIB = 16


def check_open_files_limit(pid: int, streams: int) -> None:
    """A gateway holding N streams needs N sockets; say so at once when its limit cannot hold them."""
    limits = Path(f"/proc/{pid}/limits").read_text()
    soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
    log(f"the gateway's open-files limit is {soft}")
    if soft != "unlimited" and int(soft) < streams + 200:
        log(f"warning: {soft} open files cannot hold {streams} streams; raise the hard limit (ulimit -Hn) first")


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


# ------------------------------------------------------------------------------------------------------------
# bench-overhead: what the dam adds to a chat, measured against mock-llm itself in the same run.

# The targets, by concurrency level.
ADDED_FIRST_TOKEN_TARGETS_MS = [(50, "p50", 1.0), (50, "p99", 5.0), (200, "p99", 20.0)]
THROUGHPUT_RATIO_TARGETS = [(200, 0.95), (1000, 0.9)]
DAM_CPU_TARGET_MS_PER_CHAT = 1.0
REDIS_COMMANDS_PER_CHAT = 30
REDIS_COMMANDS_PER_BATCH = 2
# The worker's stream-write scripts: each call writes one batch of a chat's events to its replay log and publishes
# it. Older builds have one script for every batch; newer ones append running batches with one and end the job
# (with its last batch) with the other.
STREAM_WRITE_SCRIPTS = ("publish_stream_events", "append_stream_events", "finish_job")
ADMIT_SCRIPT = "admit_chat"


def target_dir() -> Path:
    configured = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return configured if configured.is_absolute() else ROOT / configured


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


def redis_command_calls(port: int) -> dict[str, int]:
    """Calls per command since Redis started (`INFO commandstats`; commands run inside scripts included)."""
    output = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True,
                            check=True, timeout=10).stdout
    calls = {}
    for line in output.splitlines():
        found = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if found:
            calls[found.group(1)] = int(found.group(2))
    return calls


def dam_processes(stack: Stack) -> dict[str, int]:
    """Every process of the dam itself (gateways, workers, dam, Redis, nginx master and workers), by name."""
    return {name: pid for name, pid in stack.known_pids.items() if name != "mock-llm"}


def cpu_seconds_by_process(pids: dict[str, int]) -> dict[str, float]:
    return {name: process_cpu_seconds(pid) for name, pid in pids.items()}


def process_group(name: str) -> str:
    """nginx's workers are counted with their master, as one `nginx` column."""
    return "nginx" if name.startswith("nginx") else name


class StackMeter:
    """CPU seconds of every stack process and Redis command counts, read before and after one load run."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.pids = dam_processes(stack)
        self.mock_pid = stack.pid("mock-llm")

    def read(self) -> dict:
        return {
            "cpu": cpu_seconds_by_process(self.pids),
            "mock_cpu": process_cpu_seconds(self.mock_pid),
            "redis": redis_command_calls(self.stack.ports.redis),
            "at": time.monotonic(),
        }

    @staticmethod
    def difference(before: dict, after: dict) -> dict:
        cpu = {}
        for name in after["cpu"]:
            group = process_group(name)
            cpu[group] = cpu.get(group, 0.0) + after["cpu"][name] - before["cpu"].get(name, 0.0)
        commands = {name: calls - before["redis"].get(name, 0) for name, calls in after["redis"].items()}
        # The INFO that read the first figures is ours, not the dam's.
        commands["info"] = commands.get("info", 0) - 1
        return {
            "cpu_s": cpu,
            "mock_cpu_s": after["mock_cpu"] - before["mock_cpu"],
            "redis_commands": {name: calls for name, calls in commands.items() if calls > 0},
            "seconds": after["at"] - before["at"],
        }


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


def costs_per_chat(usage: dict, chats: int, load_generator_cpu_s: float) -> dict:
    chats = max(chats, 1)
    cpu_ms = {name: 1000 * seconds / chats for name, seconds in sorted(usage["cpu_s"].items())}
    commands = usage["redis_commands"]
    return {
        "chats": chats,
        "cpu_ms_per_chat": cpu_ms,
        "dam_cpu_ms_per_chat": sum(cpu_ms.values()),
        "mock_llm_cpu_ms_per_chat": 1000 * usage["mock_cpu_s"] / chats,
        "load_generator_cpu_ms_per_chat": 1000 * load_generator_cpu_s / chats,
        "redis_commands_per_chat": sum(commands.values()) / chats,
        "redis_commands_per_chat_by_command": {
            name: calls / chats for name, calls in sorted(commands.items(), key=lambda item: -item[1])
        },
        "seconds": usage["seconds"],
    }


def lua_script_names() -> dict[str, str]:
    """SHA1 of each of protocol's Lua scripts -> its name (the redis crate calls EVALSHA with the file's SHA1), as
    the working tree has them and as the last commit had them, so binaries built from either are recognised."""
    lua_dir = "crates/protocol/src/lua"
    names = {}
    committed = subprocess.run(["git", "ls-tree", "--name-only", "HEAD", f"{lua_dir}/"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    for path in committed.stdout.split():
        source = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, timeout=10).stdout
        names[hashlib.sha1(source).hexdigest()] = Path(path).stem
    for script in sorted((ROOT / lua_dir).glob("*.lua")):
        names[hashlib.sha1(script.read_bytes()).hexdigest()] = script.stem
    return names


def count_script_calls(monitor_log: Path) -> dict[str, int]:
    """EVALSHA calls by script name in a `redis-cli MONITOR` capture, and PUBLISH calls (from scripts or not) as
    `PUBLISH`."""
    names = lua_script_names()
    calls: dict[str, int] = {}
    script_call = re.compile(rb'\] "(?:evalsha|EVALSHA)" "([0-9a-f]{40})"')
    publish = re.compile(rb'\] "(?:publish|PUBLISH)" ')
    with open(monitor_log, "rb") as capture:
        for line in capture:
            found = script_call.search(line)
            if found:
                sha = found.group(1).decode()
                name = names.get(sha, f"unknown:{sha[:8]}")
                calls[name] = calls.get(name, 0) + 1
            elif publish.search(line):
                calls["PUBLISH"] = calls.get("PUBLISH", 0) + 1
    return calls


def measure_script_calls(stack: Stack, binary: Path, streams: int, seconds: float) -> dict:
    """Script calls per chat at one concurrency level, from a separate short run watched whole with MONITOR (it
    slows Redis, so it never overlaps a measured run): chats = calls of admit_chat (one per chat), batches = calls
    of the stream-write scripts, and how many PUBLISH commands one batch costs. MONITOR's slowdown makes batches
    larger, so the measured run's batches are counted from its own PUBLISH calls with that last figure."""
    capture = stack.run_dir / f"monitor-{streams}.log"
    with open(capture, "wb") as output:
        monitor = subprocess.Popen(["redis-cli", "-p", str(stack.ports.redis), "MONITOR"], stdout=output,
                                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            run_dam_load(binary, ["closed-loop", "--url", stack.base_url, "--streams", str(streams),
                                  "--warm-up-s", "0", "--duration-s", str(seconds), "--label", f"monitor-{streams}"],
                         stack.run_dir / f"monitor-{streams}.json", seconds + 120)
            time.sleep(0.3)
        finally:
            monitor.terminate()
            monitor.wait(timeout=10)
    calls = count_script_calls(capture)
    capture.unlink(missing_ok=True)
    chats = calls.get(ADMIT_SCRIPT, 0)
    batches = sum(calls.get(name, 0) for name in STREAM_WRITE_SCRIPTS)
    if not chats or not batches:
        # The binaries were built from other sources than this tree's (or its last commit's) Lua files.
        log(f"could not tell the scripts apart (calls by SHA1: {calls}); batches per chat are unknown")
        return {"chats": 0, "script_calls": calls, "script_calls_per_chat": {}, "publishes_per_batch": None}
    per_chat = {name: count / chats for name, count in sorted(calls.items(), key=lambda item: -item[1])
                if name != "PUBLISH"}
    return {"chats": chats, "script_calls": calls, "script_calls_per_chat": per_chat,
            "batches_per_chat": batches / chats, "publishes_per_batch": calls.get("PUBLISH", 0) / batches}


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


def met(condition: bool) -> str:
    return "met" if condition else "**not met**"


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


def overhead_markdown(figures: dict) -> str:
    settings, rows = figures["settings"], figures["levels"]
    targets = "\n".join(
        f"| {target['target']} | {target['figure'] or '-'} | "
        f"{verdict_text(target)} |" for target in figures["targets"]
    )

    def latency(histogram: dict) -> str:
        return f"{histogram['p50_ms']:.1f} / {histogram['p99_ms']:.1f} / {histogram['max_ms']:.1f}"

    def failed(run: dict) -> int:
        return run["chats_ended"] - run["chats_done"]

    throughput_rows = []
    for row in rows:
        direct, dam = row["direct"], row["dam"]
        added = row["added_first_token_ms"]
        throughput_rows.append(
            f"| {row['streams']} | OpenAI via nginx | {direct['chats_per_s']:.1f} | {dam['chats_per_s']:.1f} | "
            f"{row['throughput_ratio']:.3f} | {latency(direct['histograms']['first_token'])} | "
            f"{latency(dam['histograms']['first_token'])} | {added['p50']:+.2f} / {added['p99']:+.2f} / "
            f"{added['max']:+.2f} | {dam['tokens_per_chat']:.1f} | {failed(direct)} / {failed(dam)} |")
        if "dam_browser" in row:
            browser = row["dam_browser"]
            first_token = browser["histograms"]["first_token"]
            direct_first_token = direct["histograms"]["first_token"]
            throughput_rows.append(
                f"| {row['streams']} | browser via nginx | (same) | {browser['chats_per_s']:.1f} | "
                f"{browser['chats_per_s'] / max(direct['chats_per_s'], 1e-9):.3f} | (same) | {latency(first_token)} | "
                f"{first_token['p50_ms'] - direct_first_token['p50_ms']:+.2f} / "
                f"{first_token['p99_ms'] - direct_first_token['p99_ms']:+.2f} / "
                f"{first_token['max_ms'] - direct_first_token['max_ms']:+.2f} | {browser['tokens_per_chat']:.1f} | "
                f"- / {failed(browser)} |")

    processes = sorted({name for row in rows for name in row["dam"]["costs"]["cpu_ms_per_chat"]},
                       key=process_sort_key)
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


def process_sort_key(name: str) -> tuple:
    order = ["gateway", "worker", "dam", "redis", "nginx"]
    prefix = name.split("-")[0]
    number = name.rsplit("-", 1)[-1]
    return (order.index(prefix) if prefix in order else len(order), int(number) if number.isdigit() else 0, name)


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


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_file_limit() -> None:
    """Holding thousands of streams needs as many sockets: take the whole hard limit (the stack inherits it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    # The benches in modules of their own import this one, so they are imported only once it is whole.
    import bench_capacity
    import bench_flood
    import bench_redis

    benches = {"gate": bench_gate, "llm-rate": bench_llm_rate, "streams": bench_streams, "cancel": bench_cancel,
               "overhead": bench_overhead,
               "capacity": bench_capacity.bench_capacity,
               "flood": bench_flood.bench_flood,
               "redis": bench_redis.bench_redis}
    if len(sys.argv) != 2 or sys.argv[1] not in benches:
        print(f"usage: {sys.argv[0]} {'|'.join(benches)}", file=sys.stderr)
        return 2
    if shutil.which("k6") is None and sys.argv[1] in ("gate", "llm-rate", "flood"):
        print("k6 is missing: make bench-tools", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None and sys.argv[1] == "gate":
        print("wrk is missing: make bench-tools", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    raise_open_file_limit()
    benches[sys.argv[1]]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
