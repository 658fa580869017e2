"""The fault tests' view of the local topology (deploy/topology.toml through deploy/local_stack.py): start it on free
loopback ports, send one service a signal, start it again exactly as it ran, read its memory and open files from
/proc, read and shape Redis and mock-llm. What a scenario checks lives in its own file, not here. This file starts and
stops the stack; the means to hurt it are service_control.py's (ChaosStack), the run's own count of chats is
redis_ledger.py's and a scenario's report chaos_result.py's, and every name a scenario uses is importable from here."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from chaos_result import ScenarioResult, run_scenario_alone  # noqa: E402 - beside this file
from local_stack import Stack, pick_ports, tail  # noqa: E402 - the shared module lives beside the supervisor
from redis_ledger import RedisLedger  # noqa: E402 - beside this file
from service_control import KEY_PREFIX, ChaosStack, RestartedProcess, http_json  # noqa: E402 - beside this file

# Building the debug binaries from a cold cache takes minutes on 2 cores; a warm start takes seconds.
START_TIMEOUT_S = float(os.environ.get("CHAOS_START_TIMEOUT_S", "900"))
# Far above what any scenario sends from its one address behind nginx, so only the fault under test refuses chats.
GENEROUS_ANONYMOUS_LIMITS = {
    "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "10000",
    "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "10000",
    "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "10000",
    "DAM_LIMITS__TIERS__ANONYMOUS__DAILY_TOKEN_BUDGET": "0",
}


def wait_until(condition, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Polls `condition` until it is true or `timeout_s` passed; returns its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


@contextlib.contextmanager
def start_chaos_stack(name: str, gateways: int = 2, workers: int = 2, settings: dict | None = None,
                      result: ScenarioResult | None = None):
    """Starts the topology (debug build) in a fresh run directory and yields a `ChaosStack`; always stops every
    process on the way out, restarted ones included. The run directory (logs, pids, Redis's files) is kept when
    the block raised, when `result` holds failures, or when CHAOS_KEEP_RUN_DIR=1."""
    run_parent = Path(tempfile.mkdtemp(prefix=f"dam-chaos-{name}-"))
    stack = Stack(
        run_parent / "run",
        pick_ports(gateways),
        profile="debug",
        workers=workers,
        settings={**GENEROUS_ANONYMOUS_LIMITS, **(settings or {})},
        start_timeout_s=START_TIMEOUT_S,
    )
    chaos = ChaosStack(stack, gateways, workers)
    print(f"  starting the stack in {stack.run_dir} ({gateways} gateways, {workers} workers)", flush=True)
    failed = True
    try:
        stack.start()
        stack.wait_until_up()
        for service in chaos.service_names():
            chaos.remember_launch(service)
        yield chaos
        failed = False
    finally:
        try:
            stack.stop()
        finally:
            chaos.stop_restarted()
            stack.emergency_stop()
        if failed or (result is not None and result.failures) or os.environ.get("CHAOS_KEEP_RUN_DIR") == "1":
            print(f"  run directory kept: {stack.run_dir}", flush=True)
        else:
            shutil.rmtree(run_parent, ignore_errors=True)


def drained(chaos: ChaosStack) -> bool:
    """Every lane empty and every worker's processing list empty, per the dam's status report."""
    status = chaos.admin_status()
    if status is None:
        return False
    return all(lane["depth"] == 0 for lane in status["lanes"]) and status["jobs_running"] == 0


def describe_backlog(chaos: ChaosStack) -> str:
    status = chaos.admin_status()
    if status is None:
        return "the dam's status is unreadable"
    lanes = {lane["lane"]: lane["depth"] for lane in status["lanes"]}
    workers = {worker["id"]: worker["jobs_in_flight"]
               for group in ("alive", "presumed_dead") for worker in status["workers"][group]}
    return f"lanes {lanes}, processing lists {workers}"


__all__ = [
    "KEY_PREFIX",
    "ROOT",
    "ChaosStack",
    "RedisLedger",
    "RestartedProcess",
    "ScenarioResult",
    "describe_backlog",
    "drained",
    "http_json",
    "run_scenario_alone",
    "start_chaos_stack",
    "tail",
    "wait_until",
]
