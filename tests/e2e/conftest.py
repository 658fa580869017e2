"""The end-to-end tests' one stack: the supervisor (deploy/supervisor.py, debug build) on free loopback ports,
started once for the session and always stopped, with its logs kept when a test failed."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import Stack, pick_ports, tail  # noqa: E402 - the shared module lives beside the supervisor

# Building the debug binaries from a cold cache takes minutes on 2 cores; a warm start takes seconds.
START_TIMEOUT_S = float(os.environ.get("E2E_START_TIMEOUT_S", "900"))
GATEWAY_COUNT = 2
WORKER_COUNT = 2


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest):
    for tool in ("curl", "pgrep"):
        if shutil.which(tool) is None:
            pytest.fail(f"the end-to-end test needs {tool} (make deps)")
    try:
        import openai  # noqa: F401 - only its presence is checked here
    except ImportError:
        pytest.fail("the end-to-end test needs the OpenAI Python SDK: pip install openai (make deps)")
    run_dir = ROOT / ".run" / f"e2e-{os.getpid()}-{int(time.time())}"
    stack = Stack(run_dir, pick_ports(GATEWAY_COUNT), profile="debug", workers=WORKER_COUNT,
                  start_timeout_s=START_TIMEOUT_S)
    print(f"\ne2e: run dir {run_dir}; nginx on {stack.base_url}, gateways {stack.ports.gateways}", flush=True)
    stack.start()
    came_up = False
    try:
        stack.wait_until_up()
        came_up = True
        yield stack
    finally:
        stack.emergency_stop()
        if request.session.testsfailed or not came_up:
            print(f"\nsupervisor output ({stack.output_path}):\n{tail(stack.output(), 30)}", flush=True)
            print(f"logs kept in {stack.run_dir / 'logs'}", flush=True)
        elif os.environ.get("E2E_KEEP_RUN_DIR") != "1":
            shutil.rmtree(stack.run_dir, ignore_errors=True)
            stack.output_path.unlink(missing_ok=True)
