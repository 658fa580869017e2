"""Chat clients for the fault tests: create a chat, follow its event stream the way a browser's EventSource does
(reconnect after a broken or ended stream, with `Last-Event-ID`), record every event, and judge the stream (one
terminal event, no duplicate and no missing seq). A steady load of such clients runs on threads; `LoadUnderFaults`
adds a Redis ledger beside it and the checks every load-under-fault scenario ends with. No assertions on timing
here, and nothing about one fault: a scenario decides what its own figures must be."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from chaos_stack import ChaosStack, RedisLedger, ScenarioResult, describe_backlog, drained, wait_until

# Each chat's prompt is unique (the gateway joins identical requests from one caller) and short; the mock answers
# 48 tokens 15 ms apart, about a second of streaming.
_prompt_numbers = itertools.count(1)
_prompt_lock = threading.Lock()
# EventSource's reconnect delay is the server's `retry:` or a browser default of a few seconds; shorter here so a
# run takes less time, and never zero, so a dead gateway is not hammered.
RECONNECT_DELAY_S = 0.25
# A stream stays open while the chat runs; keep-alive comments arrive every sse_keep_alive_s (15 s by default).
READ_IDLE_TIMEOUT_S = 40.0
MAX_RECONNECTS = 400
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


@dataclass
class ReceivedEvent:
    kind: str
    seq: int | None
    data: dict
    connection: int


@dataclass
class ChatOutcome:
    """What one client saw of one chat, from the POST to the end of its stream."""

    prompt: str
    # time.monotonic() when the POST was sent.
    created_at: float = 0.0
    create_status: int | None = None
    create_body: object = None
    create_seconds: float | None = None
    chat_id: str | None = None
    events: list[ReceivedEvent] = field(default_factory=list)
    connections: int = 0
    reconnect_reasons: list[str] = field(default_factory=list)
    # Statuses of stream requests answered with something other than 200. A browser's EventSource fails for good
    # on these (it reconnects only after a network error or a clean end); this client tries again, so the other
    # figures stay meaningful, and a scenario decides whether any is allowed.
    refused_stream_statuses: list[int] = field(default_factory=list)
    gave_up: str | None = None

    @property
    def admitted(self) -> bool:
        return self.create_status == 202 and self.chat_id is not None

    @property
    def terminal_events(self) -> list[ReceivedEvent]:
        return [event for event in self.events if event.kind in ("done", "error")]

    @property
    def ended(self) -> str | None:
        """`done`, `error:<code>`, or None when the client never saw an end."""
        terminal = self.terminal_events
        if not terminal:
            return None
        last = terminal[-1]
        return "done" if last.kind == "done" else f"error:{last.data.get('code', '?')}"

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    def seq_problems(self) -> list[str]:
        """Duplicates and gaps in the stored events' seq (every seq must be the previous one plus one)."""
        problems, last = [], 0
        for event in self.events:
            if event.seq is None:
                continue
            if event.seq <= last:
                problems.append(f"duplicate seq {event.seq} after {last}")
            elif event.seq != last + 1:
                problems.append(f"gap: seq {event.seq} after {last}")
            last = max(last, event.seq)
        return problems

    def duplicated(self) -> bool:
        return len(self.terminal_events) > 1 or any(p.startswith("duplicate") for p in self.seq_problems())

    def judge(self) -> list[str]:
        """Every broken promise of this one admitted chat, as sentences."""
        if not self.admitted:
            return []
        problems = []
        terminal = self.terminal_events
        if not terminal:
            problems.append(f"chat {self.chat_id} never ended ({self.gave_up or 'stream ended'}; "
                            f"{len(self.events)} events, {self.reconnects} reconnects)")
        elif len(terminal) > 1:
            problems.append(f"chat {self.chat_id} has {len(terminal)} terminal events")
        if terminal and terminal[-1].kind == "error" and not terminal[-1].data.get("code"):
            problems.append(f"chat {self.chat_id} ended with an error without a code")
        if terminal and self.events[-1] is not terminal[-1]:
            problems.append(f"chat {self.chat_id} has events after its terminal event")
        for problem in self.seq_problems():
            problems.append(f"chat {self.chat_id}: {problem}")
        return problems


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


def follow_chat(base_url: str, outcome: ChatOutcome, events_url: str, deadline: float) -> None:
    """Follows the chat's events until a terminal event, reconnecting with Last-Event-ID like EventSource; bounded
    by `deadline` (time.monotonic()) and MAX_RECONNECTS."""
    parsed = urllib.parse.urlsplit(base_url)
    last_event_id: str | None = None
    while outcome.connections < MAX_RECONNECTS:
        if time.monotonic() >= deadline:
            outcome.gave_up = "deadline passed"
            return
        outcome.connections += 1
        connection_number = outcome.connections
        remaining = max(1.0, deadline - time.monotonic())
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port,
                                                timeout=min(READ_IDLE_TIMEOUT_S, remaining))
        reason = "stream ended without a terminal event"
        try:
            headers = {"accept": "text/event-stream"}
            if last_event_id is not None:
                headers["last-event-id"] = last_event_id
            connection.request("GET", events_url, headers=headers)
            response = connection.getresponse()
            if response.status != 200:
                outcome.refused_stream_statuses.append(response.status)
                body = response.read(2000).decode("utf-8", "replace")
                reason = f"HTTP {response.status}: {body[:200]}"
                if response.status in (400, 404, 410):
                    # EventSource stops on these; so does this client.
                    outcome.reconnect_reasons.append(reason)
                    outcome.gave_up = reason
                    return
            else:
                fields: dict[str, str] = {}
                while True:
                    if time.monotonic() >= deadline:
                        outcome.gave_up = "deadline passed"
                        return
                    raw = response.readline()
                    if not raw:
                        break
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line == "":
                        if "data" in fields and is_stream_interrupted(fields):
                            # Not the chat's end and not a stored event: the documented "resume with
                            # Last-Event-ID" (its id is the resume point), as the chat page treats it.
                            if fields.get("id"):
                                last_event_id = fields["id"]
                            reason = "stream_interrupted"
                            break
                        if "data" in fields:
                            event = record_event(outcome, fields, connection_number)
                            if fields.get("id"):
                                last_event_id = fields["id"]
                            if event.kind in ("done", "error"):
                                return
                        fields = {}
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    fields[name] = fields[name] + "\n" + value if name == "data" and "data" in fields else value
        except (OSError, http.client.HTTPException) as error:
            reason = f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        outcome.reconnect_reasons.append(reason)
        time.sleep(RECONNECT_DELAY_S)
    outcome.gave_up = f"{MAX_RECONNECTS} connections"


def is_stream_interrupted(fields: dict[str, str]) -> bool:
    """Whether an SSE event is the gateway's `error` with code `stream_interrupted`."""
    if fields.get("event") != "error":
        return False
    try:
        return json.loads(fields["data"]).get("code") == "stream_interrupted"
    except (ValueError, AttributeError):
        return False


def record_event(outcome: ChatOutcome, fields: dict[str, str], connection_number: int) -> ReceivedEvent:
    try:
        data = json.loads(fields["data"])
    except ValueError:
        data = {"unparsed": fields["data"]}
    kind = fields.get("event") or data.get("type", "message")
    # The stored events carry their seq in the data; `queued` has none (its `id:` is only the resume point).
    seq = data.get("seq")
    event = ReceivedEvent(kind, seq, data, connection_number)
    outcome.events.append(event)
    return event


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


# -- OpenAI-compatible streaming clients -----------------------------------------------------------------------
# A client of `POST /v1/chat/completions` with `stream: true` (an OpenAI SDK) cannot resume a stream: if the
# connection breaks, the answer is lost to it. So it must see every answer whole: chunks, a `finish_reason`, then
# `data: [DONE]`.

# The model the fault tests' stack serves (mock-llm's, chat.default_model).
OPENAI_MODEL = "mock-1"


@dataclass
class OpenAiStreamOutcome:
    """What one OpenAI-compatible streaming client saw of one request."""

    prompt: str
    created_at: float = 0.0
    # The HTTP status, or None when the connection failed before an answer.
    status: int | None = None
    seconds: float | None = None
    chunks: int = 0
    text: str = ""
    finish_reason: str | None = None
    saw_done: bool = False
    # The `{"error": ...}` object of an error chunk, or the body of a refusal.
    error: object = None
    # Why the stream ended without [DONE] (a connection error, an early end, the deadline).
    broken: str | None = None

    @property
    def admitted(self) -> bool:
        return self.status == 200

    @property
    def complete(self) -> bool:
        return self.admitted and self.saw_done and self.finish_reason is not None and self.error is None \
            and self.broken is None

    def problem(self) -> str | None:
        """Why this answer is not complete, in a few words; None when it is."""
        if self.complete:
            return None
        if self.status is None:
            return f"no answer: {self.broken}"
        if self.status != 200:
            return f"HTTP {self.status}: {str(self.error)[:120]}"
        if self.error is not None:
            return f"error chunk: {json.dumps(self.error)[:120]}"
        if self.broken is not None:
            return f"broken after {self.chunks} chunks: {self.broken}"
        if not self.saw_done:
            return f"no [DONE] after {self.chunks} chunks"
        return f"no finish_reason in {self.chunks} chunks"


def stream_openai_chat(base_url: str, prompt: str, deadline: float, model: str = OPENAI_MODEL) -> OpenAiStreamOutcome:
    """One streamed `POST /v1/chat/completions`, read to `data: [DONE]` (or an error, a broken connection, the
    deadline (time.monotonic())); no retry, as an SDK client does not resume."""
    outcome = OpenAiStreamOutcome(prompt=prompt, created_at=time.monotonic())
    parsed = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port,
                                            timeout=min(READ_IDLE_TIMEOUT_S, max(1.0, deadline - time.monotonic())))
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    try:
        connection.request("POST", "/v1/chat/completions", body=json.dumps(body),
                           headers={"content-type": "application/json", "accept": "text/event-stream"})
        response = connection.getresponse()
        outcome.status = response.status
        if response.status != 200:
            raw = response.read(4000)
            try:
                outcome.error = json.loads(raw)
            except ValueError:
                outcome.error = raw.decode("utf-8", "replace")
            return outcome
        data_lines: list[str] = []
        while True:
            if time.monotonic() >= deadline:
                outcome.broken = "deadline passed"
                return outcome
            raw = response.readline()
            if not raw:
                outcome.broken = "the stream ended without [DONE]"
                return outcome
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data:"):
                data_lines.append(line[5:].removeprefix(" "))
                continue
            if line != "" or not data_lines:
                continue  # a comment (`: queued ...`, keep-alive) or another field
            data, data_lines = "\n".join(data_lines), []
            if data == "[DONE]":
                outcome.saw_done = True
                return outcome
            try:
                chunk = json.loads(data)
            except ValueError:
                outcome.broken = f"undecodable chunk: {data[:80]}"
                return outcome
            if "error" in chunk:
                outcome.error = chunk["error"]
                continue  # the server ends the stream after it; [DONE] may or may not follow
            outcome.chunks += 1
            for choice in chunk.get("choices") or []:
                outcome.text += (choice.get("delta") or {}).get("content") or ""
                if choice.get("finish_reason"):
                    outcome.finish_reason = choice["finish_reason"]
    except (OSError, http.client.HTTPException) as error:
        outcome.broken = f"{type(error).__name__}: {error}"
        return outcome
    finally:
        outcome.seconds = time.monotonic() - outcome.created_at
        connection.close()


class OpenAiStreamingLoad:
    """`clients` threads, each sending a streamed OpenAI-compatible chat request and reading it to its end, again
    and again, until `stop()`; a request under way when `stop()` comes is read to its end (bounded)."""

    def __init__(self, base_url: str, label: str, clients: int, directive: str = "",
                 request_timeout_s: float = 45.0, pause_after_failure_s: float = 0.2):
        self.base_url = base_url
        self.label = label
        self.clients = clients
        self.directive = directive
        self.request_timeout_s = request_timeout_s
        self.pause_after_failure_s = pause_after_failure_s
        self.outcomes: list[OpenAiStreamOutcome] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "OpenAiStreamingLoad":
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"{self.label}-openai-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _client(self) -> None:
        while not self._stopping.is_set():
            outcome = stream_openai_chat(self.base_url, unique_prompt(f"{self.label}-openai", self.directive),
                                         time.monotonic() + self.request_timeout_s)
            with self._lock:
                self.outcomes.append(outcome)
            if not outcome.complete:
                self._stopping.wait(self.pause_after_failure_s)

    def stop(self) -> list[OpenAiStreamOutcome]:
        """Stops sending requests and waits (bounded) for the ones under way; returns every outcome."""
        self._stopping.set()
        deadline = time.monotonic() + self.request_timeout_s + 30
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        still = [thread.name for thread in self._threads if thread.is_alive()]
        if still:
            raise AssertionError(f"OpenAI clients still running after the bound: {still}")
        with self._lock:
            return list(self.outcomes)


def summarize_openai(outcomes: list[OpenAiStreamOutcome]) -> dict:
    """The OpenAI clients' figures: requests, admitted (200), complete (to [DONE]), and why the others were not."""
    return {
        "openai_streams": len(outcomes),
        "openai_admitted": sum(1 for outcome in outcomes if outcome.admitted),
        "openai_complete": sum(1 for outcome in outcomes if outcome.complete),
        "openai_incomplete": sum(1 for outcome in outcomes if not outcome.complete),
        "openai_problems": top_reasons([outcome.problem()] for outcome in outcomes if not outcome.complete),
    }
