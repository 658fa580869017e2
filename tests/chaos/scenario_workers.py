"""Fault test 1: SIGKILL a random worker every few seconds under a steady load of chats, and start it again. Every
admitted chat must reach `done` or an `error` with a code, seen once, with no duplicate or missing seq; the chats
Redis admitted must equal the jobs Redis saw end, and nothing may be left queued or in a processing list."""

from __future__ import annotations

import random
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

DESCRIPTION = "SIGKILL a random worker every few seconds under steady load; every chat ends once"
WORKERS = 3
CLIENTS = 12
SHORT_KILLS = 10
# `make chaos`: the issue asks for at least 100.
LONG_KILLS = 100
# Between kills: long enough for chats to start on the restarted worker, short enough for many kills per minute.
KILL_INTERVAL_S = (1.0, 2.5)
# A killed worker's jobs wait for its heartbeat to expire (worker.heartbeat_ttl_ms, 5 s) and the reaper (2 s).
DRAIN_TIMEOUT_S = 30


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("workers")
    kills_wanted = LONG_KILLS if long else SHORT_KILLS
    randomness = random.Random(9)
    with start_chaos_stack("workers", gateways=2, workers=WORKERS, result=result) as chaos:
        ledger = RedisLedger(chaos).start()
        load = SteadyLoad(chaos.base_url, "workers", CLIENTS).start()
        kills = 0
        # Bounded: each round kills once; the wall-clock bound guards a hung kill or restart.
        give_up_at = time.monotonic() + kills_wanted * 10 + 60
        while kills < kills_wanted and time.monotonic() < give_up_at:
            time.sleep(randomness.uniform(*KILL_INTERVAL_S))
            victim = f"worker-{randomness.randint(1, WORKERS)}"
            chaos.kill(victim, signal.SIGKILL)
            kills += 1
            chaos.restart(victim)
        outcomes = load.stop()
        emptied = wait_until(lambda: drained(chaos), DRAIN_TIMEOUT_S, interval_s=0.5)
        ledger.stop()

        figures = summarize(outcomes)
        figures.update(
            faults_injected=kills,
            redis_admitted=ledger.admitted,
            redis_ended=ledger.ended,
            redis_outcomes=ledger.outcomes,
            errors_without_seq=sum(1 for outcome in outcomes if outcome.terminal_events
                                   and outcome.terminal_events[-1].seq is None),
        )
        result.figures = figures
        result.check(kills == kills_wanted, f"only {kills} of {kills_wanted} kills happened within the bound")
        result.check(figures["admitted"] > kills, f"too little load: {figures['admitted']} chats for {kills} kills")
        result.check(not chaos.dead_services(), f"services dead at the end: {chaos.dead_services()}")
        for problem in judge_all(outcomes):
            result.check(False, problem)
        result.check(emptied, f"jobs left behind {DRAIN_TIMEOUT_S}s after the load: {describe_backlog(chaos)}")
        result.check(ledger.failed_reads == 0, f"{ledger.failed_reads} reads of Redis's counters failed")
        result.check(ledger.admitted == figures["admitted"],
                     f"Redis admitted {ledger.admitted} chats, the clients {figures['admitted']}")
        result.check(ledger.ended == ledger.admitted,
                     f"jobs in != jobs ended: Redis admitted {ledger.admitted}, saw {ledger.ended} end "
                     f"({ledger.outcomes})")
    return result
