"""One chat's event stream followed the way a browser's EventSource follows it: reconnect after a broken or ended
stream, with `Last-Event-ID`; record every event with its `seq`, and the statuses of refused reconnects; then judge
the stream (one terminal event, last; an error has a code; no duplicate and no missing seq). chat_clients.py
creates the chats and runs the loads."""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, home of the shared event-stream reader
from event_stream import EventStreamDecoder, StreamEvent  # noqa: E402

# EventSource's reconnect delay is the server's `retry:` or a browser default of a few seconds; shorter here so a
# run takes less time, and never zero, so a dead gateway is not hammered.
RECONNECT_DELAY_S = 0.25
# A stream stays open while the chat runs; keep-alive comments arrive every sse_keep_alive_s (15 s by default).
READ_IDLE_TIMEOUT_S = 40.0
MAX_RECONNECTS = 400


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
                decoder = EventStreamDecoder()
                while True:
                    if time.monotonic() >= deadline:
                        outcome.gave_up = "deadline passed"
                        return
                    raw = response.readline()
                    if not raw:
                        break
                    streamed = decoder.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
                    if streamed is None:
                        continue
                    if streamed.id:
                        last_event_id = streamed.id
                    if is_stream_interrupted(streamed):
                        # Not the chat's end and not a stored event: the documented "resume with
                        # Last-Event-ID" (its id is the resume point), as the chat page treats it.
                        reason = "stream_interrupted"
                        break
                    event = record_event(outcome, streamed, connection_number)
                    if event.kind in ("done", "error"):
                        return
        except (OSError, http.client.HTTPException) as error:
            reason = f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        outcome.reconnect_reasons.append(reason)
        time.sleep(RECONNECT_DELAY_S)
    outcome.gave_up = f"{MAX_RECONNECTS} connections"


def is_stream_interrupted(streamed: StreamEvent) -> bool:
    """Whether an SSE event is the gateway's `error` with code `stream_interrupted`."""
    if streamed.event != "error":
        return False
    try:
        return json.loads(streamed.data).get("code") == "stream_interrupted"
    except (ValueError, AttributeError):
        return False


def record_event(outcome: ChatOutcome, streamed: StreamEvent, connection_number: int) -> ReceivedEvent:
    try:
        data = json.loads(streamed.data)
    except ValueError:
        data = {"unparsed": streamed.data}
    # An event that names no type (EventSource's "message") takes the type its data names, if any.
    kind = streamed.event if streamed.event != "message" else data.get("type", "message")
    # The stored events carry their seq in the data; `queued` has none (its `id:` is only the resume point).
    seq = data.get("seq")
    event = ReceivedEvent(kind, seq, data, connection_number)
    outcome.events.append(event)
    return event
