"""Fault test 4: pause Redis for 2 s mid-stream (SIGSTOP, then SIGCONT) under load. No job may be stranded: every
admitted chat ends once (`done`, or an `error` with a code), the processing lists and lanes are empty at the end,
and Redis saw every admitted job end."""

from __future__ import annotations

import signal
import time

from chaos_stack import (
    RedisLedger,
    ScenarioResult,
    describe_backlog,
    drained,
    start_chaos_stack,
    wait_until,
)
from chat_clients import SteadyLoad, judge_all, summarize

DESCRIPTION = "SIGSTOP Redis for 2 s mid-stream, then SIGCONT: no job stranded, every chat ends once"
CLIENTS = 12
SHORT_STALLS = 1
LONG_STALLS = 6
# Answers of about 3 s (48 tokens 60 ms apart), so every stall finds streams mid-answer.
SLOW_ANSWER = "inter_token_ms=60"
LOAD_BETWEEN_STALLS_S = 3.0
STALL_S = 2.0
LOAD_AFTER_LAST_STALL_S = 4.0
DRAIN_TIMEOUT_S = 30


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("redis_stall")
    stalls_wanted = LONG_STALLS if long else SHORT_STALLS
    stalls = 0
    with start_chaos_stack("redis-stall", gateways=2, workers=2, result=result) as chaos:
        ledger = RedisLedger(chaos).start()
        load = SteadyLoad(chaos.base_url, "redis-stall", CLIENTS, directive=SLOW_ANSWER).start()
        for _stall in range(stalls_wanted):
            time.sleep(LOAD_BETWEEN_STALLS_S)
            chaos.kill("redis", signal.SIGSTOP)
            try:
                time.sleep(STALL_S)
            finally:
                chaos.kill("redis", signal.SIGCONT)
            stalls += 1
        time.sleep(LOAD_AFTER_LAST_STALL_S)
        outcomes = load.stop()
        emptied = wait_until(lambda: drained(chaos), DRAIN_TIMEOUT_S, interval_s=0.5)
        ledger.stop()

        figures = summarize(outcomes)
        figures.update(
            faults_injected=stalls,
            redis_admitted=ledger.admitted,
            redis_ended=ledger.ended,
            redis_outcomes=ledger.outcomes,
        )
        result.figures = figures
        result.check(not chaos.dead_services(), f"services dead after the stalls: {chaos.dead_services()}")
        for problem in judge_all(outcomes):
            result.check(False, problem)
        result.check(emptied, f"jobs stranded {DRAIN_TIMEOUT_S}s after the load: {describe_backlog(chaos)}")
        # A POST whose reply timed out during the stall may have been admitted without its client hearing of it.
        result.check(ledger.admitted >= figures["admitted"],
                     f"Redis counted {ledger.admitted} chats admitted, fewer than the clients' {figures['admitted']}")
        result.check(ledger.ended == ledger.admitted,
                     f"jobs in != jobs ended: Redis admitted {ledger.admitted}, saw {ledger.ended} end "
                     f"({ledger.outcomes})")
    return result
