"""The one reader of server-sent events in the Python tests (end to end and fault tests): fed a stream's lines one at
a time, it hands back each complete event the way a browser's EventSource reads it (comments skipped, `data` lines
joined with newlines, `event` defaulting to "message", an event without data dropped)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StreamEvent:
    id: str | None
    event: str
    data: str
    at: float | None = None  # when its first field line arrived, if the caller said


class EventStreamDecoder:
    """Feed it every line without its line ending; a blank line ends an event."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.started: float | None = None

    def feed(self, line: str, at: float | None = None) -> StreamEvent | None:
        """The event this line completes, if any."""
        if line == "":
            return self.finish()
        if line.startswith(":"):
            return None  # a comment: keep-alive, or the gateway's queue note
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if self.started is None:
            self.started = at
        if name == "data" and "data" in self.fields:
            self.fields["data"] += "\n" + value
        else:
            self.fields[name] = value
        return None

    def finish(self) -> StreamEvent | None:
        """The event in progress (at a blank line, or where the stream ended), if it has data; starts afresh."""
        fields, started = self.fields, self.started
        self.fields, self.started = {}, None
        if "data" not in fields:
            return None
        return StreamEvent(fields.get("id"), fields.get("event", "message"), fields["data"], started)


def decode_lines(lines: list[str]) -> list[StreamEvent]:
    """Every event of a whole stream's lines, the last one too when the stream ended without a blank line."""
    decoder = EventStreamDecoder()
    events = [event for event in map(decoder.feed, lines) if event is not None]
    last = decoder.finish()
    return events + [last] if last else events
