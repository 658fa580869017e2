"""Chat clients for the fault tests: create a chat and follow it to its end the way a browser does
(eventsource_chat_follower.py reads the stream), and run a steady load of such clients on threads; `LoadUnderFaults`
adds a Redis ledger beside it and the checks every load-under-fault scenario ends with. The OpenAI-compatible
streaming clients live in openai_stream_clients.py. No assertions on timing here, and nothing about one fault: a
scenario decides what its own figures must be."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
import urllib.parse
from typing import Literal

from chaos_stack import ChaosStack, RedisLedger, ScenarioResult, describe_backlog, drained, wait_until
from eventsource_chat_follower import ChatOutcome, follow_chat

# Each chat's prompt is unique (the gateway joins identical requests from one caller) and short; the mock answers
# 48 tokens 15 ms apart, about a second of streaming.
_prompt_numbers = itertools.count(1)
_prompt_lock = threading.Lock()
# A directive for answers of about 3 s (48 tokens 60 ms apart), so a fault finds streams mid-answer.
SLOW_ANSWER = "inter_token_ms=60"
# How long the jobs may take to end once the load stops: a killed worker's jobs wait for its heartbeat to expire
# (worker.heartbeat_ttl_ms, 5 s) and the reaper (2 s); a chat created on a gateway that died before answering the
# POST has no client, so it is abandoned after worker.abandon_grace_ms (15 s), then cancelled.
DRAIN_TIMEOUT_S = 30


def unique_prompt(label: str, directive: str = "") -> str:
    with _prompt_lock:
        number = next(_prompt_numbers)
    suffix = f" [[mock {directive}]]" if directive else ""
    return f"Fault test {label} #{number}: describe a river at dawn.{suffix}"


def post_chat(base_url: str, prompt: str, timeout_s: float = 15.0) -> tuple[int | None, object, float]:
    """POST /api/chats; (status or None when the connection failed, body, seconds taken)."""
    parsed = urllib.parse.urlsplit(base_url)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout_s)
    try:
        connection.request("POST", "/api/chats", body=json.dumps({"message": prompt}),
                           headers={"content-type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return response.status, body, time.monotonic() - started
    except (OSError, http.client.HTTPException) as error:
        return None, f"{type(error).__name__}: {error}", time.monotonic() - started
    finally:
        connection.close()


def run_one_chat(base_url: str, label: str, deadline: float, directive: str = "") -> ChatOutcome:
    """Creates one chat and, when admitted, follows it to its end (or the deadline)."""
    outcome = ChatOutcome(prompt=unique_prompt(label, directive), created_at=time.monotonic())
    status, body, seconds = post_chat(base_url, outcome.prompt)
    outcome.create_status, outcome.create_body, outcome.create_seconds = status, body, seconds
    if status == 202 and isinstance(body, dict):
        outcome.chat_id = body.get("id")
        follow_chat(base_url, outcome, body["events_url"], deadline)
    return outcome


class SteadyLoad:
    """`clients` threads, each creating a chat and following it to its end, again and again, until `stop()`. Each
    chat, once admitted, is followed to its end even after `stop()` (up to `follow_timeout_s` from its creation)."""

    def __init__(self, base_url: str, label: str, clients: int, follow_timeout_s: float = 45.0,
                 directive: str = "", pause_after_refusal_s: float = 0.2):
        self.base_url = base_url
        self.label = label
        self.clients = clients
        self.follow_timeout_s = follow_timeout_s
        self.directive = directive
        self.pause_after_refusal_s = pause_after_refusal_s
        self.outcomes: list[ChatOutcome] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "SteadyLoad":
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"{self.label}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _client(self) -> None:
        while not self._stopping.is_set():
            outcome = run_one_chat(self.base_url, self.label, time.monotonic() + self.follow_timeout_s,
                                   self.directive)
            with self._lock:
                self.outcomes.append(outcome)
            if not outcome.admitted:
                self._stopping.wait(self.pause_after_refusal_s)

    def stop(self, join_timeout_s: float | None = None) -> list[ChatOutcome]:
        """Stops starting chats and waits (bounded) for the ones under way; returns every outcome."""
        self._stopping.set()
        deadline = time.monotonic() + (join_timeout_s or self.follow_timeout_s + 30)
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        still = [thread.name for thread in self._threads if thread.is_alive()]
        if still:
            raise AssertionError(f"clients still running after the bound: {still}")
        with self._lock:
            return list(self.outcomes)

    def snapshot(self) -> list[ChatOutcome]:
        with self._lock:
            return list(self.outcomes)


def summarize(outcomes: list[ChatOutcome]) -> dict:
    """The figures every scenario prints: chats, admitted, ended by kind, lost, duplicated, reconnects."""
    admitted = [outcome for outcome in outcomes if outcome.admitted]
    ended: dict[str, int] = {}
    for outcome in admitted:
        key = outcome.ended or "never"
        ended[key] = ended.get(key, 0) + 1
    refused: dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.admitted:
            key = str(outcome.create_status)
            refused[key] = refused.get(key, 0) + 1
    return {
        "chats": len(outcomes),
        "admitted": len(admitted),
        "refused": refused,
        "ended": ended,
        "lost": sum(1 for outcome in admitted if outcome.ended is None),
        "duplicated": sum(1 for outcome in admitted if outcome.duplicated()),
        "seq_gaps": sum(1 for outcome in admitted
                        if any(problem.startswith("gap") for problem in outcome.seq_problems())),
        "reconnects": sum(outcome.reconnects for outcome in admitted),
        "stream_requests_refused": sum(len(outcome.refused_stream_statuses) for outcome in admitted),
        "chats_an_eventsource_would_lose": sum(1 for outcome in admitted if outcome.refused_stream_statuses),
        "resets_seen": sum(1 for outcome in admitted for event in outcome.events if event.kind == "reset"),
        "reconnect_reasons": top_reasons(outcome.reconnect_reasons for outcome in admitted),
    }


def top_reasons(reason_lists, limit: int = 4) -> dict[str, int]:
    """The most frequent reconnect reasons (the first 60 characters of each), for the figures."""
    counts: dict[str, int] = {}
    for reasons in reason_lists:
        for reason in reasons:
            key = reason[:60]
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1])[:limit])


def judge_all(outcomes: list[ChatOutcome], limit: int = 10) -> list[str]:
    """Every admitted chat's broken promises, the first `limit` of them spelled out."""
    problems = [problem for outcome in outcomes for problem in outcome.judge()]
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more"]
    return problems


class LoadUnderFaults:
    """The frame the load-under-fault scenarios share: a `SteadyLoad` of `clients` chat clients and a `RedisLedger`
    beside it, started before the faults; `stop_and_check` after them stops the load, waits until the stack has
    drained, reads the ledger a last time, records the common figures and makes the common checks."""

    def __init__(self, chaos: ChaosStack, label: str, clients: int, directive: str = ""):
        self.chaos = chaos
        self.ledger = RedisLedger(chaos)
        self.loads = [SteadyLoad(chaos.base_url, label, clients, directive=directive)]

    def start(self) -> "LoadUnderFaults":
        self.ledger.start()
        self.loads[0].start()
        return self

    def add_load(self, load: SteadyLoad) -> None:
        """Counts a further load, started by the scenario, in the figures and checks."""
        self.loads.append(load)

    def stop_and_check(self, result: ScenarioResult, faults_injected: int, *,
                       redis_admitted_versus_clients: Literal["equal", "at least"] | None = None,
                       ledger_reads_must_succeed: bool = False) -> list[ChatOutcome]:
        """Stops every load and the ledger; puts `summarize`'s figures, `faults_injected` and the ledger's counts
        (`redis_admitted`, `redis_ended`, `redis_outcomes`) in `result.figures`; checks that no service died, that
        every admitted chat ended once (`judge_all`), that no job is left queued or in a processing list
        DRAIN_TIMEOUT_S after the load, and that Redis saw every job it admitted end. Optionally also that the
        chats Redis admitted are `equal` to the ones the clients saw admitted (or `at least` as many, when a fault
        may cut a POST's answer after the admission), and that every read of the ledger succeeded (not while the
        fault is Redis itself). Returns every chat's outcome, for the scenario's own figures and checks."""
        chaos, ledger = self.chaos, self.ledger
        outcomes = [outcome for load in self.loads for outcome in load.stop()]
        emptied = wait_until(lambda: drained(chaos), DRAIN_TIMEOUT_S, interval_s=0.5)
        ledger.stop()

        figures = summarize(outcomes)
        result.figures.update(figures, faults_injected=faults_injected, redis_admitted=ledger.admitted,
                              redis_ended=ledger.ended, redis_outcomes=ledger.outcomes)
        dead = chaos.dead_services()
        result.check(not dead, f"services dead at the end: {dead}")
        for problem in judge_all(outcomes):
            result.check(False, problem)
        result.check(emptied, f"jobs left behind {DRAIN_TIMEOUT_S}s after the load: {describe_backlog(chaos)}")
        if ledger_reads_must_succeed:
            result.check(ledger.failed_reads == 0, f"{ledger.failed_reads} reads of Redis's counters failed")
        if redis_admitted_versus_clients == "equal":
            result.check(ledger.admitted == figures["admitted"],
                         f"Redis admitted {ledger.admitted} chats, the clients {figures['admitted']}")
        elif redis_admitted_versus_clients == "at least":
            result.check(ledger.admitted >= figures["admitted"],
                         f"Redis admitted {ledger.admitted} chats, fewer than the clients' {figures['admitted']}")
        result.check(ledger.ended == ledger.admitted,
                     f"jobs in != jobs ended: Redis admitted {ledger.admitted}, saw {ledger.ended} end "
                     f"({ledger.outcomes})")
        return outcomes
