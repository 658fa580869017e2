"""The session's stack is stopped here, part then all of it: a gateway stops and nginx fails over, then SIGINT to the
supervisor stops every process it started. These tests must come after every other test that uses the stack: the
file name sorts after the other test_end_to_end files, and the `stops_the_session_stack` mark makes conftest.py
keep them after the last test that uses the stack whatever a new file is called."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from local_stack import (  # conftest.py put deploy/ on the path
    STOP_TIMEOUT_S,
    Stack,
    pgrep_full,
    pid_alive,
    port_is_listening,
    tail,
)
from user_requests import client_address, curl_stream, http_request, parse_sse, unique_prompt

pytestmark = pytest.mark.stops_the_session_stack


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
