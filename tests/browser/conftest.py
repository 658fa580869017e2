"""The browser tests' one stack and one browser, started once for the whole session: the `make run` topology
(deploy/topology.toml through deploy/local_stack.py, debug build: nginx, 2 gateways, 1 worker taking one chat at a
time, mock-llm, the dam, redis-server) with chats of at most MAX_MESSAGES messages and nginx's edge limits low
enough to flood from the page, and a headless Chromium session driven through chromium-driver. Both are always
stopped; the stack's logs are kept when a test failed. Screenshots go to target/browser-test/."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_page_harness import (  # noqa: E402 - beside this file
    EDGE_BURST, EDGE_RATE_PER_SECOND, MAX_MESSAGES, OUTPUT_DIR, ROOMY_ANONYMOUS_TIER, ROOT, WINDOW, ChatPageTest,
)
from local_stack import Stack, pick_ports, running_stack  # noqa: E402 - chat_page_harness put deploy/ on the path
from webdriver import ChromeDriver  # noqa: E402

START_TIMEOUT_S = float(os.environ.get("BROWSER_TEST_START_TIMEOUT_S", "900"))


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest):
    shutil.rmtree(OUTPUT_DIR, ignore_errors=True)
    OUTPUT_DIR.mkdir(parents=True)
    run_dir = ROOT / ".run" / f"browser-{os.getpid()}-{int(time.time())}"
    stack = Stack(
        run_dir,
        pick_ports(2),
        profile="debug",
        workers=1,
        settings={
            "DAM_WORKER__CONCURRENCY": "1",
            "DAM_CHAT__MAX_MESSAGES": str(MAX_MESSAGES),
            # About 2 s per answer, long enough to see it stream.
            "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "40",
            "EDGE_RATE_PER_SECOND": str(EDGE_RATE_PER_SECOND),
            "EDGE_BURST": str(EDGE_BURST),
        },
        start_timeout_s=START_TIMEOUT_S,
    )
    print(f"\nbrowser test: run dir {run_dir}; screenshots in {OUTPUT_DIR}", flush=True)
    with running_stack(stack, lambda: request.session.testsfailed > 0) as started:
        yield started


@pytest.fixture(scope="session")
def chat_page(stack: Stack):
    """The browser on the page, for every test of the session; the gate's anonymous tier roomy enough for them."""
    driver = None
    session = None
    try:
        driver = ChromeDriver(OUTPUT_DIR / "chromedriver.log")
        session = driver.new_session(*WINDOW)
        page_test = ChatPageTest(stack, session)
        page_test.set_anonymous_tier(ROOMY_ANONYMOUS_TIER)
        yield page_test
    finally:
        if session is not None:
            session.close()
        if driver is not None:
            driver.stop()
