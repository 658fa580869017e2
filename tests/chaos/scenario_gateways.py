"""Fault test 2: SIGKILL a gateway behind the real nginx while it relays streams, then start it again. Clients
reconnect through nginx with `Last-Event-ID`, as EventSource does, and must resume on the other gateway with no gap
and no duplicate seq; every admitted chat ends once."""

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

DESCRIPTION = "SIGKILL a gateway mid-stream behind nginx; clients resume elsewhere with Last-Event-ID"
GATEWAYS = 2
CLIENTS = 16
SHORT_KILLS = 4
LONG_KILLS = 30
# Answers of about 3 s (48 tokens 60 ms apart), so every kill finds streams mid-answer.
SLOW_ANSWER = "inter_token_ms=60"
# The killed gateway is started again after a second, and the other one is killed a few seconds later (as in a
# rolling restart): one gateway is always up for nginx to fail over to, and it must.
RESTART_AFTER_S = 1.0
KILL_INTERVAL_S = (2.0, 4.0)
# A chat created on a gateway that died before answering the POST has no client: it is abandoned after
# worker.abandon_grace_ms (15 s), then cancelled.
DRAIN_TIMEOUT_S = 30


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("gateways")
    kills_wanted = LONG_KILLS if long else SHORT_KILLS
    randomness = random.Random(2)
    with start_chaos_stack("gateways", gateways=GATEWAYS, workers=2, result=result) as chaos:
        ledger = RedisLedger(chaos).start()
        load = SteadyLoad(chaos.base_url, "gateways", CLIENTS, directive=SLOW_ANSWER).start()
        kills, streams_cut = 0, 0
        give_up_at = time.monotonic() + kills_wanted * 20 + 60
        time.sleep(2.0)
        while kills < kills_wanted and time.monotonic() < give_up_at:
            victim = f"gateway-{kills % GATEWAYS + 1}"
            open_streams = count_open_streams(chaos, victim)
            chaos.kill(victim, signal.SIGKILL)
            kills += 1
            streams_cut += open_streams
            time.sleep(RESTART_AFTER_S)
            chaos.restart(victim)
            time.sleep(randomness.uniform(*KILL_INTERVAL_S))
        outcomes = load.stop()
        emptied = wait_until(lambda: drained(chaos), DRAIN_TIMEOUT_S, interval_s=0.5)
        ledger.stop()

        figures = summarize(outcomes)
        figures.update(
            faults_injected=kills,
            streams_open_at_kills=streams_cut,
            redis_admitted=ledger.admitted,
            redis_ended=ledger.ended,
            redis_outcomes=ledger.outcomes,
            create_failures=sum(1 for outcome in outcomes if outcome.create_status is None
                                or outcome.create_status >= 500),
        )
        result.figures = figures
        result.check(kills == kills_wanted, f"only {kills} of {kills_wanted} kills happened within the bound")
        result.check(streams_cut > 0, "no kill found a stream open: the test proved nothing")
        result.check(figures["reconnects"] > 0, "no client had to reconnect: the test proved nothing")
        result.check(not chaos.dead_services(), f"services dead at the end: {chaos.dead_services()}")
        result.check(figures["stream_requests_refused"] == 0,
                     f"{figures['stream_requests_refused']} stream reconnects were answered with an error status "
                     f"({figures['chats_an_eventsource_would_lose']} chats): a browser's EventSource stops for good "
                     f"on those, so its user loses the chat; reasons {figures['reconnect_reasons']}")
        for problem in judge_all(outcomes):
            result.check(False, problem)
        result.check(emptied, f"jobs left behind {DRAIN_TIMEOUT_S}s after the load: {describe_backlog(chaos)}")
        result.check(ledger.failed_reads == 0, f"{ledger.failed_reads} reads of Redis's counters failed")
        # A POST cut by the kill may have been admitted without its client hearing of it: Redis may count more.
        result.check(ledger.admitted >= figures["admitted"],
                     f"Redis admitted {ledger.admitted} chats, fewer than the clients' {figures['admitted']}")
        result.check(ledger.ended == ledger.admitted,
                     f"jobs in != jobs ended: Redis admitted {ledger.admitted}, saw {ledger.ended} end "
                     f"({ledger.outcomes})")
    return result


def count_open_streams(chaos, gateway: str) -> int:
    """The gateway's `dam_gateway_open_streams` gauge (0 when unreadable)."""
    try:
        text = chaos.metrics(gateway)
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("dam_gateway_open_streams"):
            return int(float(line.split()[-1]))
    return 0
