"""Fault test 6, limiter accuracy: three gateways (real processes) hit one identity as fast as they can for a few
rate windows, once as an API key created through the dam and sent to the gateways directly, once as one anonymous
address behind nginx. The gate (admit_chat.lua, GCRA) promises that in any span of w seconds at most
burst + rate x w chats of one caller are admitted, whichever gateways they came through; and it should not refuse
much below that. Run alone with `python3 tests/chaos/scenario_limiter_accuracy.py [--long]`."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_stack import ChaosStack, ScenarioResult, run_scenario_alone, start_chaos_stack  # noqa: E402
from hostile_http_client import json_error_code, one_token_chat, request  # noqa: E402

DESCRIPTION = "limiter accuracy: one caller through three gateways stays within burst + rate x time, and near it"

GATEWAYS = 3
# The measured API key's own limits (a `standard` key with a per-key rate and burst, as the dam sets them).
KEY_RATE_PER_SECOND = 10.0
KEY_BURST = 10
# The anonymous tier for this stack: what one address behind nginx gets.
ANONYMOUS_RATE_PER_SECOND = 5.0
ANONYMOUS_BURST = 10
# Senders per gateway: enough that requests queue at every gateway all the time.
SENDERS_PER_GATEWAY = 2
# Below this share of the bound, the limiter refuses chats it should admit.
MIN_ADMITTED_SHARE = 0.8
# Window lengths (s) over which the sliding-window bound is checked, besides the whole run.
SLIDING_WINDOWS_S = (1.0, 2.5)

SETTINGS = {
    # Only nginx vouches for X-Forwarded-For; the anonymous caller is its own loopback address.
    "DAM_AUTH__TRUSTED_PROXIES": "127.0.0.1/32",
    "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": str(ANONYMOUS_RATE_PER_SECOND),
    "DAM_LIMITS__TIERS__ANONYMOUS__BURST": str(ANONYMOUS_BURST),
    # Only the rate may refuse: active chats, budgets and the queue are far above what the run sends.
    "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "100000",
    "DAM_LIMITS__TIERS__STANDARD__MAX_ACTIVE_CHATS": "100000",
    "DAM_LIMITS__TIERS__STANDARD__DAILY_TOKEN_BUDGET": "0",
    "DAM_LIMITS__DUPLICATE_WINDOW_S": "0",
}


@dataclass
class Attempt:
    sent: float
    answered: float
    status: int
    code: str | None


@dataclass
class Run:
    """Every attempt of one caller's run, from all senders."""

    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)


def send_until(port: int, headers: dict[str, str], source: str, until: float, run: Run) -> None:
    """One sender: POST /api/chats on one keep-alive connection, back to back, until `until` (monotonic)."""
    connection = None
    for _ in range(100_000):
        if time.monotonic() >= until:
            break
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
        sent = time.monotonic()
        try:
            connection.request("POST", "/api/chats", body=json.dumps(one_token_chat("limiter accuracy")).encode(),
                               headers={"content-type": "application/json", **headers})
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            with run.lock:
                run.errors.append(f"{type(error).__name__}: {error}")
            connection.close()
            connection = None
            continue
        answered = time.monotonic()
        code = None if response.status == 202 else json_error_code(body)
        with run.lock:
            run.attempts.append(Attempt(sent, answered, response.status, code))
        if response.getheader("connection", "").lower() == "close":
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def hammer(ports: list[int], headers: dict[str, str], source: str, duration_s: float) -> Run:
    run = Run()
    until = time.monotonic() + duration_s
    threads = [threading.Thread(target=send_until, args=(port, headers, source, until, run), daemon=True)
               for port in ports for _ in range(SENDERS_PER_GATEWAY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration_s + 30)
    return run


def judge(result: ScenarioResult, label: str, run: Run, rate: float, burst: int) -> None:
    """Checks the run against the GCRA bound: in any span [x, x + w], admitted <= burst + rate x w. An admission
    happened somewhere between its request's sending and its answer, so only admissions whose whole interval lies
    in the span are counted for it (a count that can only be too low, so a failure is a real one)."""
    attempts = sorted(run.attempts, key=lambda attempt: attempt.sent)
    admitted = [attempt for attempt in attempts if attempt.status == 202]
    refused = {}
    other = {}
    for attempt in attempts:
        if attempt.status == 429:
            refused[attempt.code] = refused.get(attempt.code, 0) + 1
        elif attempt.status != 202:
            other[attempt.status] = other.get(attempt.status, 0) + 1
    if not attempts:
        result.check(False, f"{label}: no request was answered ({run.errors[:3]})")
        return
    span = max(attempt.answered for attempt in attempts) - attempts[0].sent
    # The gate's clock is in whole milliseconds: a request may be stamped up to 1 ms before it was sent.
    bound = burst + rate * (span + 0.001)
    share = len(admitted) / bound
    worst = {}
    for window in SLIDING_WINDOWS_S:
        most = 0
        for start in admitted:
            inside = sum(1 for attempt in admitted
                         if attempt.sent >= start.sent and attempt.answered <= start.sent + window)
            most = max(most, inside)
        worst[window] = most
    per_second = {}
    for attempt in admitted:
        second = int(attempt.answered - attempts[0].sent)
        per_second[second] = per_second.get(second, 0) + 1
    figures = {
        "requests": len(attempts),
        "admitted": len(admitted),
        "bound": round(bound, 1),
        "admitted_share_of_bound": round(share, 3),
        "seconds": round(span, 2),
        "refused": refused,
        "other_statuses": other,
        "transport_errors": len(run.errors),
        "most_admitted_in_sliding_windows": {f"{window}s": count for window, count in worst.items()},
        "admitted_per_second": [per_second.get(second, 0) for second in range(int(span) + 1)],
    }
    result.figures[label] = figures
    print(f"  {label}: {json.dumps(figures)}", flush=True)
    result.check(len(admitted) <= bound,
                 f"{label}: {len(admitted)} admitted in {span:.2f}s, above burst + rate x time = {bound:.1f}")
    for window, count in worst.items():
        window_bound = burst + rate * window
        result.check(count <= window_bound,
                     f"{label}: {count} admitted within {window}s, above burst + rate x {window} = {window_bound:.1f}")
    result.check(share >= MIN_ADMITTED_SHARE,
                 f"{label}: only {len(admitted)} of a possible {bound:.1f} admitted ({share:.0%}): over-refusal")
    result.check(set(refused) <= {"rate_limited"}, f"{label}: refusals other than rate_limited: {refused}")
    result.check(not other, f"{label}: answers other than 202 and 429: {other}")
    result.check(not run.errors, f"{label}: transport errors: {run.errors[:3]}")


def create_api_key(stack: ChaosStack, rate: float, burst: int) -> str:
    key = f"limiter-{uuid.uuid4().hex}"
    answer = request(stack.admin_port, "PUT", f"/admin/keys/{key}",
                     {"tier": "standard", "rate_per_second": rate, "burst": burst}, source="127.0.0.1")
    if answer.status not in (200, 201):
        raise AssertionError(f"PUT /admin/keys answered {answer.status}: {answer.body[:200]!r}")
    return key


def wait_until_every_gateway_knows(stack: ChaosStack, ports: list[int], result: ScenarioResult) -> bool:
    """Keys reach gateways through a control-channel announcement. A probe key created after the measured one,
    allowing one chat in a long while, is known to a gateway once that gateway refuses its second chat with the
    probe's own policy (`RateLimit-Policy` q=1); the gateways load the whole key table, so then they know the
    measured key too."""
    probe = create_api_key(stack, 0.01, 1)
    for port in ports:
        known = False
        deadline = time.monotonic() + 15
        while not known and time.monotonic() < deadline:
            answer = request(port, "POST", "/api/chats", one_token_chat("limiter accuracy"),
                             {"Authorization": f"Bearer {probe}"}, source="127.0.0.1")
            known = answer.status == 429 and "q=1;" in answer.headers.get("ratelimit-policy", "") + ";"
            if not known:
                time.sleep(0.2)
        if not result.check(known, f"gateway on port {port} did not learn a new API key within 15 s"):
            return False
    return True


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("limiter_accuracy")
    duration_s = 30.0 if long else 6.0
    with start_chaos_stack("limiter_accuracy", gateways=GATEWAYS, workers=2, settings=SETTINGS) as stack:
        gateway_ports = [stack.gateway_port(index) for index in range(1, GATEWAYS + 1)]
        public_port = stack.public_port

        key = create_api_key(stack, KEY_RATE_PER_SECOND, KEY_BURST)
        if wait_until_every_gateway_knows(stack, gateway_ports, result):
            keyed = hammer(gateway_ports, {"Authorization": f"Bearer {key}"}, "127.0.0.1", duration_s)
            judge(result, "api_key_across_gateways", keyed, KEY_RATE_PER_SECOND, KEY_BURST)

        anonymous = hammer([public_port] * GATEWAYS, {}, "127.0.0.77", duration_s)
        judge(result, "anonymous_address_via_nginx", anonymous, ANONYMOUS_RATE_PER_SECOND, ANONYMOUS_BURST)
        served_by = set()
        access_log = stack.log("nginx-access")
        for line in access_log.splitlines():
            if line.startswith("127.0.0.77 ") and "upstream=" in line:
                served_by.add(line.split("upstream=")[1].split()[0])
        result.figures["anonymous_address_via_nginx"]["gateways_reached"] = len(served_by)
        result.check(len(served_by) >= 2, f"nginx sent the anonymous caller's requests to {len(served_by)} gateway(s)")

        result.figures["chats"] = sum(figures.get("admitted", 0) for figures in result.figures.values()
                                      if isinstance(figures, dict))
        result.figures["faults_injected"] = 0
        result.figures["lost"] = 0
        result.figures["duplicated"] = 0
    return result


if __name__ == "__main__":
    sys.exit(run_scenario_alone(run))
