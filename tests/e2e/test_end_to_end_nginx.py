"""The edge, nginx in front of the gateways: only the gateways' public routes pass (no admin routes, no metrics),
two clients are told apart by X-Forwarded-For, a body far over the limit is stopped at nginx and one just over it
at the gateway (both in the gateway's JSON shape), and requests spread over every gateway."""

from __future__ import annotations

import json
import os
import re
import time

from local_stack import Stack  # conftest.py put deploy/ on the path
from user_requests import client_address, http_request, unique_prompt


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
