"""The supervisor (deploy/supervisor.py, what `make run` runs) where it refuses or cleans up: a busy port, a service
that dies while starting, a second run on the same run directory, and `--clean` after the supervisor was killed.
Each case runs the real script on a small stack of its own (1 gateway; debug build, free loopback ports) and
checks that no process of its run directory is left behind. The happy path is test_end_to_end*.py's (SIGINT: test_end_to_end_shutdown.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import RUN_SCRIPT, STOP_TIMEOUT_S, Stack, pgrep_full, pick_ports, pid_alive, tail  # noqa: E402

START_TIMEOUT_S = float(os.environ.get("E2E_START_TIMEOUT_S", "900"))
# A refused start stops within seconds; this only bounds a supervisor that would hang instead.
REFUSAL_TIMEOUT_S = 120.0


def small_stack(name: str, settings: dict[str, str] | None = None) -> Stack:
    run_dir = ROOT / ".run" / f"e2e-supervisor-{name}-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    return Stack(run_dir, pick_ports(1, 1), profile="debug", workers=1, settings=settings,
                 start_timeout_s=START_TIMEOUT_S)


def run_supervisor(stack: Stack, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN_SCRIPT), *arguments], cwd=ROOT, env=stack.environment(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S)


def assert_nothing_left(stack: Stack) -> None:
    left = pgrep_full(f"{stack.run_dir}/")
    assert not left, f"processes naming {stack.run_dir} remain: {left}"


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def cleanup():
    stacks: list[Stack] = []
    yield stacks.append
    for stack in stacks:
        stack.emergency_stop()
        for pid in stack.known_pids.values():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(stack.run_dir, ignore_errors=True)
        stack.output_path.unlink(missing_ok=True)


def test_a_busy_port_is_refused_before_anything_starts(cleanup) -> None:
    stack = small_stack("busy-port")
    cleanup(stack)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.ports.gateways[0]))
        squatter.listen()
        finished = run_supervisor(stack)
    assert finished.returncode == 1, finished.stderr
    assert f"port {stack.ports.gateways[0]} (for gateway-1) is already in use" in finished.stderr
    assert not list((stack.run_dir / "pids").glob("*.pid")), "a process was started despite the busy port"
    assert_nothing_left(stack)


def test_a_service_that_exits_while_starting_stops_the_run_with_its_log(cleanup) -> None:
    # Every Rust service refuses a setting it cannot read, and exits at once.
    stack = small_stack("bad-setting", {"DAM_CHAT__MAX_MESSAGES": "many"})
    cleanup(stack)
    finished = run_supervisor(stack)
    assert finished.returncode == 1, finished.stderr
    assert "exited during startup" in finished.stderr, finished.stderr
    assert "max_messages" in finished.stderr, "the failed service's log tail names the bad setting"
    assert_nothing_left(stack)


def test_a_second_run_on_the_same_directory_is_refused_and_clean_removes_a_killed_runs_leftovers(cleanup) -> None:
    stack = small_stack("second-run")
    cleanup(stack)
    stack.start()
    stack.wait_until_up()
    second = run_supervisor(stack)
    assert second.returncode == 1, second.stderr
    assert f"a stack is already running from {stack.run_dir}" in second.stderr, second.stderr
    assert ready(f"{stack.base_url}/readyz"), "the first stack stopped serving after the refused second run"

    # Killed without a chance to stop its services: they run on, orphaned, until --clean.
    stack.process.send_signal(signal.SIGKILL)
    stack.process.wait(timeout=10)
    orphans = {name: pid for name, pid in stack.known_pids.items() if pid_alive(pid)}
    assert "redis" in orphans and "gateway-1" in orphans, f"expected orphaned services, found {orphans}"
    started = time.monotonic()
    cleaned = run_supervisor(stack, "--clean")
    assert cleaned.returncode == 0, tail(cleaned.stderr, 20)
    assert time.monotonic() - started < STOP_TIMEOUT_S, "--clean took longer than the stop bound"
    assert not [name for name, pid in orphans.items() if pid_alive(pid)], "--clean left services running"
    assert not stack.run_dir.exists(), "--clean did not remove the run directory"
    assert_nothing_left(stack)
