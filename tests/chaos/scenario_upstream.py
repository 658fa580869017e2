"""Fault test 5: upstream faults from mock-llm under a steady load (a burst of 500s, hangs, slow tokens, dropped
connections). The circuit breaker opens on the 500s and closes again once the upstream heals; while it is open new
chats get a fast 503; every admitted chat ends once; and no service grows without bound: memory, open files and
threads of each service are measured at the end of a normal-load phase before the faults and again after them."""

from __future__ import annotations

import time

from chaos_stack import ScenarioResult, start_chaos_stack, wait_until
from chat_clients import LoadUnderFaults, SteadyLoad, post_chat, unique_prompt

DESCRIPTION = "mock-llm 500 bursts, hangs, slow tokens, dropped connections: breaker, fast 503s, bounded growth"
CLIENTS = 8
SHORT_CYCLES = 1
LONG_CYCLES = 5
# A small window and a short cool-down, so the breaker can open and close several times in a minute; a short
# first-token and gap timeout, so hung answers end in seconds rather than the default 30 s.
STACK_SETTINGS = {
    "DAM_LLM__CIRCUIT_WINDOW_S": "10",
    "DAM_LLM__CIRCUIT_MIN_CALLS": "10",
    "DAM_LLM__CIRCUIT_FAILURE_RATIO": "0.5",
    "DAM_LLM__CIRCUIT_COOL_DOWN_MS": "3000",
    "DAM_LLM__FIRST_TOKEN_TIMEOUT_MS": "2000",
    "DAM_LLM__TOKEN_GAP_TIMEOUT_MS": "2000",
}
COOL_DOWN_S = 3.0
NORMAL_KNOBS = {"failure_rate": 0.0, "hang_rate": 0.0, "inter_token_delay_ms": 15}
NORMAL_LOAD_S = 8.0
FAULT_PHASE_S = 5.0
# Bounds for the breaker: it must open while every call fails, and close once calls succeed again.
OPEN_WITHIN_S = 30.0
CLOSE_WITHIN_S = COOL_DOWN_S + 30.0
# A refusal slower than this is not a fast 503 (the gate is one Redis round trip).
FAST_REFUSAL_S = 1.0
# Growth allowed between the two measurements (generous: allocators keep freed memory, tokio keeps idle threads).
RSS_GROWTH_FACTOR = 1.5
RSS_GROWTH_SLACK_KIB = 32 * 1024
FD_GROWTH_SLACK = 32
THREAD_GROWTH_SLACK = 8
# Redis holds the chats' replay logs by design (for chat.replay_ttl_s) and nginx is not ours: both are measured
# and printed, not judged.
JUDGED_PREFIXES = ("gateway-", "worker-", "dam", "mock-llm")


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("upstream")
    cycles = LONG_CYCLES if long else SHORT_CYCLES
    faults, breaker, open_refusals = 0, [], []
    with start_chaos_stack("upstream", gateways=2, workers=2, settings=STACK_SETTINGS, result=result) as chaos:
        chats = LoadUnderFaults(chaos, "upstream", CLIENTS).start()
        time.sleep(NORMAL_LOAD_S)
        before = measure(chaos)

        for cycle in range(cycles):
            # 1. Every call fails with 500: the breaker opens, new chats get a fast 503, then it closes again.
            chaos.set_mock_llm(failure_rate=1.0)
            faults += 1
            opened = wait_until(lambda: breaker_state(chaos) == "open", OPEN_WITHIN_S, interval_s=0.1)
            breaker.append(f"cycle {cycle + 1}: {'opened' if opened else 'never opened'}")
            if opened:
                for _probe in range(5):
                    status, body, seconds = post_chat(chaos.base_url, unique_prompt("breaker-open-probe"))
                    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
                    if breaker_state(chaos) != "open":
                        break
                    open_refusals.append((status, code, round(seconds, 3)))
            chaos.set_mock_llm(**NORMAL_KNOBS)
            closed = wait_until(lambda: breaker_state(chaos) == "closed", CLOSE_WITHIN_S, interval_s=0.2)
            breaker.append(f"cycle {cycle + 1}: {'closed' if closed else 'never closed'}")
            # 2. Every answer hangs (each attempt ends at the first-token timeout), then heals.
            chaos.set_mock_llm(hang_rate=1.0)
            faults += 1
            time.sleep(FAULT_PHASE_S)
            chaos.set_mock_llm(**NORMAL_KNOBS)
            # 3. Slow tokens: 200 ms apart, answers of about 10 s.
            chaos.set_mock_llm(inter_token_delay_ms=200)
            faults += 1
            time.sleep(FAULT_PHASE_S)
            chaos.set_mock_llm(**NORMAL_KNOBS)
            # 4. Dropped connections: extra clients whose answers are cut after 5 tokens, every attempt.
            dropping = SteadyLoad(chaos.base_url, "upstream-dropped", CLIENTS // 2,
                                  directive="fail_after_tokens=5").start()
            faults += 1
            time.sleep(FAULT_PHASE_S)
            chats.add_load(dropping)
            dropping.stop()
            wait_until(lambda: breaker_state(chaos) == "closed", CLOSE_WITHIN_S, interval_s=0.2)

        # The same normal load as before the faults, then the second measurement.
        time.sleep(NORMAL_LOAD_S)
        after = measure(chaos)
        chats.stop_and_check(result, faults)

        result.figures.update(breaker=breaker, refusals_while_open=open_refusals, before=before, after=after)
        for event in breaker:
            result.check("never" not in event, f"the circuit breaker {event.split(': ')[1]} ({event})")
        result.check(bool(open_refusals) or not any("opened" in event for event in breaker),
                     "no new chat was tried while the breaker was open")
        for status, code, seconds in open_refusals:
            result.check(status == 503 and code == "upstream_unavailable" and seconds <= FAST_REFUSAL_S,
                         f"a new chat while the breaker was open got {status} {code} in {seconds}s "
                         f"(expected a 503 upstream_unavailable within {FAST_REFUSAL_S}s)")
        for name, was in before.items():
            if not name.startswith(JUDGED_PREFIXES) or name not in after:
                continue
            now = after[name]
            result.check(now["rss_kib"] <= was["rss_kib"] * RSS_GROWTH_FACTOR + RSS_GROWTH_SLACK_KIB,
                         f"{name} grew from {was['rss_kib']} KiB to {now['rss_kib']} KiB of memory")
            result.check(now["fds"] <= was["fds"] + FD_GROWTH_SLACK,
                         f"{name} went from {was['fds']} to {now['fds']} open files")
            result.check(now["threads"] <= was["threads"] + THREAD_GROWTH_SLACK,
                         f"{name} went from {was['threads']} to {now['threads']} threads")
    return result


def breaker_state(chaos) -> str | None:
    status = chaos.admin_status()
    return None if status is None else status["circuit_breaker"]["state"]


def measure(chaos) -> dict[str, dict[str, int]]:
    """Memory (RSS), open files and threads of every service now."""
    figures = {}
    for name in chaos.service_names():
        try:
            figures[name] = {"rss_kib": chaos.rss_kib(name), "fds": chaos.open_fds(name),
                             "threads": chaos.threads(name)}
        except (FileNotFoundError, ProcessLookupError):
            pass
    return figures
