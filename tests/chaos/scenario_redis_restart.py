"""Fault test 3: kill Redis (SIGKILL: a crash, not a clean shutdown) under load and start it again on its
append-only file. No service may crash; new chats get a 503 within the command timeout while Redis is down; chats
are admitted again within 5 s of Redis answering; chats accepted before the crash complete."""

from __future__ import annotations

import signal
import time

from chaos_stack import ScenarioResult, start_chaos_stack, wait_until
from chat_clients import SLOW_ANSWER, LoadUnderFaults, post_chat, unique_prompt

DESCRIPTION = "SIGKILL Redis under load and restart it with AOF: 503 while down, serving within 5 s, no chat lost"
CLIENTS = 12
SHORT_RESTARTS = 1
LONG_RESTARTS = 5
LOAD_BEFORE_CRASH_S = 3.0
REDIS_DOWN_S = 3.0
LOAD_AFTER_RECOVERY_S = 4.0
# redis.command_timeout_ms + redis.connect_timeout_ms (500 + 500, the defaults), and a second of slack for a
# loaded 2-core machine: a refusal slower than this is a hang, not a fast 503.
FAST_REFUSAL_S = 2.0
# The promise: everything serves again within 5 s of Redis returning.
SERVING_AGAIN_WITHIN_S = 5.0


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("redis_restart")
    restarts_wanted = LONG_RESTARTS if long else SHORT_RESTARTS
    probes, slow_or_wrong_probes, recovery_seconds = 0, [], []
    crash_times = []
    with start_chaos_stack("redis-restart", gateways=2, workers=2, result=result) as chaos:
        chats = LoadUnderFaults(chaos, "redis-restart", CLIENTS, directive=SLOW_ANSWER).start()
        for _restart in range(restarts_wanted):
            time.sleep(LOAD_BEFORE_CRASH_S)
            crash_times.append(time.monotonic())
            chaos.kill("redis", signal.SIGKILL)
            # While Redis is down: each gateway, directly and through nginx, refuses a new chat fast with 503.
            down_until = time.monotonic() + REDIS_DOWN_S
            while time.monotonic() < down_until:
                for url in [chaos.base_url] + [chaos.gateway_url(i) for i in range(1, chaos.gateway_count + 1)]:
                    status, body, seconds = post_chat(url, unique_prompt("redis-down-probe"))
                    probes += 1
                    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
                    if status != 503 or seconds > FAST_REFUSAL_S:
                        slow_or_wrong_probes.append(f"{url}: {status} {code} in {seconds:.2f}s")
                time.sleep(0.3)
            chaos.restart("redis")
            if not wait_until(chaos.redis_answers, 30, interval_s=0.05):
                result.check(False, "the restarted Redis did not answer PING within 30 s")
                break
            back_at = time.monotonic()
            admitted_again = wait_until(
                lambda: post_chat(chaos.base_url, unique_prompt("redis-back-probe"))[0] == 202,
                SERVING_AGAIN_WITHIN_S + 10, interval_s=0.1)
            recovery_seconds.append(round(time.monotonic() - back_at, 2) if admitted_again else None)
            time.sleep(LOAD_AFTER_RECOVERY_S)
        # A POST whose reply was lost with Redis may have been admitted without its client hearing of it; the
        # ledger's reads while Redis is down fail by design (the next one catches up).
        outcomes = chats.stop_and_check(result, len(crash_times), redis_admitted_versus_clients="at least")

        before_first_crash = [o for o in outcomes if o.admitted and o.created_at < crash_times[0]]
        figures = result.figures
        figures.update(
            probes_while_down=probes,
            probes_not_fast_503=len(slow_or_wrong_probes),
            seconds_until_admitting_again=recovery_seconds,
            accepted_before_crash=len(before_first_crash),
            accepted_before_crash_done=sum(1 for o in before_first_crash if o.ended == "done"),
        )
        result.check(not slow_or_wrong_probes,
                     f"{len(slow_or_wrong_probes)} of {probes} new chats while Redis was down were not a 503 within "
                     f"{FAST_REFUSAL_S}s: {slow_or_wrong_probes[:5]}")
        for seconds in recovery_seconds:
            result.check(seconds is not None and seconds <= SERVING_AGAIN_WITHIN_S,
                         f"chats admitted again {seconds}s after Redis returned (promise: {SERVING_AGAIN_WITHIN_S}s)")
        result.check(len(before_first_crash) > 0, "no chat was accepted before the crash: the test proved nothing")
        result.check(figures["accepted_before_crash_done"] == len(before_first_crash),
                     f"only {figures['accepted_before_crash_done']} of {len(before_first_crash)} chats accepted "
                     f"before the crash completed: "
                     f"{sorted({o.ended or 'never' for o in before_first_crash if o.ended != 'done'})}")
    return result
