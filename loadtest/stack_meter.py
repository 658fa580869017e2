"""What a bench measures on the stack besides its load generator's report: CPU seconds of each process from /proc,
Redis's command counts (INFO commandstats) and script calls (a MONITOR capture), the gateway's admission histogram
from /metrics, and the costs per chat they add up to."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from bench_stack import ROOT, log
from load_generators import run_dam_load
from local_stack import Stack


# The worker's stream-write scripts: each call writes one batch of a chat's events to its replay log and publishes
# it. Older builds have one script for every batch; newer ones append running batches with one and end the job
# (with its last batch) with the other.
STREAM_WRITE_SCRIPTS = ("publish_stream_events", "append_stream_events", "finish_job")
ADMIT_SCRIPT = "admit_chat"


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dam_processes(stack: Stack) -> dict[str, int]:
    """Every process of the dam itself (gateways, workers, dam, Redis, nginx master and workers), by name."""
    return {name: pid for name, pid in stack.known_pids.items() if name != "mock-llm"}


def cpu_seconds_by_process(pids: dict[str, int]) -> dict[str, float]:
    return {name: process_cpu_seconds(pid) for name, pid in pids.items()}


def process_group(name: str) -> str:
    """nginx's workers are counted with their master, as one `nginx` column."""
    return "nginx" if name.startswith("nginx") else name


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
