"""HTTP from the hostile scenarios' side: raw-socket exchanges for requests no library would send, plain requests and
an SSE chat follower that can speak from any loopback source address (each 127.0.0.x address is a caller of its
own behind nginx). What the servers hold meanwhile is read in server_side_watch.py; what is expected of the answers
lives in the scenario files, not here."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from dataclasses import dataclass, field

# Every exchange is bounded: a server that never answers costs at most this long per request.
DEFAULT_TIMEOUT_S = 10.0
# Longest answer body a raw exchange keeps; the catalogue only looks at status, headers and error JSON.
MAX_KEPT_ANSWER_BYTES = 256 * 1024


# ------------------------------------------------------------------------------------------------------------
# Raw exchanges


@dataclass
class RawAnswer:
    """What a server sent back on one raw connection: the parsed status line, headers and body, or nothing."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Everything received, as it came (an HTTP/0.9 answer is a bare body with no status line).
    raw: bytes = b""
    # The server closed the connection (EOF or reset) rather than the read timing out.
    closed: bool = False
    timed_out: bool = False
    error: str = ""

    def json_code(self) -> str | None:
        return json_error_code(self.body)

    def is_json(self) -> bool:
        return self.headers.get("content-type", "").startswith("application/json")

    def summary(self) -> str:
        if self.status is None:
            state = "timed out" if self.timed_out else "closed" if self.closed else self.error or "no answer"
            return f"no HTTP answer ({state})"
        code = self.json_code()
        shown = f"code {code}" if code else f"body {self.body[:120]!r}"
        return f"{self.status} ({self.headers.get('content-type', 'no content-type')}, {shown})"


def json_error_code(body: bytes) -> str | None:
    """`error.code` of a JSON error body, or None when the body is not the JSON error shape."""
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def one_token_chat(label: str) -> dict:
    """A chat body of its own (no duplicate joins it) whose answer is one token at once, so workers stay idle."""
    return {"message": f"{label} {uuid.uuid4()} [[mock tokens=1 ttft_ms=0]]"}


def open_socket(port: int, source: str, timeout_s: float, stingy: bool = False) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` from the loopback address `source`. A `stingy` connection offers a
    small receive window and small segments, so the server's send buffer stays small too (on loopback it would
    otherwise grow to 4 MiB before a write ever has to wait)."""
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if stingy:
        # Set before connecting, so the server sees them from the handshake on.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    connection.bind((source, 0))
    connection.settimeout(timeout_s)
    connection.connect(("127.0.0.1", port))
    return connection


def raw_exchange(port: int, data: bytes, source: str = "127.0.0.2", timeout_s: float = DEFAULT_TIMEOUT_S) -> RawAnswer:
    """Sends `data` as is on a fresh connection and reads one answer: until its length is complete, the server
    closes, or `timeout_s` passes."""
    answer = RawAnswer()
    try:
        connection = open_socket(port, source, timeout_s)
    except OSError as error:
        answer.error = f"connect failed: {error}"
        return answer
    received = b""
    deadline = time.monotonic() + timeout_s
    try:
        try:
            connection.sendall(data)
        except OSError as error:
            # The server may refuse and close before the whole request is sent; its answer may still be readable.
            answer.error = f"send failed: {error}"
        while time.monotonic() < deadline:
            connection.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                answer.timed_out = True
                break
            except OSError as error:
                answer.closed = True
                answer.error = answer.error or f"receive failed: {error}"
                break
            if not chunk:
                answer.closed = True
                break
            received += chunk
            if answer_is_complete(received) or len(received) > MAX_KEPT_ANSWER_BYTES:
                break
        else:
            answer.timed_out = True
    finally:
        connection.close()
    answer.raw = received
    parse_answer(received, answer)
    return answer


def answer_is_complete(received: bytes) -> bool:
    head, separator, body = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return len(body) >= int(value.strip())
            except ValueError:
                return False
    return False


def parse_answer(received: bytes, answer: RawAnswer) -> None:
    head, separator, body = received.partition(b"\r\n\r\n")
    if not separator or not head.startswith(b"HTTP/1."):
        return
    lines = head.split(b"\r\n")
    try:
        answer.status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        answer.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    answer.body = body


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  close: bool = True) -> bytes:
    """A well-formed HTTP/1.1 request with a correct Content-Length (when there is a body)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ------------------------------------------------------------------------------------------------------------
# Plain requests (http.client, from a chosen source address)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def summary(self) -> str:
        code = self.json_code()
        return f"{self.status} ({f'code {code}' if code else repr(self.body[:160])})"

    def json_code(self) -> str | None:
        return json_error_code(self.body)


def request(port: int, method: str, path: str, body: object | bytes | None = None,
            headers: dict[str, str] | None = None, source: str = "127.0.0.2",
            timeout_s: float = DEFAULT_TIMEOUT_S) -> Answer:
    """One request on a fresh connection; a JSON-able `body` is sent as JSON. HTTP errors are answers."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    all_headers = {"content-type": "application/json"} if data is not None else {}
    all_headers.update(headers or {})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s, source_address=(source, 0))
    try:
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


# ------------------------------------------------------------------------------------------------------------
# Chats, followed to their end


@dataclass
class FollowedChat:
    """One chat as its client saw it: the creation answer, then every SSE event of its stream."""

    created_status: int = 0
    chat_id: str = ""
    joined: bool = False
    kinds: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    text: str = ""
    terminal: list[str] = field(default_factory=list)
    problem: str = ""

    def intact(self) -> str | None:
        """None when the chat completed intact (admitted, seq 1..n without gap or repeat, text, exactly one
        terminal event, `done`, last); else what is wrong."""
        if self.problem:
            return self.problem
        if self.created_status != 202:
            return f"created with {self.created_status}"
        if self.seqs != list(range(1, len(self.seqs) + 1)):
            return f"seqs are not 1..n: {self.seqs[:12]}...{self.seqs[-5:]}"
        if self.terminal != ["done"]:
            return f"terminal events {self.terminal} (expected exactly one done)"
        if self.kinds[-1] != "done":
            return f"the stream went on after done: {self.kinds[-3:]}"
        if not self.text:
            return "no text"
        return None


def follow_chat(port: int, chat_body: dict, source: str, headers: dict[str, str] | None = None,
                timeout_s: float = 120.0) -> FollowedChat:
    """Creates a chat with POST /api/chats and reads its whole event stream (one connection, no reconnect: a
    break is reported as a problem), within `timeout_s`."""
    chat = FollowedChat()
    deadline = time.monotonic() + timeout_s
    try:
        created = request(port, "POST", "/api/chats", chat_body, headers, source)
    except OSError as error:
        chat.problem = f"POST /api/chats failed: {error}"
        return chat
    chat.created_status = created.status
    body = created.json()
    if created.status != 202 or not isinstance(body, dict):
        chat.problem = f"POST /api/chats answered {created.status}: {created.body[:200]!r}"
        return chat
    chat.chat_id = body["id"]
    chat.joined = bool(body.get("joined"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s, source_address=(source, 0))
    try:
        connection.request("GET", body["events_url"], headers={"accept": "text/event-stream", **(headers or {})})
        response = connection.getresponse()
        if response.status != 200:
            chat.problem = f"GET events answered {response.status}: {response.read()[:200]!r}"
            return chat
        event_kind, data_lines = "message", []
        while time.monotonic() < deadline:
            connection.sock.settimeout(max(0.1, deadline - time.monotonic()))
            raw_line = response.readline()
            if not raw_line:
                break
            line = raw_line.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event_kind = value
                elif name == "data":
                    data_lines.append(value)
                continue
            if data_lines:
                record_event(chat, event_kind, "\n".join(data_lines))
                if event_kind in ("done", "error"):
                    # The stream ends after its terminal event; a short bounded read shows nothing follows.
                    connection.sock.settimeout(2.0)
                    try:
                        rest = response.read()
                    except (OSError, http.client.HTTPException):
                        rest = b""
                    if rest.strip():
                        chat.problem = f"bytes after the terminal event: {rest[:120]!r}"
                    return chat
            event_kind, data_lines = "message", []
        chat.problem = chat.problem or "the stream ended (or timed out) without a terminal event"
    except (OSError, http.client.HTTPException) as error:
        chat.problem = f"the stream broke: {type(error).__name__}: {error}"
    finally:
        connection.close()
    return chat


def record_event(chat: FollowedChat, kind: str, data: str) -> None:
    chat.kinds.append(kind)
    try:
        decoded = json.loads(data)
    except ValueError:
        chat.problem = chat.problem or f"an event whose data is not JSON: {data[:80]!r}"
        return
    # Stored events (token, reset, done, error) carry their seq; the gateway's own (queued) do not.
    if isinstance(decoded, dict) and "seq" in decoded:
        chat.seqs.append(int(decoded["seq"]))
    if kind == "token":
        chat.text += decoded.get("text", "")
    elif kind == "reset":
        chat.text = ""
    if kind in ("done", "error"):
        chat.terminal.append(kind)
