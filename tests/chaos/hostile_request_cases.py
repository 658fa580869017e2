"""The hostile-HTTP catalogue's request cases, each sent to nginx and to a gateway's own port and recorded with the
answer docs/api.md, the gateway's HTTP server or the nginx template documents: unreadable and oversized bodies,
oversized, malformed and smuggling heads, path traversals, the admin API through nginx, a spoofed client identity,
and idempotency keys."""

from __future__ import annotations

import json
import random
import time
import uuid

from chaos_stack import ChaosStack
from hostile_http_catalogue import (
    ANONYMOUS_BURST,
    ANONYMOUS_RATE_PER_SECOND,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    Catalogue,
    SourceAddresses,
    refused,
)
from hostile_http_client import RawAnswer, one_token_chat, raw_exchange, request, request_bytes


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
