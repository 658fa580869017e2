"""Fault test 7, hostile HTTP: a catalogue of hostile requests against nginx and against a gateway's own port, each
with the answer docs/api.md, the gateway's HTTP server (`http1_head.rs`, `http1_connection.rs`) or the nginx
template documents, while a few legitimate users chat in the background; at the end every one of their chats must
have completed intact (seq 1..n, no gap, exactly one terminal event, `done`). Run alone with
`python3 tests/chaos/scenario_hostile_http.py [--long]`; the runner calls `run(long)`."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_stack import ChaosStack, ScenarioResult, run_scenario_alone, start_chaos_stack  # noqa: E402
from hostile_http_client import (  # noqa: E402
    FollowedChat,
    RawAnswer,
    child_pids,
    follow_chat,
    one_token_chat,
    open_socket,
    parse_answer,
    raw_exchange,
    read_until_end,
    request,
    request_bytes,
    total_open_fds,
    total_rss_kib,
    watch_until_server_closes,
)

DESCRIPTION = "hostile HTTP: malformed, oversized, smuggled, slow and spoofed requests; other users untouched"

# The gateway's limits as this stack runs them; the catalogue's expectations are computed from these.
HEADER_READ_TIMEOUT_S = 4.0
BODY_READ_TIMEOUT_S = 4.0
RESPONSE_WRITE_TIMEOUT_S = 5.0
MAX_BODY_BYTES = 256 * 1024
MAX_HEADER_BYTES = 16 * 1024
# nginx's client_header_timeout (deploy/nginx/nginx.conf.template).
NGINX_HEADER_TIMEOUT_S = 15.0
# The anonymous tier as shipped (crates/protocol/src/limits.rs), so the spoofing case has a limit to escape.
ANONYMOUS_RATE_PER_SECOND = 1.0
ANONYMOUS_BURST = 5
# Slack over a server-side timeout before a connection that is still open counts as not closed: scheduling on a
# loaded 2-core machine, and the one-second step of the dribbling client.
CLOSE_SLACK_S = 6.0
# A stalled stream's answer (about 1.4 MB of events): far more than a stingy client's connection to a gateway
# holds (about 200 KB), so the gateway's writes must stall.
STALLED_ANSWER_TOKENS = 150_000
# nginx's send_timeout towards a client (deploy/nginx/nginx.conf.template).
NGINX_SEND_TIMEOUT_S = 60.0
# What a stalled stream may leave behind in the gateways' resident memory once it is closed.
MAX_RSS_GROWTH_MIB = 64

SETTINGS = {
    # Only nginx's own address vouches for X-Forwarded-For: the scenario's clients speak from 127.0.0.2 and up,
    # which then stand for outside addresses (with the default 127.0.0.0/8 every loopback client is a trusted
    # proxy and may name any identity, which is right only for proxies).
    "DAM_AUTH__TRUSTED_PROXIES": "127.0.0.1/32",
    "DAM_GATEWAY__HEADER_READ_TIMEOUT_MS": str(int(HEADER_READ_TIMEOUT_S * 1000)),
    "DAM_GATEWAY__RESPONSE_WRITE_TIMEOUT_MS": str(int(RESPONSE_WRITE_TIMEOUT_S * 1000)),
    "DAM_GATEWAY__BODY_READ_TIMEOUT_MS": str(int(BODY_READ_TIMEOUT_S * 1000)),
    "DAM_CHAT__MAX_TOKENS_LIMIT": str(STALLED_ANSWER_TOKENS + 1000),
    "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": str(ANONYMOUS_RATE_PER_SECOND),
    "DAM_LIMITS__TIERS__ANONYMOUS__BURST": str(ANONYMOUS_BURST),
    "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "2",
}


# ------------------------------------------------------------------------------------------------------------
# Callers: each loopback address is one anonymous caller


class SourceAddresses:
    """Hands out a fresh loopback source address (127.0.0.x, then 127.0.1.x, ...) to each caller of the run."""

    def __init__(self):
        self._next = 2
        self._lock = threading.Lock()

    def take(self) -> str:
        with self._lock:
            number = self._next
            self._next += 1
        return f"127.0.{number // 250}.{number % 250 + 2}"


# ------------------------------------------------------------------------------------------------------------
# The catalogue's bookkeeping


@dataclass
class CaseOutcome:
    name: str
    target: str
    expected: str
    observed: str
    passed: bool


@dataclass
class Catalogue:
    outcomes: list[CaseOutcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, name: str, target: str, expected: str, observed: str, passed: bool) -> None:
        with self.lock:
            self.outcomes.append(CaseOutcome(name, target, expected, observed, passed))
        mark = "ok  " if passed else "FAIL"
        print(f"    {mark} [{target}] {name}: expected {expected}; got {observed}", flush=True)

    def guarded(self, name: str, target: str, function) -> None:
        """Runs one case function; a crash of the case is that case's failure, never the whole scenario's."""
        try:
            function()
        except Exception as error:  # noqa: BLE001 - a crashing case is a failed case
            self.record(name, target, "the case to run", f"{type(error).__name__}: {error}", False)


def refused(answer: RawAnswer, status: int, code: str, edge_allowed: bool) -> tuple[bool, str]:
    """Whether `answer` is the JSON refusal `status`/`code`; from nginx itself (`X-Dam-Layer: edge`, set on
    every answer nginx makes) only when `edge_allowed`. Returns (passed, what was observed)."""
    by_edge = answer.headers.get("x-dam-layer") == "edge"
    observed = answer.summary() + (" from nginx" if by_edge else "")
    passed = answer.status == status and answer.json_code() == code and answer.is_json()
    if by_edge and not edge_allowed:
        passed = False
    return passed, observed


# ------------------------------------------------------------------------------------------------------------
# Cases: bodies


# Bodies nginx passes on and the gateway refuses with a 400: name -> (body, content type, the error's code).
UNREADABLE_BODIES = {
    "malformed JSON": (b'{"message": "unterminated', "application/json", "invalid_json"),
    "non-UTF-8 body": (b'{"message": "caf\xe9 \xff\xfe\xc3("}', "application/json", "invalid_json"),
    "binary body": (b"\x00\x01\x02\x03binary\xff", "application/json", "invalid_json"),
    "JSON of the wrong shape": (b'[{"message": "an array, not an object"}]', "application/json", "invalid_field"),
    "form-encoded body": (b"message=hello+there", "application/x-www-form-urlencoded", "invalid_json"),
}


def body_cases(catalogue: Catalogue, targets: dict[str, int], sources: SourceAddresses) -> None:
    for target, port in targets.items():
        via_nginx = target == "nginx"

        def post(body: bytes, content_type: str = "application/json", port: int = port) -> RawAnswer:
            headers = {"Content-Type": content_type}
            return raw_exchange(port, request_bytes("POST", "/api/chats", body, headers), sources.take())

        # Just over the gateway's limit: nginx's own limit is above it, so the gateway answers even behind nginx.
        answer = post(b'{"message": "' + b"x" * (MAX_BODY_BYTES + 20_000) + b'"}')
        passed, observed = refused(answer, 413, "body_too_large", edge_allowed=False)
        catalogue.record("body just over gateway.max_body_bytes", target, "413 body_too_large from the gateway",
                         observed, passed)
        # Far over: behind nginx the edge refuses first, in the same shape, and says it did.
        answer = post(b'{"message": "' + b"x" * (1024 * 1024) + b'"}')
        passed, observed = refused(answer, 413, "body_too_large", edge_allowed=via_nginx)
        if via_nginx and answer.headers.get("x-dam-layer") != "edge":
            passed, observed = False, observed + " (expected nginx to refuse it first)"
        catalogue.record("1 MiB body", target,
                         "413 body_too_large from nginx" if via_nginx else "413 body_too_large from the gateway",
                         observed, passed)
        # A Content-Length far over the limit with no body sent: refused on the head, no waiting for the body.
        head = b"POST /api/chats HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        answer = raw_exchange(port, head, sources.take())
        passed, observed = refused(answer, 413, "body_too_large", edge_allowed=via_nginx)
        catalogue.record("Content-Length 1 GB, no body", target, "413 body_too_large at once", observed, passed)

        for name, (body, content_type, code) in UNREADABLE_BODIES.items():
            passed, observed = refused(post(body, content_type), 400, code, edge_allowed=False)
            catalogue.record(name, target, f"400 {code}", observed, passed)
        # json_body.rs: any content type is accepted (so `curl -d` works); only the body has to be JSON.
        answer = post(json.dumps(one_token_chat("hostile catalogue: text/plain")).encode(), "text/plain")
        catalogue.record("JSON body labelled text/plain", target, "202 (documented: any content type is accepted)",
                         answer.summary(), answer.status == 202)


# ------------------------------------------------------------------------------------------------------------
# Cases: heads (size, injection, smuggling)


def head_cases(catalogue: Catalogue, targets: dict[str, int], sources: SourceAddresses) -> None:
    for target, port in targets.items():
        via_nginx = target == "nginx"

        def send(head: bytes, port: int = port) -> RawAnswer:
            return raw_exchange(port, head, sources.take())

        many = b"".join(b"X-Filler-%d: %s\r\n" % (index, b"f" * 200) for index in range(90))
        answer = send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + many + b"Connection: close\r\n\r\n")
        passed, observed = refused(answer, 431, "headers_too_large", edge_allowed=False)
        catalogue.record("18 KB of headers in 90 lines", target, "431 headers_too_large from the gateway",
                         observed, passed)
        lines = b"".join(b"X-H-%d: v\r\n" % index for index in range(120))
        answer = send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + lines + b"Connection: close\r\n\r\n")
        passed, observed = refused(answer, 431, "headers_too_large", edge_allowed=False)
        catalogue.record("120 header lines", target, "431 headers_too_large", observed, passed)
        # One line longer than nginx's 8 KiB header buffer (and, sent directly, than the gateway's whole limit).
        size = 10_000 if via_nginx else MAX_HEADER_BYTES + 4_000
        answer = send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * size + b"\r\nConnection: close\r\n\r\n")
        passed, observed = refused(answer, 431, "headers_too_large", edge_allowed=via_nginx)
        catalogue.record(f"one {size}-byte header line", target, "431 headers_too_large", observed, passed)
        answer = send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Huge: " + b"h" * 1_000_000 + b"\r\n\r\n")
        passed, observed = refused(answer, 431, "headers_too_large", edge_allowed=via_nginx)
        catalogue.record("a 1 MB header line", target, "431 headers_too_large", observed, passed)

        malformed = {
            "bare CR inside a header value": b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: b\rX-Injected: 1\r\n\r\n",
            "NUL inside a header value": b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
            "obsolete line folding": b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            "space before the colon": b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
            "CR/LF in the request target": b"GET /healthz\r\nX-Injected: 1 HTTP/1.1\r\nHost: a\r\n\r\n",
            "duplicate Content-Length, different values":
                b"POST /api/chats HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n"
                b'{"a"',
            "Transfer-Encoding and Content-Length (CL.TE)":
                b"POST /api/chats HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nG",
            "Content-Length and Transfer-Encoding (TE.CL)":
                b"POST /api/chats HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
                b"8\r\nSMUGGLED\r\n0\r\n\r\n",
            "Transfer-Encoding: gzip, chunked":
                b"POST /api/chats HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding with a space before the colon":
                b"POST /api/chats HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n"
                b"0\r\n\r\n",
            "Transfer-Encoding: chunked in HTTP/1.0":
                b"POST /api/chats HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Content-Length with a sign": b"POST /api/chats HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n{}{}",
            "an invalid chunk size":
                b"POST /api/chats HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        }
        for name, head in malformed.items():
            # What follows the refused request on the same connection would be a smuggled second request: it
            # must never be answered, so the refusal closes the connection.
            smuggled = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
            answer = send(head + smuggled)
            passed, observed = refused(answer, 400, "malformed_request", edge_allowed=via_nginx)
            if via_nginx and name == "CR/LF in the request target" and answer.status is None:
                # nginx reads `GET /healthz` alone as an HTTP/0.9 request: the lines after it are never read as
                # headers, and the answer is a bare body with no status line. Nothing was injected.
                passed = answer.closed and answer.raw.startswith(b"{")
                observed = f"an HTTP/0.9 answer, a bare body {answer.raw[:40]!r}: the next lines were not read"
            if answer.status is not None and answer.headers.get("connection", "").lower() != "close":
                passed, observed = False, observed + ", connection kept open"
            if answer.body.count(b"HTTP/1.1 200") > 0:
                passed, observed = False, observed + ", and the smuggled request was answered"
            expected = "400 malformed_request, connection closed"
            if via_nginx and name == "CR/LF in the request target":
                expected += ", or an HTTP/0.9 answer that reads no header"
            catalogue.record(name, target, expected, observed, passed)


# ------------------------------------------------------------------------------------------------------------
# Cases: paths


TRAVERSALS = [
    "/../etc/passwd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/static/..%2f..%2fetc/passwd",
    "/static/../../Cargo.toml",
    "/static/%2e%2e/%2e%2e/Cargo.toml",
    "/..%5c..%5cetc/passwd",
    "//etc/passwd",
    "/api/chats/..%2f..%2fetc%2fpasswd/events",
    "/./././Cargo.toml",
]
# What a served file would contain: /etc/passwd, the workspace manifest.
LEAK_MARKERS = (b"root:", b"[workspace]")


def path_cases(catalogue: Catalogue, targets: dict[str, int], sources: SourceAddresses) -> None:
    for target, port in targets.items():
        for path in TRAVERSALS:
            answer = raw_exchange(port, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode(),
                                  sources.take())
            leaked = any(marker in answer.body for marker in LEAK_MARKERS)
            code = answer.json_code()
            passed = answer.status in (400, 404) and code in ("route_not_found", "malformed_request", "chat_not_found")
            passed = passed and not leaked
            observed = answer.summary() + (" LEAKED A FILE" if leaked else "")
            catalogue.record(f"traversal {path}", target, "404 route_not_found or 400 malformed_request, no file",
                             observed, passed)


ADMIN_PATHS = [
    ("GET", "/admin/status"),
    ("GET", "/admin/keys"),
    ("PUT", "/admin/keys/hostile-key-0123456789abcdef"),
    ("POST", "/admin/intake/pause"),
    ("POST", "/admin/dead-letters/replay"),
    ("POST", "/admin/blocks"),
    ("GET", "/api/admin"),
    ("GET", "/api/admin/status"),
    ("GET", "/dam/admin/status"),
    ("GET", "/ADMIN/status"),
    ("GET", "/%61dmin/status"),
    ("GET", "/v1/../admin/status"),
    ("GET", "/admin/status?token=x"),
    ("GET", "/metrics"),
    # The nginx template's internal error locations are not reachable from outside either.
    ("GET", "/.dam-edge/malformed_request"),
]


def admin_cases(catalogue: Catalogue, stack: ChaosStack, public_port: int, sources: SourceAddresses) -> None:
    admin_port = stack.admin_port
    for method, path in ADMIN_PATHS:
        body = b'{"tier":"premium"}' if method in ("PUT", "POST") else b""
        head = request_bytes(method, path, body, {"Content-Type": "application/json"})
        answer = raw_exchange(public_port, head, sources.take())
        code = answer.json_code()
        passed = (answer.status, code) in ((404, "route_not_found"), (400, "malformed_request"), (405, "method_not_allowed"))
        catalogue.record(f"{method} {path}", "nginx", "404 route_not_found (or 400 for a traversal), never the dam",
                         answer.summary(), passed)
    # Never reaching the dam: the changes asked for above did not happen.
    status = request(admin_port, "GET", "/admin/status", source="127.0.0.1")
    keys = request(admin_port, "GET", "/admin/keys", source="127.0.0.1")
    paused = (status.json() or {}).get("intake", {}).get("paused")
    key_count = len((keys.json() or {}).get("keys", []))
    catalogue.record("admin changes sent through nginx took no effect", "dam",
                     "intake not paused, no key created", f"paused={paused}, keys={key_count}",
                     paused is False and key_count == 0)


# ------------------------------------------------------------------------------------------------------------
# Cases: identity and idempotency


def spoofing_cases(catalogue: Catalogue, targets: dict[str, int], sources: SourceAddresses, long: bool) -> None:
    """A burst from one client, each request naming a different client in X-Forwarded-For (and X-Real-IP): it is
    still one caller, so at most burst + rate x elapsed of it is admitted."""
    attempts = 60 if long else 25
    for target, port in targets.items():
        source = sources.take()
        admitted, rejected, other = 0, {}, []
        started = time.monotonic()
        for index in range(attempts):
            spoofed = random.choice([
                f"198.51.100.{random.randrange(1, 255)}",
                f"203.0.113.{random.randrange(1, 255)}, 127.0.0.1",
                "127.0.0.1",
                f"2001:db8::{random.randrange(1, 65535):x}",
                f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}",
            ])
            answer = request(port, "POST", "/api/chats", one_token_chat(f"hostile catalogue: spoof {index}"),
                             {"X-Forwarded-For": spoofed, "X-Real-IP": spoofed.split(",")[0], "Forwarded": f"for={spoofed.split(',')[0]}"},
                             source)
            if answer.status == 202:
                admitted += 1
            elif answer.status == 429:
                rejected[answer.json_code()] = rejected.get(answer.json_code(), 0) + 1
            else:
                other.append(answer.status)
        elapsed = time.monotonic() - started
        bound = ANONYMOUS_BURST + ANONYMOUS_RATE_PER_SECOND * elapsed
        passed = admitted <= bound and not other and sum(rejected.values()) > 0
        catalogue.record(f"{attempts} chats with random X-Forwarded-For from one client", target,
                         f"limited as one caller: admitted <= {bound:.1f} (burst + rate x {elapsed:.1f}s)",
                         f"admitted {admitted}, refused {rejected}, other statuses {other}", passed)


def idempotency_cases(catalogue: Catalogue, port: int, sources: SourceAddresses) -> None:
    owner, stranger = sources.take(), sources.take()
    key = f"hostile-{uuid.uuid4()}"
    body = one_token_chat("hostile catalogue: idempotent")
    first = request(port, "POST", "/api/chats", body, {"Idempotency-Key": key}, owner)
    first_id = (first.json() or {}).get("id")
    catalogue.record("a fresh Idempotency-Key", "nginx", "202, a new chat",
                     f"{first.status} joined={(first.json() or {}).get('joined')}",
                     first.status == 202 and (first.json() or {}).get("joined") is False)
    again = request(port, "POST", "/api/chats", body, {"Idempotency-Key": key}, owner)
    again_body = again.json() or {}
    catalogue.record("the same key and body again", "nginx", "202 joined the first chat",
                     f"{again.status} joined={again_body.get('joined')} same id={again_body.get('id') == first_id}",
                     again.status == 202 and again_body.get("joined") is True and again_body.get("id") == first_id)
    forged = request(port, "POST", "/api/chats", body, {"Idempotency-Key": key}, stranger)
    forged_body = forged.json() or {}
    catalogue.record("another caller presenting the same key and body", "nginx",
                     "202, a chat of its own (keys are per caller)",
                     f"{forged.status} joined={forged_body.get('joined')} same id={forged_body.get('id') == first_id}",
                     forged.status == 202 and forged_body.get("id") not in (None, first_id))
    randoms = [request(port, "POST", "/api/chats", one_token_chat("hostile catalogue: random key"),
                       {"Idempotency-Key": f"random-{uuid.uuid4()}"}, sources.take()) for _ in range(3)]
    joined = [answer.json().get("joined") for answer in randoms if answer.status == 202]
    catalogue.record("random keys never seen before", "nginx", "202 each, joining nothing",
                     f"statuses {[answer.status for answer in randoms]}, joined {joined}",
                     all(answer.status == 202 for answer in randoms) and joined == [False] * 3)
    reused = request(port, "POST", "/api/chats", one_token_chat("hostile catalogue: a different body"),
                     {"Idempotency-Key": key}, owner)
    reused_body = reused.json() or {}
    catalogue.record("the same key with a different body", "nginx", "422 idempotency_key_reused",
                     f"{reused.status} code={reused.json_code()} joined={reused_body.get('joined')}",
                     reused.status == 422 and reused.json_code() == "idempotency_key_reused")


# ------------------------------------------------------------------------------------------------------------
# Cases: slow and idle clients


def slowloris_case(catalogue: Catalogue, target: str, port: int, header_timeout_s: float, count: int,
                   sources: SourceAddresses, probe_port: int) -> None:
    """`count` connections from one address, each sending its head one byte a second: every one must be closed by
    the server within its header timeout (plus slack), while other callers are still served."""
    source = sources.take()
    connections = []
    for _ in range(count):
        connection = open_socket(port, source, 5.0)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        connection.setblocking(False)
        connections.append(connection)
    started = time.monotonic()
    closed_at: dict[int, float] = {}
    served_meanwhile = None
    bound = header_timeout_s + CLOSE_SLACK_S
    while len(closed_at) < count and time.monotonic() - started < bound:
        for index, connection in enumerate(connections):
            if index in closed_at:
                continue
            try:
                # EOF, or any answer at all (a 408): the server gave up on this head.
                connection.recv(4096)
                closed_at[index] = time.monotonic() - started
                continue
            except BlockingIOError:
                pass
            except OSError:
                closed_at[index] = time.monotonic() - started
                continue
            try:
                connection.send(b"x")
            except BlockingIOError:
                pass
            except OSError:
                closed_at[index] = time.monotonic() - started
        if served_meanwhile is None and time.monotonic() - started > 1.5:
            served_meanwhile = request(probe_port, "GET", "/healthz", source=sources.take()).status
        time.sleep(1.0)
    for connection in connections:
        connection.close()
    latest = max(closed_at.values()) if closed_at else None
    catalogue.record(
        f"slowloris: {count} heads dribbled one byte a second", target,
        f"all closed within the header timeout ({header_timeout_s:.0f}s + {CLOSE_SLACK_S:.0f}s slack); others served",
        f"{len(closed_at)}/{count} closed, the last after {latest if latest is None else round(latest, 1)}s; "
        f"a request meanwhile got {served_meanwhile}",
        len(closed_at) == count and served_meanwhile == 200)


def slow_body_case(catalogue: Catalogue, port: int, sources: SourceAddresses) -> None:
    """A complete head, then a body dribbled one byte a second: the gateway answers 408 request_timeout once its
    body timeout has passed. (Only against a gateway: nginx's client_body_timeout is a limit between two reads,
    so nginx takes a dribbled body, however slow, and forwards it whole.)"""
    connection = open_socket(port, sources.take(), 5.0)
    connection.sendall(b"POST /api/chats HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 200\r\n\r\n{")
    connection.setblocking(False)
    started = time.monotonic()
    received = b""
    ended = False
    while time.monotonic() - started < BODY_READ_TIMEOUT_S + CLOSE_SLACK_S and not ended:
        try:
            chunk = connection.recv(4096)
            received += chunk
            ended = not chunk or b"\r\n\r\n" in received
        except BlockingIOError:
            pass
        except OSError:
            ended = True
        if not ended:
            try:
                connection.send(b" ")
            except OSError:
                pass
            time.sleep(1.0)
    elapsed = time.monotonic() - started
    connection.close()
    answer = RawAnswer()
    parse_answer(received, answer)
    passed, observed = refused(answer, 408, "request_timeout", edge_allowed=False)
    catalogue.record("a body dribbled one byte a second", "gateway-1",
                     f"408 request_timeout after the body timeout ({BODY_READ_TIMEOUT_S:.0f}s)",
                     f"{observed} after {elapsed:.1f}s", passed)


def idle_connections_case(catalogue: Catalogue, stack: ChaosStack, target: str, port: int, count: int,
                          sources: SourceAddresses, holders: list[int], public_port: int) -> None:
    """`count` idle connections from one address: other callers are still served (a chat completes) while they
    are open, and the servers' file descriptors come back once they are closed."""
    before = total_open_fds(holders)
    source = sources.take()
    connections = []
    opened_error = ""
    for _ in range(count):
        try:
            connections.append(open_socket(port, source, 5.0))
        except OSError as error:
            opened_error = f"{type(error).__name__}: {error}"
            break
    time.sleep(0.5)
    during = total_open_fds(holders)
    health = request(port, "GET", "/healthz", source=sources.take()).status
    chat = follow_chat(public_port, {"message": f"while idle connections are held {uuid.uuid4()} [[mock tokens=5]]"},
                       sources.take(), timeout_s=60)
    for connection in connections:
        connection.close()
    deadline = time.monotonic() + 15
    after = total_open_fds(holders)
    while after > before + 30 and time.monotonic() < deadline:
        time.sleep(0.5)
        after = total_open_fds(holders)
    problem = chat.intact()
    catalogue.record(
        f"{count} idle connections from one address", target,
        "others served (healthz 200, a chat intact); descriptors released after",
        f"opened {len(connections)}{' (' + opened_error + ')' if opened_error else ''}; fds {before} -> {during} -> "
        f"{after}; healthz {health}; chat {problem or 'intact'}",
        len(connections) == count and health == 200 and problem is None and after <= before + 30)


def stalled_reader_case(catalogue: Catalogue, target: str, port: int, gateway_pids: list[int],
                        sources: SourceAddresses) -> None:
    """A client opens the event stream of a long answer on a gateway and never reads it: the gateway's write
    timeout must cut the stream (its end of the connection leaves ESTABLISHED) before the answer's `done`, and
    the gateway's memory comes back to where it was."""
    source = sources.take()
    prompt = f"stalled reader {uuid.uuid4()} [[mock tokens={STALLED_ANSWER_TOKENS} ttft_ms=0 inter_token_ms=0]]"
    created = request(port, "POST", "/api/chats", {"message": prompt, "max_tokens": STALLED_ANSWER_TOKENS},
                      source=source)
    if created.status != 202:
        catalogue.record("a reader that never reads", target, "a chat to stall on", created.summary(), False)
        return
    events_url = created.json()["events_url"]
    rss_before = total_rss_kib(gateway_pids)
    connection = open_socket(port, source, 5.0, stingy=True)
    client_address = connection.getsockname()
    connection.sendall(f"GET {events_url} HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n".encode())
    # Not reading at all: the windows fill, the gateway's writes stall, and after its timeout it closes its side.
    closing_timeout_s = RESPONSE_WRITE_TIMEOUT_S
    # Filling the buffers takes seconds of answer (the debug build's worker writes about 60 KB of events a second).
    bound_s = closing_timeout_s + 30 + CLOSE_SLACK_S
    watch = watch_until_server_closes(port, client_address, bound_s, gateway_pids, rss_before)
    # Now read everything that was sent: it must end (EOF or reset) without the answer's `done`.
    received, ended = read_until_end(connection)
    saw_done = b"event: done" in received
    connection.close()
    time.sleep(1.0)
    rss_after = total_rss_kib(gateway_pids)
    growth_mib = (rss_after - rss_before) / 1024
    passed = watch.closed_after_s is not None and ended and not saw_done and growth_mib < MAX_RSS_GROWTH_MIB
    catalogue.record(
        "a reader that never reads its event stream", target,
        f"closed by the gateway's write timeout ({closing_timeout_s:.0f}s once stalled), before the answer's end; "
        "gateway memory back "
        f"within {MAX_RSS_GROWTH_MIB} MiB",
        watch.summary()
        + f"; {len(received) / 1e3:.0f} KB delivered then {'end' if ended else 'no end'}, done "
        f"{'seen' if saw_done else 'not seen'}; gateway RSS {rss_before / 1024:.0f} -> "
        f"peak {watch.peak_rss_kib / 1024:.0f} -> {rss_after / 1024:.0f} MiB",
        passed)


def stalled_pipeline_case(catalogue: Catalogue, port: int, nginx_pids: list[int], sources: SourceAddresses,
                          count: int) -> None:
    """Through nginx a stalled event stream costs the gateway nothing: nginx takes the answer into its socket's send
    buffer, which the kernel grows up to 4 MiB (a 1.4 MB answer was taken whole), so the gateway's writes never
    stall. What holds nginx's side is its send_timeout. A client that pipelines `count` requests for the chat
    page and never reads an answer makes nginx's writes stall: nginx must close it within send_timeout (60 s),
    and its workers' memory must come back."""
    source = sources.take()
    rss_before = total_rss_kib(nginx_pids)
    connection = open_socket(port, source, 5.0, stingy=True)
    client_address = connection.getsockname()
    sent = 0
    try:
        for _ in range(count):
            connection.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            sent += 1
    except OSError:
        pass  # nginx stopped reading requests once its writes stalled: what was sent is enough
    bound_s = NGINX_SEND_TIMEOUT_S + 30 + CLOSE_SLACK_S
    watch = watch_until_server_closes(port, client_address, bound_s, nginx_pids, rss_before)
    received, ended = read_until_end(connection)
    connection.close()
    answers = received.count(b"HTTP/1.1 200")
    rss_after = total_rss_kib(nginx_pids)
    catalogue.record(
        f"{count} pipelined requests whose answers are never read", "nginx",
        f"closed by nginx's send_timeout ({NGINX_SEND_TIMEOUT_S:.0f}s once stalled) before every answer went out; "
        f"nginx memory back within {MAX_RSS_GROWTH_MIB} MiB",
        f"sent {sent}; {watch.summary()}"
        + f"; {answers} answers ({len(received) / 1e6:.1f} MB) delivered then {'end' if ended else 'no end'}; "
        f"nginx RSS {rss_before / 1024:.0f} -> peak {watch.peak_rss_kib / 1024:.0f} -> {rss_after / 1024:.0f} MiB",
        watch.closed_after_s is not None and ended and answers < sent
        and (rss_after - rss_before) / 1024 < MAX_RSS_GROWTH_MIB)


# ------------------------------------------------------------------------------------------------------------
# Background users


class BackgroundUsers:
    """A few users, each on its own address, chatting through nginx one chat after another until told to stop."""

    def __init__(self, public_port: int, sources: SourceAddresses, count: int):
        self.public_port = public_port
        self.chats: list[FollowedChat] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._chat_until_stopped, args=(sources.take(),), daemon=True)
                        for _ in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _chat_until_stopped(self, source: str) -> None:
        for number in range(1000):
            if self.stopping.is_set():
                return
            body = {"message": f"background user {source} chat {number} {uuid.uuid4()} "
                               "[[mock tokens=120 inter_token_ms=25]]"}
            chat = follow_chat(self.public_port, body, source, timeout_s=90)
            with self.lock:
                self.chats.append(chat)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)


# ------------------------------------------------------------------------------------------------------------
# The scenario


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("hostile_http")
    with start_chaos_stack("hostile_http", gateways=2, workers=2, settings=SETTINGS) as stack:
        run_catalogue(stack, long, result)
    return result


def run_catalogue(stack: ChaosStack, long: bool, result: ScenarioResult) -> None:
    public_port = stack.public_port
    gateway_ports = [stack.gateway_port(index) for index in (1, 2)]
    gateway_pids = [stack.pid("gateway-1"), stack.pid("gateway-2")]
    nginx_pids = [stack.pid("nginx"), *child_pids(stack.pid("nginx"))]
    targets = {"nginx": public_port, "gateway-1": gateway_ports[0]}
    sources = SourceAddresses()
    catalogue = Catalogue()

    users = BackgroundUsers(public_port, sources, count=8 if long else 4)
    users.start()
    started = time.monotonic()

    # Slow cases run beside the quick ones, each on its own thread, so the catalogue takes about as long as its
    # slowest case (nginx's 15 s header timeout).
    slow_cases = [
        ("slowloris gateway", "gateway-2", lambda: slowloris_case(
            catalogue, "gateway-2", gateway_ports[1], HEADER_READ_TIMEOUT_S, 200 if long else 20, sources,
            gateway_ports[1])),
        ("slowloris nginx", "nginx", lambda: slowloris_case(
            catalogue, "nginx", public_port, NGINX_HEADER_TIMEOUT_S, 200 if long else 20, sources, public_port)),
        ("slow body gateway", "gateway-1", lambda: slow_body_case(catalogue, gateway_ports[0], sources)),
        ("stalled reader gateway", "gateway-1", lambda: stalled_reader_case(
            catalogue, "gateway-1", gateway_ports[0], [gateway_pids[0]], sources)),
    ]
    if long:
        # nginx holds a stalled client for its send_timeout (60 s): too long for the smoke run.
        slow_cases.append(("stalled pipeline nginx", "nginx", lambda: stalled_pipeline_case(
            catalogue, public_port, nginx_pids, sources, count=2000)))
    threads = [threading.Thread(target=catalogue.guarded, args=(name, target, function), daemon=True)
               for name, target, function in slow_cases]
    for thread in threads:
        thread.start()

    catalogue.guarded("bodies", "both", lambda: body_cases(catalogue, targets, sources))
    catalogue.guarded("heads", "both", lambda: head_cases(catalogue, targets, sources))
    catalogue.guarded("paths", "both", lambda: path_cases(catalogue, targets, sources))
    catalogue.guarded("admin", "nginx", lambda: admin_cases(catalogue, stack, public_port, sources))
    catalogue.guarded("spoofing", "both", lambda: spoofing_cases(catalogue, targets, sources, long))
    catalogue.guarded("idempotency", "nginx", lambda: idempotency_cases(catalogue, public_port, sources))
    idle_count = 8000 if long else 2000
    catalogue.guarded("idle nginx", "nginx", lambda: idle_connections_case(
        catalogue, stack, "nginx", public_port, idle_count, sources, nginx_pids, public_port))
    catalogue.guarded("idle gateway", "gateway-2", lambda: idle_connections_case(
        catalogue, stack, "gateway-2", gateway_ports[1], idle_count // 2, sources, [gateway_pids[1]], public_port))

    # Each slow case bounds its own waits (the longest, nginx's stalled pipeline, about 130 s).
    for (name, target, _), thread in zip(slow_cases, threads):
        thread.join(timeout=200)
        if thread.is_alive():
            catalogue.record(name, target, "the case to finish within 200 s", "still running", False)
    # Let each background user finish the chat it is in, so every chat that started is judged whole.
    users.stop()
    elapsed = time.monotonic() - started

    broken = [(chat.chat_id, chat.intact()) for chat in users.chats if chat.intact() is not None]
    catalogue.record("background users' chats", "nginx", "every one completed intact",
                     f"{len(users.chats) - len(broken)}/{len(users.chats)} intact" +
                     (f"; broken: {broken[:5]}" if broken else ""),
                     not broken and len(users.chats) >= len(users.threads))
    alive = [name for name in stack.service_names() if not stack.alive(name)]
    catalogue.record("every process still running", "stack", "no crash", f"dead: {alive}" if alive else "all alive",
                     not alive)

    passed = sum(1 for outcome in catalogue.outcomes if outcome.passed)
    failed = [outcome for outcome in catalogue.outcomes if not outcome.passed]
    result.figures.update({
        "chats": len(users.chats),
        "faults_injected": len(catalogue.outcomes),
        "lost": sum(1 for chat in users.chats if not chat.terminal),
        "duplicated": sum(1 for chat in users.chats if len(chat.terminal) > 1 or len(set(chat.seqs)) < len(chat.seqs)),
        "cases_passed": passed,
        "cases_failed": len(failed),
        "seconds": round(elapsed, 1),
    })
    for outcome in failed:
        result.check(False, f"[{outcome.target}] {outcome.name}: expected {outcome.expected}; got {outcome.observed}")


if __name__ == "__main__":
    sys.exit(run_scenario_alone(run))
