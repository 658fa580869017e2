"""The hostile-HTTP catalogue's connection cases, slow and idle clients: heads and bodies dribbled one byte a
second, thousands of idle connections, and readers that never read. Each must be closed by the server's own
timeout, cost the other callers nothing, and leave the servers' memory and descriptors where they were."""

from __future__ import annotations

import time
import uuid

from chaos_stack import ChaosStack
from hostile_http_catalogue import (
    BODY_READ_TIMEOUT_S,
    CLOSE_SLACK_S,
    MAX_RSS_GROWTH_MIB,
    NGINX_SEND_TIMEOUT_S,
    RESPONSE_WRITE_TIMEOUT_S,
    STALLED_ANSWER_TOKENS,
    Catalogue,
    SourceAddresses,
    refused,
)
from hostile_http_client import RawAnswer, follow_chat, open_socket, parse_answer, request
from server_side_watch import read_until_end, total_open_fds, total_rss_kib, watch_until_server_closes


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
