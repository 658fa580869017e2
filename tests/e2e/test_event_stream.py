"""The shared event-stream reader (tests/event_stream.py) that the end-to-end and fault tests read streams with:
the EventSource rules they rely on, without a stack."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from event_stream import EventStreamDecoder, StreamEvent, decode_lines  # noqa: E402 - tests/, beside this folder


def test_fields_make_one_event_per_blank_line_with_comments_skipped() -> None:
    lines = [": queued 3", "id: 7", "event: token", 'data: {"seq":7}', "", ": keep-alive", "data: [DONE]", ""]
    assert decode_lines(lines) == [StreamEvent("7", "token", '{"seq":7}'), StreamEvent(None, "message", "[DONE]")]


def test_data_lines_join_with_newlines_and_one_leading_space_is_dropped() -> None:
    assert decode_lines(["data:  two spaces", "data:none", ""]) == [StreamEvent(None, "message", " two spaces\nnone")]


def test_an_event_without_data_is_dropped_and_a_last_event_without_a_blank_line_is_kept() -> None:
    assert decode_lines(["id: 1", "event: ping", "", "event: done", "data: {}"]) == [
        StreamEvent(None, "done", "{}")
    ]


def test_an_event_is_stamped_with_when_its_first_field_arrived() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(": comment", at=1.0) is None
    assert decoder.feed("event: token", at=2.0) is None
    assert decoder.feed("data: x", at=3.0) is None
    assert decoder.feed("", at=4.0) == StreamEvent(None, "token", "x", 2.0)
