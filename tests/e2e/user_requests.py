"""How the end-to-end tests reach the stack the way a user does: curl -N for the browser and OpenAI streams (as the
brief to users says), urllib for plain requests, the events of a stream (tests/event_stream.py), and a prompt and a caller address of their
own for each check. One module for every test file, so its counters run across the whole session."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, home of the shared event-stream reader
from event_stream import EventStreamDecoder, StreamEvent  # noqa: E402

# One mock answer streams in about a second (150 ms to the first token, 48 tokens 15 ms apart).
STREAM_TIMEOUT_S = 60
PROMPT = "End-to-end test: describe the river at dawn."
MODEL = "mock-1"
# The gateway joins a repeated identical request from the same client to the first one's chat for a few seconds,
# and behind nginx every check here is the same client. So each request tells the mock a slightly different time to
# first token: the mock strips `[[mock ...]]` directives before it picks the words, so the answer stays the same
# while every request is a chat of its own.
_prompt_variants = iter(range(1, 1000))


def unique_prompt() -> str:
    return f"{PROMPT} [[mock ttft_ms={150 + next(_prompt_variants)}]]"


# Behind nginx every request of this test comes from 127.0.0.1, one anonymous caller with a small burst allowance.
# Each check plays a user of its own instead, as real traffic would: nginx appends the peer to X-Forwarded-For and
# the gateway trusts loopback proxies, so the address sent here names the caller. (TEST-NET-1 addresses: only
# header values, never contacted.)
_client_numbers = iter(range(1, 250))


def client_address() -> str:
    return f"192.0.2.{next(_client_numbers)}"


# Tokens that arrive this far apart were streamed, not flushed as one blob at the end.
MIN_STREAM_SPREAD_S = 0.2


@dataclass
class TimedLine:
    at: float
    text: str


def curl_stream(arguments: list[str]) -> tuple[list[TimedLine], int]:
    """Runs `curl -sS -N ...`, timestamping each output line as it arrives. Bounded by curl's --max-time."""
    command = ["curl", "-sS", "-N", "--max-time", str(STREAM_TIMEOUT_S), *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    for raw in process.stdout:
        lines.append(TimedLine(time.monotonic(), raw.decode("utf-8", "replace").rstrip("\r\n")))
    stderr = process.stderr.read().decode("utf-8", "replace")
    code = process.wait(timeout=10)
    assert code == 0, f"curl exited with {code}: {stderr.strip()}"
    return lines, code


def parse_sse(lines: list[TimedLine]) -> list[StreamEvent]:
    """The events of a stream read with curl, each stamped with when its first line arrived."""
    decoder = EventStreamDecoder()
    events = [event for event in (decoder.feed(line.text, line.at) for line in lines) if event is not None]
    last = decoder.finish()
    return events + [last] if last else events


def http_request(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body bytes); HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def assert_streamed(arrivals: list[float], what: str) -> None:
    assert len(arrivals) >= 3, f"{what}: only {len(arrivals)} pieces arrived; expected several"
    spread = arrivals[-1] - arrivals[0]
    distinct = len({round(at, 2) for at in arrivals})
    assert spread >= MIN_STREAM_SPREAD_S and distinct >= 3, (
        f"{what}: {len(arrivals)} pieces arrived within {spread * 1000:.0f} ms at {distinct} distinct times; "
        "they were buffered, not streamed"
    )
