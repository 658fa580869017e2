#!/usr/bin/env python3
"""End-to-end test of the real topology: the supervisor (deploy/supervisor.py) starts redis-server, mock-llm, the
dam, 2 gateways, 2 workers and nginx as separate processes (debug build, free loopback ports, a run directory of
its own; conftest.py), and every test talks to nginx the way a user would: curl -N for the browser and OpenAI
streams, the official OpenAI Python SDK, and signals for shutdown. Run it with `make test-e2e` (pytest); it needs curl,
redis-server, nginx and `pip install openai pytest`. Unit and in-process tests live in the crates, not here.

The tests run in this file's order on one stack: the last two stop a gateway, then the whole stack. Every wait is
bounded. Set E2E_KEEP_RUN_DIR=1 to keep the run directory (logs, pids, nginx.conf) after a passing run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from check_metric_coverage import check_metric_coverage  # noqa: E402 - beside this file
from local_stack import (  # noqa: E402 - the shared module lives beside the supervisor
    STOP_TIMEOUT_S,
    Stack,
    pgrep_full,
    pid_alive,
    port_is_listening,
    tail,
)

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


# ------------------------------------------------------------------------------------------------------------
# The stack under test


# ------------------------------------------------------------------------------------------------------------
# HTTP helpers: curl for streams (as the brief to users says), urllib for plain requests


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


@dataclass
class SseEvent:
    at: float
    id: str | None
    event: str
    data: str


def parse_sse(lines: list[TimedLine]) -> list[SseEvent]:
    events, fields, started = [], {}, None
    for line in lines:
        if line.text == "":
            if "data" in fields:
                events.append(SseEvent(started, fields.get("id"), fields.get("event", "message"), fields["data"]))
            fields, started = {}, None
            continue
        if line.text.startswith(":"):
            continue  # keep-alive or queue comment
        name, _, value = line.text.partition(":")
        value = value[1:] if value.startswith(" ") else value
        started = started if started is not None else line.at
        fields[name] = fields[name] + "\n" + value if name == "data" and "data" in fields else value
    if "data" in fields:
        events.append(SseEvent(started, fields.get("id"), fields.get("event", "message"), fields["data"]))
    return events


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


# ------------------------------------------------------------------------------------------------------------
# The checks


@pytest.fixture(scope="module")
def browser_text(stack: Stack) -> str:
    """The browser flow's answer; the OpenAI flows must give the same text for the same prompt."""
    return run_browser_flow(stack)


def test_browser_flow_streams_token_events_then_done_with_increasing_ids(browser_text: str) -> None:
    assert browser_text.strip()


def run_browser_flow(stack: Stack) -> str:
    body = json.dumps({"message": unique_prompt()})
    client = ["-H", f"x-forwarded-for: {client_address()}"]
    created = subprocess.run(
        ["curl", "-sS", "--max-time", "15", "-w", "\n%{http_code}", "-H", "content-type: application/json",
         *client, "-d", body, f"{stack.base_url}/api/chats"],
        capture_output=True, text=True, timeout=30,
    )
    assert created.returncode == 0, f"POST /api/chats: curl failed: {created.stderr}"
    response_body, _, status = created.stdout.rpartition("\n")
    assert status == "202", f"POST /api/chats answered {status}: {response_body}"
    chat = json.loads(response_body)
    events_url = chat["events_url"]
    assert events_url.startswith("/api/chats/"), f"unexpected events_url {events_url!r}"

    lines, _ = curl_stream(["-H", "accept: text/event-stream", *client, f"{stack.base_url}{events_url}"])
    events = parse_sse(lines)
    kinds = [event.event for event in events]
    assert kinds and kinds[-1] == "done", f"the stream must end with `done`; got {kinds}"
    assert "error" not in kinds, f"the stream carried an error: {[e.data for e in events if e.event == 'error']}"
    answer_events = [event for event in events if event.event in ("token", "done", "reset")]
    ids = [int(event.id) for event in answer_events]
    assert all(later > earlier for earlier, later in zip(ids, ids[1:])), f"SSE ids do not increase: {ids}"

    text = ""
    for event in answer_events:
        payload = json.loads(event.data)
        if event.event == "reset":
            text = ""
        elif event.event == "token":
            text += payload["text"]
    tokens = [event for event in events if event.event == "token"]
    assert len(tokens) >= 3, f"expected several token events, got {len(tokens)}: one blob is not a stream"
    assert_streamed([event.at for event in tokens] + [events[-1].at], "browser token events")
    usage = json.loads(events[-1].data)["usage"]
    assert text.strip(), "the answer is empty"
    assert usage["completion_tokens"] == len(text.split()), (
        f"done.usage.completion_tokens={usage['completion_tokens']} but the text has {len(text.split())} words"
    )
    print(f"     {len(tokens)} token events, ids {ids[0]}..{ids[-1]}, answer: {text[:60]!r}...", flush=True)
    return text


def test_openai_stream_with_curl_ends_with_done_and_matches_the_browser_flow(stack: Stack, browser_text: str) -> None:
    body = json.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": unique_prompt()}]})
    lines, _ = curl_stream(["-H", "content-type: application/json", "-H", f"x-forwarded-for: {client_address()}",
                            "-d", body, f"{stack.base_url}/v1/chat/completions"])
    data_lines = [line for line in lines if line.text.startswith("data:")]
    assert data_lines, f"no data lines in the stream: {[line.text for line in lines][:10]}"
    last = data_lines[-1].text
    assert last == "data: [DONE]", f"the stream must end with data: [DONE]; got {last!r}"
    text, content_arrivals = "", []
    for line in data_lines[:-1]:
        chunk = json.loads(line.text[len("data:"):].strip())
        assert chunk.get("object") == "chat.completion.chunk", f"not a chunk: {chunk}"
        for choice in chunk.get("choices", []):
            content = (choice.get("delta") or {}).get("content")
            if content:
                text += content
                content_arrivals.append(line.at)
    assert_streamed(content_arrivals + [data_lines[-1].at], "chat.completion.chunk lines")
    assert text == browser_text, f"curl stream text differs from the browser flow:\n{text!r}\n{browser_text!r}"
    print(f"     {len(data_lines) - 1} chunks, {len(content_arrivals)} with content", flush=True)


def openai_client(stack: Stack):
    from openai import OpenAI

    return OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", timeout=STREAM_TIMEOUT_S, max_retries=0,
                  default_headers={"x-forwarded-for": client_address()})


def test_openai_sdk_streams_and_answers_whole_like_the_browser_flow(stack: Stack, browser_text: str) -> None:
    client = openai_client(stack)
    models = [model.id for model in client.models.list()]
    assert MODEL in models, f"GET /v1/models lists {models}, not {MODEL}"

    pieces = []
    stream = client.chat.completions.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": unique_prompt()}]
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                pieces.append(choice.delta.content)
    streamed_text = "".join(pieces)
    assert len(pieces) >= 3, f"the SDK saw {len(pieces)} content chunks; expected several"
    assert streamed_text == browser_text, (
        f"SDK stream text differs from the browser flow:\n{streamed_text!r}\n{browser_text!r}"
    )

    whole = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": unique_prompt()}])
    assert whole.object == "chat.completion", f"object is {whole.object!r}"
    whole_text = whole.choices[0].message.content
    assert whole_text == streamed_text, f"non-streamed text differs from streamed:\n{whole_text!r}\n{streamed_text!r}"
    assert whole.choices[0].finish_reason, "finish_reason is missing"
    usage = whole.usage
    assert usage is not None, "a non-streamed completion must carry usage"
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage is empty: {usage}"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage does not add up: {usage}"
    print(f"     SDK: {len(pieces)} chunks streamed; whole answer usage {usage.model_dump()}", flush=True)


def test_openai_sdk_sees_bad_request_model_not_found_for_an_unknown_model(stack: Stack) -> None:
    import openai

    client = openai_client(stack)
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": PROMPT}])
    except openai.BadRequestError as error:
        assert error.status_code == 400, f"status {error.status_code}"
        assert error.code == "model_not_found", f"error code {error.code!r}, body {error.body!r}"
    else:
        raise AssertionError("an unknown model was accepted")
    try:
        client.chat.completions.create(model=MODEL, messages=[])
    except openai.BadRequestError as error:
        assert error.code, f"a 400 without a machine-readable code: {error.body!r}"
    else:
        raise AssertionError("a chat without messages was accepted")


def test_nginx_exposes_only_the_gateways_no_admin_routes_no_metrics(stack: Stack) -> None:
    status, headers, body = http_request("GET", f"{stack.base_url}/healthz")
    assert status == 200, f"GET /healthz through nginx answered {status}"

    status, headers, body = http_request("GET", f"{stack.base_url}/admin/status")
    assert status == 404, f"GET /admin/status through nginx answered {status}: {body[:200]!r}"
    assert json.loads(body)["error"]["code"] == "route_not_found", f"not the gateway's 404: {body[:200]!r}"
    assert headers.get("x-dam-reason") == "route_not_found", "the 404 did not come from a gateway"

    status, _, body = http_request("GET", f"{stack.base_url}/metrics")
    assert status == 404, f"GET /metrics through nginx answered {status}; gateway metrics must not be public"
    status, _, body = http_request("GET", f"http://127.0.0.1:{stack.ports.gateways[0]}/metrics")
    assert status == 200, f"a gateway's own /metrics answered {status}"

    # The admin service runs, on its own port only.
    status, _, _ = http_request("GET", f"http://127.0.0.1:{stack.ports.admin}/readyz")
    assert status == 200, f"dam's own /readyz answered {status}"
    config = (stack.run_dir / "nginx" / "nginx.conf").read_text()
    upstreams = sorted(set(int(port) for port in re.findall(r"server 127\.0\.0\.1:(\d+)", config)))
    assert upstreams == sorted(stack.ports.gateways), f"nginx upstreams {upstreams} are not exactly the gateways"


def test_two_clients_behind_nginx_are_told_apart_by_x_forwarded_for(stack: Stack) -> None:
    """nginx appends the peer to X-Forwarded-For and the gateway trusts loopback proxies, so two clients sending the
    same chat through nginx are two callers: each gets a chat of its own."""
    body = json.dumps({"message": unique_prompt()}).encode()
    chat_ids = []
    for client in (client_address(), client_address()):
        status, _, answer = http_request("POST", f"{stack.base_url}/api/chats", body,
                                         {"content-type": "application/json", "x-forwarded-for": client})
        assert status == 202, f"POST /api/chats for {client} answered {status}: {answer[:200]!r}"
        chat_ids.append(json.loads(answer)["id"])
    assert chat_ids[0] != chat_ids[1], f"two clients behind nginx were merged into one chat {chat_ids[0]}"


# Each request a check wants to find in nginx's access log carries a marker of its own in its query string (the
# gateway ignores queries), so the check reads its own lines only, never other checks' traffic.
_log_markers = iter(range(1, 10_000))


def log_marker(check: str) -> str:
    return f"e2e-{check}-{os.getpid()}-{next(_log_markers)}"


def access_log_upstreams(stack: Stack, markers: list[str]) -> dict[str, str]:
    """The `upstream=` field of the access log line of each marked request: a gateway's address when nginx passed
    the request on, `-` when nginx answered itself. nginx writes the line as the request ends, which can be a moment
    after the client has its answer, so this waits (bounded) for every marker."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + 10
    while True:
        access_log = (stack.run_dir / "logs" / "nginx-access.log").read_text()
        for line in access_log.splitlines():
            for marker in markers:
                if f"e2e={marker} " in line or f"e2e={marker}&" in line:
                    upstream = re.search(r"upstream=(\S+)", line)
                    found[marker] = upstream.group(1) if upstream else "?"
        if len(found) == len(markers) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = [marker for marker in markers if marker not in found]
    assert not missing, f"no access log line for {missing}"
    return found


def post_expecting_a_json_413(stack: Stack, message_bytes: int) -> str:
    """POSTs a chat whose message is `message_bytes` long, checks the JSON 413, and returns its access-log marker."""
    marker = log_marker("g")
    body = json.dumps({"message": "x" * message_bytes}).encode()
    status, _, answer = http_request("POST", f"{stack.base_url}/api/chats?e2e={marker}", body,
                                     {"content-type": "application/json", "x-forwarded-for": client_address()})
    assert status == 413, f"a {message_bytes}-byte message answered {status}"
    assert json.loads(answer)["error"]["code"] == "body_too_large", f"not a JSON 413: {answer[:200]!r}"
    return marker


def test_oversized_bodies_get_a_json_413_from_the_gateway_or_from_nginx_when_far_over(stack: Stack) -> None:
    gateway_addresses = {f"127.0.0.1:{port}" for port in stack.ports.gateways}
    # Just over the gateway's 256 KiB: nginx lets it through and the gateway answers in JSON.
    to_gateway = post_expecting_a_json_413(stack, 300 * 1024)
    # Far over: nginx stops it, in the same JSON shape.
    at_nginx = post_expecting_a_json_413(stack, 1024 * 1024)
    # Both bodies are the same JSON; the access log says who answered each.
    upstreams = access_log_upstreams(stack, [to_gateway, at_nginx])
    assert upstreams[to_gateway] in gateway_addresses, (
        f"the 300 KiB body was answered by {upstreams[to_gateway]!r}, not by a gateway {sorted(gateway_addresses)}"
    )
    assert upstreams[at_nginx] == "-", f"the 1 MiB body reached {upstreams[at_nginx]!r}; nginx must stop it"


def test_nginx_spreads_requests_over_every_gateway(stack: Stack) -> None:
    markers = [log_marker("h") for _ in range(6)]
    for marker in markers:
        status, _, _ = http_request("GET", f"{stack.base_url}/readyz?e2e={marker}")
        assert status == 200, f"GET /readyz answered {status}"
    # Only this check's own requests count: the other checks' traffic reached gateways too.
    upstreams = access_log_upstreams(stack, markers)
    used = set(int(upstream.rsplit(":", 1)[1]) for upstream in upstreams.values() if ":" in upstream)
    assert used == set(stack.ports.gateways), (
        f"this check's requests reached gateways {sorted(used)}, not all of {stack.ports.gateways}: {upstreams}"
    )


def test_every_metric_the_dashboards_and_alert_rules_use_is_exported(stack: Stack) -> None:
    # Refusals at the gate and at the edge are sent first, so the flood dashboards' series exist.
    check_metric_coverage(stack)


# The last two tests stop part of the stack, then all of it: they stay last in this file.
def test_nginx_fails_over_when_a_gateway_stops(stack: Stack) -> None:
    victim = stack.known_pids["gateway-1"]
    os.kill(victim, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while pid_alive(victim) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(victim), "gateway-1 did not stop within 20 s of SIGTERM"
    for attempt in range(6):
        status, _, body = http_request("GET", f"{stack.base_url}/readyz")
        assert status == 200, f"request {attempt + 1} after gateway-1 stopped answered {status}: {body[:200]!r}"
    client = client_address()
    chat = json.dumps({"message": unique_prompt()}).encode()
    status, _, body = http_request("POST", f"{stack.base_url}/api/chats", chat,
                                   {"content-type": "application/json", "x-forwarded-for": client})
    assert status == 202, f"a chat after gateway-1 stopped answered {status}: {body[:200]!r}"
    events_url = f"{stack.base_url}{json.loads(body)['events_url']}"
    lines, _ = curl_stream(["-H", f"x-forwarded-for: {client}", events_url])
    kinds = [event.event for event in parse_sse(lines)]
    assert kinds and kinds[-1] == "done", f"the chat after failover did not finish: {kinds}"


def test_sigint_to_the_supervisor_stops_every_process_it_started_within_the_bound(stack: Stack) -> None:
    pids = dict(stack.known_pids)
    assert pids, "no pids were recorded while the stack ran"
    started = time.monotonic()
    stack.process.send_signal(signal.SIGINT)
    try:
        code = stack.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the supervisor did not exit within {STOP_TIMEOUT_S:.0f}s of SIGINT") from None
    elapsed = time.monotonic() - started
    left = {name: pid for name, pid in pids.items() if pid_alive(pid)}
    assert not left, f"still running after the script exited: {left}"
    by_path = pgrep_full(f"{stack.run_dir}/")
    assert not by_path, f"processes naming the run directory remain: {by_path}"
    listening = [port for port in (stack.ports.public, *stack.ports.gateways, stack.ports.redis,
                                   stack.ports.mock_llm, stack.ports.admin) if port_is_listening(port)]
    assert not listening, f"ports still accept connections: {listening}"
    assert code == 0, f"the supervisor exited with {code} after SIGINT:\n{tail(stack.output(), 20)}"
    assert "every process exited" in stack.output(), "the script did not report a clean stop"
    print(f"     stopped {len(pids)} processes in {elapsed:.1f}s", flush=True)


# ------------------------------------------------------------------------------------------------------------
