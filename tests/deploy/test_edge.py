"""The edge (nginx) as users meet it, against real processes (deploy/run-local.sh's debug build: nginx, 2 gateways,
1 worker, started once for this module): a flood from one address is refused by the edge (429, X-Dam-Layer: edge)
while another address is served; too many requests in progress from one address are refused too; through the
container-style edge (deploy/nginx/edge-entrypoint.sh, as compose and Kubernetes run it) two client addresses get
separate limits at the gate, which one client cannot escape by sending its own X-Forwarded-For. Both edges serve
the chat page with its cache rules, and neither reaches the admin API.

Run: make test-edge (pytest; builds the debug binaries through deploy/run-local.sh). Each test is one client
address of its own, so the tests do not share a budget."""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from edge_clients import STATIC_DIR, ContainerEdge, open_stream, request, unique_prompt  # noqa: E402
from local_stack import Stack, pick_ports, running_stack  # noqa: E402 - beside the supervisor

# make run's nginx in this test: a small per-address budget, so a flood is quick to show.
EDGE_RATE_PER_SECOND = 5
EDGE_BURST = 10
EDGE_CONNECTIONS_PER_ADDRESS = 3
# The gate's anonymous tier (limits.tiers.anonymous, defaults): a burst of 5 chats, then 1 a second.
GATE_BURST = 5
FLOOD_REQUESTS = 120
START_TIMEOUT_S = float(os.environ.get("EDGE_TEST_START_TIMEOUT_S", "900"))


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest):
    run_dir = ROOT / ".run" / f"edge-{os.getpid()}-{int(time.time())}"
    stack = Stack(
        run_dir,
        pick_ports(2),
        profile="debug",
        workers=1,
        settings={
            # Only nginx (on 127.0.0.1) may name a client: every other loopback address is a client itself.
            "DAM_AUTH__TRUSTED_PROXIES": "127.0.0.1/32",
            "EDGE_RATE_PER_SECOND": str(EDGE_RATE_PER_SECOND),
            "EDGE_BURST": str(EDGE_BURST),
            "EDGE_CONNECTIONS_PER_ADDRESS": str(EDGE_CONNECTIONS_PER_ADDRESS),
        },
        start_timeout_s=START_TIMEOUT_S,
    )
    print(f"\nedge test: run dir {run_dir}; nginx on {stack.base_url}", flush=True)
    with running_stack(stack, lambda: request.session.testsfailed > 0) as started:
        yield started


@pytest.fixture(scope="module")
def container_edge(stack: Stack, request: pytest.FixtureRequest):
    edge = ContainerEdge(stack)
    try:
        edge.wait_until_listening()
        yield edge
    finally:
        if request.session.testsfailed:
            print(f"\ncontainer edge output:\n{edge.log()}", flush=True)
        edge.stop()


def test_a_flood_from_one_address_is_refused_by_the_edge_while_another_is_served(stack: Stack) -> None:
    port = stack.ports.public
    flooder = "127.0.0.2"
    # Two at a time: within the edge's requests-in-progress limit, so only the request rate is tested here.
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: request(port, "GET", "/healthz", flooder), range(FLOOD_REQUESTS)))
    refused = [answer for answer in answers if answer.status == 429]
    served = [answer for answer in answers if answer.status == 200]
    assert len(refused) + len(served) == len(answers), \
        f"answers other than 200 and 429: {[a.describe() for a in answers if a.status not in (200, 429)][:3]}"
    assert refused, f"{len(answers)} requests at once from one address: none was refused by the edge"
    assert len(served) >= EDGE_BURST, f"only {len(served)} served: the burst of {EDGE_BURST} was not honoured"
    for answer in refused:
        assert answer.headers.get("x-dam-layer") == "edge", f"a 429 not from the edge: {answer.describe()}"
        assert answer.json_code() == "rate_limited", f"the edge's 429 is not the JSON shape: {answer.describe()}"
        assert answer.headers.get("retry-after") == "1", f"no Retry-After: {answer.describe()}"
    for answer in served:
        assert answer.headers.get("x-dam-layer") == "gate", f"a gateway answer without its layer: {answer.describe()}"
    # Another address has a budget of its own.
    other = request(port, "GET", "/healthz", "127.0.0.3")
    assert other.status == 200, f"another address was refused too: {other.describe()}"


def test_too_many_requests_in_progress_from_one_address_are_refused_by_the_edge(stack: Stack) -> None:
    port = stack.ports.public
    holder = "127.0.0.4"
    # A chat that answers for about 30 s, created from another address, so only its streams count for `holder`.
    created = request(port, "POST", "/api/chats", "127.0.0.10",
                      {"message": unique_prompt("held") + " [[mock tokens=300 inter_token_ms=100]]"})
    assert created.status == 202, f"the chat was not created: {created.describe()}"
    chat = json.loads(created.body)
    streams = []
    try:
        for _ in range(EDGE_CONNECTIONS_PER_ADDRESS):
            streams.append(open_stream(port, holder, chat["events_url"]))
        one_more = request(port, "GET", "/healthz", holder)
        assert one_more.status == 429, f"request {EDGE_CONNECTIONS_PER_ADDRESS + 1} in progress: {one_more.describe()}"
        assert one_more.headers.get("x-dam-layer") == "edge", one_more.describe()
        assert one_more.json_code() == "too_many_connections", one_more.describe()
    finally:
        for connection in streams:
            connection.close()
        request(port, "DELETE", f"/api/chats/{chat['id']}", "127.0.0.10")


def test_the_container_edge_keeps_clients_apart_whatever_they_forward(container_edge: ContainerEdge) -> None:
    first, second = "127.0.0.5", "127.0.0.6"
    # The first client spends the gate's burst; the gate refuses it, by its address.
    statuses = []
    refusal = None
    for attempt in range(GATE_BURST * 4):
        answer = request(container_edge.port, "POST", "/api/chats", first,
                         {"message": unique_prompt(f"first {attempt}")})
        statuses.append(answer.status)
        if answer.status == 429:
            refusal = answer
            break
        assert answer.status == 202, f"chat {attempt + 1} of the first client: {answer.describe()}"
    assert refusal is not None, f"the gate never refused the first client: {statuses}"
    assert refusal.headers.get("x-dam-layer") == "gate", f"the refusal is not the gate's: {refusal.describe()}"
    # Past its burst, or past its active chats (the anonymous tier allows 2 at once): either way, by its address.
    assert refusal.json_code() in ("rate_limited", "too_many_active_chats"), refusal.describe()
    # Naming another client in X-Forwarded-For changes nothing: the edge's peer address is who it is.
    for spoofed in ("127.0.0.6", "192.0.2.77", "192.0.2.78, 127.0.0.6"):
        answer = request(container_edge.port, "POST", "/api/chats", first, {"message": unique_prompt("spoofed")},
                         {"x-forwarded-for": spoofed})
        assert answer.status == 429 and answer.headers.get("x-dam-layer") == "gate", \
            f"X-Forwarded-For: {spoofed} let the limited client through: {answer.describe()}"
    # The second client has its own limit.
    answer = request(container_edge.port, "POST", "/api/chats", second, {"message": unique_prompt("second")})
    assert answer.status == 202, f"the second client shares the first's limit: {answer.describe()}"


@pytest.fixture(params=["local edge", "container edge"])
def edge_port(request: pytest.FixtureRequest, stack: Stack) -> int:
    """The port of each edge in turn: make run's nginx, then the container-style one."""
    if request.param == "local edge":
        return stack.ports.public
    return request.getfixturevalue("container_edge").port


def test_nginx_serves_the_chat_page_with_its_cache_rules(edge_port: int) -> None:
    page = request(edge_port, "GET", "/", "127.0.0.7")
    assert page.status == 200 and page.headers.get("content-type", "").startswith("text/html"), page.describe()
    assert "x-dam-layer" not in page.headers, "the page came from a gateway, not from nginx's files"
    assert page.headers.get("cache-control") == "no-cache", page.describe()
    assert page.body == (STATIC_DIR / "chat.html").read_bytes(), "the page is not crates/gateway/static/chat.html"
    versioned = request(edge_port, "GET", "/static/chat.html?v=1", "127.0.0.7")
    assert versioned.status == 200, versioned.describe()
    assert "immutable" in versioned.headers.get("cache-control", ""), versioned.headers
    unversioned = request(edge_port, "GET", "/static/chat.html", "127.0.0.7")
    assert unversioned.headers.get("cache-control") == "public, max-age=3600", unversioned.headers


@pytest.mark.parametrize("path", ["/admin/status", "/admin/limits", "/metrics"])
def test_the_admin_api_and_metrics_are_not_reachable_through_the_edge(edge_port: int, path: str) -> None:
    answer = request(edge_port, "GET", path, "127.0.0.8")
    assert answer.status == 404, f"GET {path} through the edge on {edge_port}: {answer.describe()}"
