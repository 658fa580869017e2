"""The end-to-end tests' one stack: the supervisor (deploy/supervisor.py, debug build) starts redis-server, mock-llm,
the dam, 2 gateways, 2 workers and nginx as separate processes on free loopback ports, in a run directory of its
own, once for the session; it is always stopped, with its logs kept when a test failed. Every test talks to nginx
the way a user would (user_requests.py): curl -N for the browser and OpenAI streams, the official OpenAI Python
SDK, and signals for shutdown. Run them with `make test-e2e` (pytest); they need curl, redis-server, nginx and
`pip install openai pytest`. Unit and in-process tests live in the crates, not here.

The test_end_to_end*.py files share the stack and run in file-name order, then in each file's order:
test_end_to_end.py (the chat flows), _nginx (the edge), _observability (the metrics, after the chats) and
_shutdown, whose tests stop a gateway, then the whole stack. Those carry the `stops_the_session_stack` mark, and
the hook below keeps them after the last other test that uses the stack, whatever a new file is called.
test_supervisor.py starts stacks of its own. Every wait is bounded. Set E2E_KEEP_RUN_DIR=1 to keep the run
directory (logs, pids, nginx.conf) after a passing run.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import Stack, pick_ports, running_stack  # noqa: E402 - the shared module lives beside the supervisor

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
    keep_logs = lambda: request.session.testsfailed > 0 or os.environ.get("E2E_KEEP_RUN_DIR") == "1"  # noqa: E731
    with running_stack(stack, keep_logs) as started:
        yield started


STOPS_THE_SESSION_STACK = "stops_the_session_stack"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{STOPS_THE_SESSION_STACK}: stops part or all of the session's stack, so it runs after every "
        "other test that uses it",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Moves the tests that stop the session's stack, in their own order, to just after the last other test that
    uses the stack. They never move earlier, so tests with stacks of their own that came after them still do."""

    def stops_the_stack(item: pytest.Item) -> bool:
        return item.get_closest_marker(STOPS_THE_SESSION_STACK) is not None

    stopping = [item for item in items if stops_the_stack(item)]
    if not stopping:
        return
    first_stopping = items.index(stopping[0])
    others = [item for item in items if not stops_the_stack(item)]
    users = [index for index, item in enumerate(others) if "stack" in getattr(item, "fixturenames", ())]
    position = max([first_stopping, *(index + 1 for index in users)])
    items[:] = others[:position] + stopping + others[position:]
