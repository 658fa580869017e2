"""How the edge tests talk to nginx: one request from a chosen loopback address (each address is one client to
nginx), its answer, and the container-style edge (deploy/nginx/edge-entrypoint.sh run as compose and Kubernetes run
it) started in front of a stack's gateways."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import Stack, more_free_ports, port_is_listening  # noqa: E402 - beside the supervisor

ENTRYPOINT = ROOT / "deploy" / "nginx" / "edge-entrypoint.sh"
STATIC_DIR = ROOT / "crates" / "gateway" / "static"
# Bounds on every request and on the container edge's start.
REQUEST_TIMEOUT_S = 15
CONTAINER_EDGE_START_TIMEOUT_S = 30


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json_code(self) -> str | None:
        try:
            return json.loads(self.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.status} {self.headers.get('x-dam-layer', '-')} {self.body[:160]!r}"


def request(port: int, method: str, path: str, source: str, body: object | None = None,
            headers: dict[str, str] | None = None) -> Answer:
    """One request from the loopback address `source` (each address is one client to nginx)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S,
                                            source_address=(source, 0))
    try:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"content-type": "application/json"} if payload is not None else {}
        all_headers.update(headers or {})
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        return Answer(response.status, {name.lower(): value for name, value in response.getheaders()},
                      response.read())
    finally:
        connection.close()


def open_stream(port: int, source: str, path: str) -> http.client.HTTPConnection:
    """A GET from `source` whose answer is left unread, so the request stays in progress until closed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S, source_address=(source, 0))
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 200, f"the stream {path} from {source} was refused: {response.status}"
    return connection


def unique_prompt(label: str) -> str:
    return f"edge test {label} {os.getpid()} {time.monotonic_ns()}"


class ContainerEdge:
    """deploy/nginx/edge-entrypoint.sh run as compose runs it, in front of the stack's gateways (by name)."""

    def __init__(self, stack: Stack):
        self.port = more_free_ports(stack.ports, 1)[0]
        self.scratch = Path(tempfile.mkdtemp(prefix="dam-container-edge-"))
        # nginx's workers run unprivileged, as in the image: give them files they can read wherever the checkout is.
        self.static_dir = self.scratch / "static"
        shutil.copytree(STATIC_DIR, self.static_dir)
        os.chmod(self.scratch, 0o755)
        gateways = " ".join(f"localhost:{port}" for port in stack.ports.gateways)
        environment = {
            **os.environ,
            "EDGE_GATEWAYS": gateways,
            "EDGE_LISTEN_PORT": str(self.port),
            "EDGE_PREFIX": str(self.scratch / "prefix"),
            "EDGE_STATIC_DIR": str(self.static_dir),
            "EDGE_START_TIMEOUT_S": str(CONTAINER_EDGE_START_TIMEOUT_S),
            "EDGE_STREAMS": "1000",
        }
        self.output = open(self.scratch / "edge.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(["bash", str(ENTRYPOINT)], env=environment, stdout=self.output,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_listening(self) -> None:
        deadline = time.monotonic() + CONTAINER_EDGE_START_TIMEOUT_S
        while not port_is_listening(self.port):
            assert self.process.poll() is None, f"the container edge exited: {self.log()}"
            assert time.monotonic() < deadline, \
                f"the container edge did not listen within {CONTAINER_EDGE_START_TIMEOUT_S} s: {self.log()}"
            time.sleep(0.1)

    def log(self) -> str:
        return (self.scratch / "edge.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.output.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
