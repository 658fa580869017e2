"""The stack a bench runs against: started through deploy/local_stack.py as deploy/run-local.sh starts it (release
build, loopback only), and asked how it is doing (queue depth, mock-llm's counts, idle or not). Also the paths and
the log line every bench shares."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import Stack, pick_ports  # noqa: E402 - the shared module lives beside the supervisor

RESULTS = ROOT / "loadtest" / "results"


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


def wait_until(what: str, limit_s: float, condition) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit_s:
            raise RuntimeError(f"timed out after {limit_s:.0f}s waiting until {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def all_work_finished(stack: Stack) -> bool:
    return queue_depth(stack) == 0 and mock_stats(stack)["in_flight"] == 0


def target_dir() -> Path:
    configured = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return configured if configured.is_absolute() else ROOT / configured
