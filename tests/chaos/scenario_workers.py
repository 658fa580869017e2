"""Fault test 1: SIGKILL a random worker every few seconds under a steady load of chats, and start it again. Every
admitted chat must reach `done` or an `error` with a code, seen once, with no duplicate or missing seq; the chats
Redis admitted must equal the jobs Redis saw end, and nothing may be left queued or in a processing list."""

from __future__ import annotations

import random
import signal
import time

from chaos_stack import ScenarioResult, start_chaos_stack
from chat_clients import LoadUnderFaults

DESCRIPTION = "SIGKILL a random worker every few seconds under steady load; every chat ends once"
WORKERS = 3
CLIENTS = 12
SHORT_KILLS = 10
# `make chaos`: the issue asks for at least 100.
LONG_KILLS = 100
# Between kills: long enough for chats to start on the restarted worker, short enough for many kills per minute.
KILL_INTERVAL_S = (1.0, 2.5)


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("workers")
    kills_wanted = LONG_KILLS if long else SHORT_KILLS
    randomness = random.Random(9)
    with start_chaos_stack("workers", gateways=2, workers=WORKERS, result=result) as chaos:
        chats = LoadUnderFaults(chaos, "workers", CLIENTS).start()
        kills = 0
        # Bounded: each round kills once; the wall-clock bound guards a hung kill or restart.
        give_up_at = time.monotonic() + kills_wanted * 10 + 60
        while kills < kills_wanted and time.monotonic() < give_up_at:
            time.sleep(randomness.uniform(*KILL_INTERVAL_S))
            victim = f"worker-{randomness.randint(1, WORKERS)}"
            chaos.kill(victim, signal.SIGKILL)
            kills += 1
            chaos.restart(victim)
        # A worker's death never cuts a POST's answer: Redis admitted exactly the chats the clients saw admitted.
        outcomes = chats.stop_and_check(result, kills, redis_admitted_versus_clients="equal",
                                        ledger_reads_must_succeed=True)

        result.figures["errors_without_seq"] = sum(1 for outcome in outcomes if outcome.terminal_events
                                                   and outcome.terminal_events[-1].seq is None)
        result.check(kills == kills_wanted, f"only {kills} of {kills_wanted} kills happened within the bound")
        result.check(result.figures["admitted"] > kills,
                     f"too little load: {result.figures['admitted']} chats for {kills} kills")
    return result
