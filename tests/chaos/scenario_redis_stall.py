"""Fault test 4: pause Redis for 2 s mid-stream (SIGSTOP, then SIGCONT) under load. No job may be stranded: every
admitted chat ends once (`done`, or an `error` with a code), the processing lists and lanes are empty at the end,
and Redis saw every admitted job end."""

from __future__ import annotations

import signal
import time

from chaos_stack import ScenarioResult, start_chaos_stack
from chat_clients import SLOW_ANSWER, LoadUnderFaults

DESCRIPTION = "SIGSTOP Redis for 2 s mid-stream, then SIGCONT: no job stranded, every chat ends once"
CLIENTS = 12
SHORT_STALLS = 1
LONG_STALLS = 6
LOAD_BETWEEN_STALLS_S = 3.0
STALL_S = 2.0
LOAD_AFTER_LAST_STALL_S = 4.0


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("redis_stall")
    stalls_wanted = LONG_STALLS if long else SHORT_STALLS
    stalls = 0
    with start_chaos_stack("redis-stall", gateways=2, workers=2, result=result) as chaos:
        chats = LoadUnderFaults(chaos, "redis-stall", CLIENTS, directive=SLOW_ANSWER).start()
        for _stall in range(stalls_wanted):
            time.sleep(LOAD_BETWEEN_STALLS_S)
            chaos.kill("redis", signal.SIGSTOP)
            try:
                time.sleep(STALL_S)
            finally:
                chaos.kill("redis", signal.SIGCONT)
            stalls += 1
        time.sleep(LOAD_AFTER_LAST_STALL_S)
        # A POST whose reply timed out during the stall may have been admitted without its client hearing of it.
        chats.stop_and_check(result, stalls, redis_admitted_versus_clients="at least")
    return result
