"""OpenAI-compatible streaming clients for the fault tests. A client of `POST /v1/chat/completions` with
`stream: true` (an OpenAI SDK) cannot resume a stream: if the connection breaks, the answer is lost to it. So it
must see every answer whole: chunks, a `finish_reason`, then `data: [DONE]`. One such request, a load of them on
threads, and their figures."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass

from chat_clients import top_reasons, unique_prompt
from eventsource_chat_follower import READ_IDLE_TIMEOUT_S
from event_stream import EventStreamDecoder  # tests/, put on the path by eventsource_chat_follower

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
        decoder = EventStreamDecoder()
        while True:
            if time.monotonic() >= deadline:
                outcome.broken = "deadline passed"
                return outcome
            raw = response.readline()
            if not raw:
                outcome.broken = "the stream ended without [DONE]"
                return outcome
            streamed = decoder.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if streamed is None:
                continue  # inside an event, or a comment (`: queued ...`, keep-alive)
            data = streamed.data
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
