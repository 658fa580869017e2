#!/usr/bin/env python3
"""Benchmarks of Traffic Dam on this machine, run through `make bench-*`. Each starts the real topology with
deploy/run-local.sh (release build, loopback only), drives it with k6, reads what reached mock-llm, writes its
figures to loadtest/results/<bench>.json and .md, and stops everything it started. Loops are bounded in time.

  bench.py gate       a flood of 5,000 requests/s from 5 callers while 100 users chat; then the 429 throughput of
                      one gateway pinned to one core
  bench-llm-rate      (bench.py llm-rate) a burst of 2,000 chats drained by 4 workers under a global 100 requests/s
  bench.py streams    memory and admission latency of one gateway holding many open event streams
  bench.py cancel     how soon a cancelled chat's upstream stream is closed
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import Stack, pick_ports  # noqa: E402 - the shared module lives beside the run script

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


def run_k6(script: str, environment: dict[str, str], summary_name: str, cpus: str | None = None) -> dict:
    summary_path = RESULTS / f"{summary_name}.k6.json"
    command = [K6, "run", "--quiet", "--no-color", str(ROOT / "loadtest" / script)]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    env = dict(os.environ, SUMMARY_PATH=str(summary_path), **environment)
    log(f"k6 {script} {json.dumps(environment)}")
    subprocess.run(command, env=env, check=True, timeout=600)
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
            "gate_flood.js",
            {"GATEWAY_URL": gateway, "FLOOD_RATE": "5000", "FLOOD_IDENTITIES": "5", "USERS": "100",
             "DURATION": f"{duration_s}s"},
            "bench-gate-flood",
        )
        inside_gateway = bucket_quantiles(buckets_before, admission_buckets(gateway))
        wait_until("every admitted chat reached its end upstream", 120, lambda: all_work_finished(stack))
        stats = mock_stats(stack)
        flood_sent = metric(flood, "flood_status")
        admitted = metric(flood, "flood_admitted") + metric(flood, "user_admitted")
        figures = {
            "flood": {
                "target_rate_per_s": 5000,
                "sent": flood_sent,
                "sent_per_s": flood_sent / duration_s,
                "dropped_iterations": metric(flood, "dropped_iterations"),
                "admitted": metric(flood, "flood_admitted"),
                "rejected": metric(flood, "flood_rejected"),
                "rejection_ms": {stat: metric(flood, "flood_rejection_ms", stat)
                                 for stat in ("med", "p(90)", "p(99)", "max")},
            },
            "users": {
                "chats_completed": metric(flood, "user_chats_completed"),
                "chats_failed": metric(flood, "user_chats_failed"),
                "chat_ms": {stat: metric(flood, "user_chat_ms", stat) for stat in ("med", "p(90)", "p(99)")},
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
| flood requests rejected (429/403) | {figures['flood']['rejected']:.0f} |
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
"""
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
        burst = run_k6("llm_burst.js", {"GATEWAY_URL": gateway, "CHATS": str(chats), "VUS": "100"}, "bench-llm-rate")
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
"""
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
"""
    write_results("bench-cancel", figures, markdown)


def bench_streams() -> None:
    counts = [int(count) for count in os.environ.get("BENCH_STREAM_COUNTS", "1000,4000,8000").split(",")]
    settings = {
        "DAM_LIMITS__MAX_OPEN_STREAMS": str(max(counts) + 1000),
        "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "100000",
        "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "100000",
        "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "100000",
        "DAM_LIMITS__MAX_QUEUE_DEPTH": "100000",
        "DAM_LIMITS__DUPLICATE_WINDOW_S": "0",
    }
    # No workers: every chat stays queued, so every stream stays open and gets a queue update each second.
    stack = start_stack("streams", gateways=1, workers=0, settings=settings)
    sockets: list[socket.socket] = []
    rows = []
    try:
        port = stack.ports.gateways[0]
        gateway_pid = stack.pid("gateway-1")
        rows.append(measure_streams(stack, port, gateway_pid, 0, sockets))
        for count in counts:
            open_streams(port, sockets, count - len(sockets))
            time.sleep(3)
            rows.append(measure_streams(stack, port, gateway_pid, len(sockets), sockets))
    finally:
        for held in sockets:
            held.close()
        stack.stop()
    figures = {"rows": rows}
    table = "\n".join(
        f"| {row['open_streams']} | {row['gateway_rss_mib']:.0f} | {row['gateway_cpu_percent']:.0f}% | "
        f"{row['admission_ms_median']:.2f} / {row['admission_ms_max']:.2f} |"
        for row in rows
    )
    markdown = f"""# bench-streams ({time.strftime('%Y-%m-%d')})

One gateway holding open event streams of queued chats (each gets a `queued` update every second).

| open streams | gateway RSS (MiB) | gateway CPU | POST /api/chats latency median / max (ms) |
|---|---|---|---|
{table}
"""
    write_results("bench-streams", figures, markdown)


def open_streams(port: int, sockets: list[socket.socket], how_many: int) -> None:
    """Queues `how_many` chats and opens one event stream for each, reading only the response headers."""
    for index in range(how_many):
        body = json.dumps({"message": f"held stream {len(sockets)}"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/chats", data=body, headers={"content-type": "application/json",
                                                                       "x-forwarded-for": f"10.30.{index % 250}.{index // 250 % 250}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            events_url = json.loads(response.read())["events_url"]
        held = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.sendall(f"GET {events_url} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
        first = held.recv(4096)
        if b"200 OK" not in first:
            raise RuntimeError(f"stream {len(sockets)} did not open: {first[:200]!r}")
        held.setblocking(False)
        sockets.append(held)


def drain(sockets: list[socket.socket]) -> None:
    for held in sockets:
        try:
            while held.recv(65536):
                pass
        except (BlockingIOError, InterruptedError):
            pass


def measure_streams(stack: Stack, port: int, gateway_pid: int, open_count: int, sockets: list) -> dict:
    drain(sockets)
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
        "gateway_rss_mib": rss_kib / 1024,
        "gateway_cpu_percent": cpu_percent,
        "admission_ms_median": latencies[len(latencies) // 2],
        "admission_ms_max": latencies[-1],
    }
    log(json.dumps(row))
    return row


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_file_limit() -> None:
    """Holding thousands of streams needs as many sockets: take the whole hard limit."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    benches = {"gate": bench_gate, "llm-rate": bench_llm_rate, "streams": bench_streams, "cancel": bench_cancel}
    if len(sys.argv) != 2 or sys.argv[1] not in benches:
        print(f"usage: {sys.argv[0]} {'|'.join(benches)}", file=sys.stderr)
        return 2
    if shutil.which("k6") is None and sys.argv[1] in ("gate", "llm-rate"):
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
