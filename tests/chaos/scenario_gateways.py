"""Fault test 2: SIGKILL a gateway behind the real nginx while it relays streams, then start it again. Clients
reconnect through nginx with `Last-Event-ID`, as EventSource does, and must resume on the other gateway with no gap
and no duplicate seq; every admitted chat ends once."""

from __future__ import annotations

import random
import signal
import time

from chaos_stack import ScenarioResult, start_chaos_stack
from chat_clients import SLOW_ANSWER, LoadUnderFaults

DESCRIPTION = "SIGKILL a gateway mid-stream behind nginx; clients resume elsewhere with Last-Event-ID"
GATEWAYS = 2
CLIENTS = 16
SHORT_KILLS = 4
LONG_KILLS = 30
# The killed gateway is started again after a second, and the other one is killed a few seconds later (as in a
# rolling restart): one gateway is always up for nginx to fail over to, and it must.
RESTART_AFTER_S = 1.0
KILL_INTERVAL_S = (2.0, 4.0)


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("gateways")
    kills_wanted = LONG_KILLS if long else SHORT_KILLS
    randomness = random.Random(2)
    with start_chaos_stack("gateways", gateways=GATEWAYS, workers=2, result=result) as chaos:
        chats = LoadUnderFaults(chaos, "gateways", CLIENTS, directive=SLOW_ANSWER).start()
        kills, streams_cut = 0, 0
        give_up_at = time.monotonic() + kills_wanted * 20 + 60
        time.sleep(2.0)
        while kills < kills_wanted and time.monotonic() < give_up_at:
            victim = f"gateway-{kills % GATEWAYS + 1}"
            open_streams = chaos.open_streams(victim)
            chaos.kill(victim, signal.SIGKILL)
            kills += 1
            streams_cut += open_streams
            time.sleep(RESTART_AFTER_S)
            chaos.restart(victim)
            time.sleep(randomness.uniform(*KILL_INTERVAL_S))
        # A POST cut by the kill may have been admitted without its client hearing of it: Redis may count more.
        outcomes = chats.stop_and_check(result, kills, redis_admitted_versus_clients="at least",
                                        ledger_reads_must_succeed=True)

        figures = result.figures
        figures.update(
            streams_open_at_kills=streams_cut,
            create_failures=sum(1 for outcome in outcomes if outcome.create_status is None
                                or outcome.create_status >= 500),
        )
        result.check(kills == kills_wanted, f"only {kills} of {kills_wanted} kills happened within the bound")
        result.check(streams_cut > 0, "no kill found a stream open: the test proved nothing")
        result.check(figures["reconnects"] > 0, "no client had to reconnect: the test proved nothing")
        result.check(figures["stream_requests_refused"] == 0,
                     f"{figures['stream_requests_refused']} stream reconnects were answered with an error status "
                     f"({figures['chats_an_eventsource_would_lose']} chats): a browser's EventSource stops for good "
                     f"on those, so its user loses the chat; reasons {figures['reconnect_reasons']}")
    return result
