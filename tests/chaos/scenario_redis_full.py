"""Redis full (maxmemory reached, policy noeviction, as deploy/topology.toml runs it): Redis refuses writes. New
chats must get a 503 with a JSON error, no service may crash, chats under way must still end once, and chats are
admitted again once Redis has room. This is what docs/operations.md's "Persistence" section promises of a full Redis."""

from __future__ import annotations

import time

from chaos_stack import ScenarioResult, start_chaos_stack, wait_until
from chat_clients import SLOW_ANSWER, LoadUnderFaults, post_chat, unique_prompt

DESCRIPTION = "Redis at maxmemory with noeviction: 503s for new chats, nothing crashes, chats under way end"
CLIENTS = 6
LOAD_BEFORE_S = 2.0
FULL_S = 3.0
FULL_LONG_S = 10.0


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("redis_full")
    refusals = []
    with start_chaos_stack("redis-full", gateways=2, workers=2, result=result) as chaos:
        chats = LoadUnderFaults(chaos, "redis-full", CLIENTS, directive=SLOW_ANSWER).start()
        time.sleep(LOAD_BEFORE_S)
        configured = chaos.redis("CONFIG", "GET", "maxmemory").split()[-1]
        policy = chaos.redis("CONFIG", "GET", "maxmemory-policy").split()[-1]
        # Full now: the cap at what Redis already uses, so every write that needs memory is refused.
        chaos.redis("CONFIG", "SET", "maxmemory", "1")
        full_until = time.monotonic() + (FULL_LONG_S if long else FULL_S)
        while time.monotonic() < full_until:
            status, body, seconds = post_chat(chaos.base_url, unique_prompt("redis-full-probe"))
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            refusals.append((status, code, round(seconds, 3)))
            time.sleep(0.3)
        chaos.redis("CONFIG", "SET", "maxmemory", configured)
        admitted_again = wait_until(
            lambda: post_chat(chaos.base_url, unique_prompt("redis-room-probe"))[0] == 202, 10, interval_s=0.2)
        time.sleep(2.0)
        chats.stop_and_check(result, 1)

        result.figures.update(
            maxmemory_policy=policy,
            maxmemory_configured=configured,
            answers_while_full=sorted({f"{status} {code}" for status, code, _ in refusals}),
            slowest_answer_while_full_s=max((seconds for _, _, seconds in refusals), default=None),
        )
        result.check(policy == "noeviction", f"Redis runs with maxmemory-policy {policy}, not noeviction")
        for status, code, seconds in refusals:
            result.check(status == 503 and code is not None,
                         f"a new chat while Redis was full got {status} {code} (expected a 503 with a JSON error)")
        result.check(admitted_again, "chats were not admitted again within 10 s of Redis having room")
    return result
