"""The edge (nginx) as users meet it, against real processes: both renderings of the one template pass `nginx -t`;
a flood from one address is refused by the edge (429, X-Dam-Layer: edge) while another address is served; too many
requests in progress from one address are refused too; and through the container-style edge
(deploy/nginx/edge-entrypoint.sh, as compose and Kubernetes run it) two client addresses get separate limits at the
gate, which one client cannot escape by sending its own X-Forwarded-For. Also: the chat page is served by nginx
with its cache rules, and the admin API is never reachable through either edge.

Run: python3 tests/deploy/check_edge.py (builds the debug binaries through deploy/run-local.sh)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import Stack, more_free_ports, pick_ports, port_is_listening  # noqa: E402 - beside the run script

RENDERER = ROOT / "deploy" / "nginx" / "render-nginx-conf.sh"
ENTRYPOINT = ROOT / "deploy" / "nginx" / "edge-entrypoint.sh"
STATIC_DIR = ROOT / "crates" / "gateway" / "static"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# make run's nginx in this test: a small per-address budget, so a flood is quick to show.
EDGE_RATE_PER_SECOND = 5
EDGE_BURST = 10
EDGE_CONNECTIONS_PER_ADDRESS = 3
# The gate's anonymous tier (limits.tiers.anonymous, defaults): a burst of 5 chats, then 1 a second.
GATE_BURST = 5
# Bounds on every wait and every loop.
REQUEST_TIMEOUT_S = 15
FLOOD_REQUESTS = 120
START_TIMEOUT_S = float(os.environ.get("EDGE_TEST_START_TIMEOUT_S", "900"))


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, function) -> None:
        started = time.monotonic()
        try:
            function()
        except Exception as error:  # noqa: BLE001 - any crash of a check is that check's failure
            self.failed += 1
            detail = str(error) if isinstance(error, AssertionError) else traceback.format_exc()
            print(f"FAIL {name} ({time.monotonic() - started:.1f}s): {detail}", flush=True)
            return
        self.passed += 1
        print(f"PASS {name} ({time.monotonic() - started:.1f}s)", flush=True)


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


def unique_prompt(label: str) -> str:
    return f"edge test {label} {os.getpid()} {time.monotonic_ns()}"


# ------------------------------------------------------------------------------------------------------------
# The checks


def check_both_renderings_pass_nginx_t() -> None:
    with tempfile.TemporaryDirectory(prefix="dam-edge-render-") as scratch:
        renderings = {
            "local": ["--mode", "local", "--log-dir", f"{scratch}/local", "--gateway-ports", "28081 28082"],
            "container": ["--mode", "container", "--listen-host", "0.0.0.0", "--static-dir", "/opt/dam/static",
                          "--gateway-addresses", "172.28.0.5:8080 172.28.0.6:8080"],
        }
        for mode, arguments in renderings.items():
            prefix = Path(scratch) / mode
            (prefix / "temp").mkdir(parents=True)
            rendered = subprocess.run(
                ["bash", str(RENDERER), "--prefix", str(prefix), "--public-port", "28080", *arguments],
                capture_output=True, text=True, timeout=30, check=False)
            assert rendered.returncode == 0, f"{mode}: the renderer failed: {rendered.stderr}"
            config = prefix / "nginx.conf"
            config.write_text(rendered.stdout)
            tested = subprocess.run([NGINX, "-t", "-q", "-p", f"{prefix}/", "-c", str(config), "-e", "/dev/stderr"],
                                    capture_output=True, text=True, timeout=30, check=False)
            assert tested.returncode == 0, f"{mode}: nginx -t refused the rendering: {tested.stderr}"
            text = rendered.stdout
            assert "limit_req zone=dam_edge_requests" in text and "limit_conn dam_edge_connections" in text, mode
            assert "least_conn;" in text, f"{mode}: the gateways are not balanced by least_conn"
            if mode == "container":
                assert "server 172.28.0.5:8080 max_fails=0;" in text, "container: the gateway addresses are missing"
                assert "access_log /dev/stdout" in text and "error_log /dev/stderr" in text, \
                    "container: logs do not go to the container's output"


def check_a_flood_from_one_address_is_refused_by_the_edge(stack: Stack) -> None:
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


def check_too_many_requests_in_progress_are_refused_by_the_edge(stack: Stack) -> None:
    port = stack.ports.public
    holder = "127.0.0.4"
    # A chat that answers for about 30 s, created from another address, so only its streams count for `holder`.
    created = request(port, "POST", "/api/chats", "127.0.0.10",
                      {"message": unique_prompt("held") + " [[mock tokens=300 inter_token_ms=100]]"})
    assert created.status == 202, f"the chat was not created: {created.describe()}"
    events_url = json.loads(created.body)["events_url"]
    streams = []
    try:
        for _ in range(EDGE_CONNECTIONS_PER_ADDRESS):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S,
                                                    source_address=(holder, 0))
            connection.request("GET", events_url)
            response = connection.getresponse()
            assert response.status == 200, f"stream {len(streams) + 1} was refused: {response.status}"
            streams.append(connection)
        one_more = request(port, "GET", "/healthz", holder)
        assert one_more.status == 429, f"request {EDGE_CONNECTIONS_PER_ADDRESS + 1} in progress: {one_more.describe()}"
        assert one_more.headers.get("x-dam-layer") == "edge", one_more.describe()
        assert one_more.json_code() == "too_many_connections", one_more.describe()
    finally:
        for connection in streams:
            connection.close()
        request(port, "DELETE", f"/api/chats/{json.loads(created.body)['id']}", "127.0.0.10")


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
            "EDGE_START_TIMEOUT_S": "30",
            "EDGE_STREAMS": "1000",
        }
        self.output = open(self.scratch / "edge.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(["bash", str(ENTRYPOINT)], env=environment, stdout=self.output,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not port_is_listening(self.port):
            assert self.process.poll() is None, f"the container edge exited: {self.log()}"
            assert time.monotonic() < deadline, f"the container edge did not listen within 30 s: {self.log()}"
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


def check_container_edge_keeps_clients_apart(edge: ContainerEdge) -> None:
    first, second = "127.0.0.5", "127.0.0.6"
    # The first client spends the gate's burst; the gate refuses it, by its address.
    statuses = []
    refusal = None
    for attempt in range(GATE_BURST * 4):
        answer = request(edge.port, "POST", "/api/chats", first, {"message": unique_prompt(f"first {attempt}")})
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
        answer = request(edge.port, "POST", "/api/chats", first, {"message": unique_prompt("spoofed")},
                         {"x-forwarded-for": spoofed})
        assert answer.status == 429 and answer.headers.get("x-dam-layer") == "gate", \
            f"X-Forwarded-For: {spoofed} let the limited client through: {answer.describe()}"
    # The second client has its own limit.
    answer = request(edge.port, "POST", "/api/chats", second, {"message": unique_prompt("second")})
    assert answer.status == 202, f"the second client shares the first's limit: {answer.describe()}"


def check_the_chat_page_is_served_by_nginx(stack: Stack, edge: ContainerEdge) -> None:
    for port in (stack.ports.public, edge.port):
        page = request(port, "GET", "/", "127.0.0.7")
        assert page.status == 200 and page.headers.get("content-type", "").startswith("text/html"), page.describe()
        assert "x-dam-layer" not in page.headers, "the page came from a gateway, not from nginx's files"
        assert page.headers.get("cache-control") == "no-cache", page.describe()
        assert page.body == (STATIC_DIR / "chat.html").read_bytes(), "the page is not crates/gateway/static/chat.html"
        versioned = request(port, "GET", "/static/chat.html?v=1", "127.0.0.7")
        assert versioned.status == 200, versioned.describe()
        assert "immutable" in versioned.headers.get("cache-control", ""), versioned.headers
        unversioned = request(port, "GET", "/static/chat.html", "127.0.0.7")
        assert unversioned.headers.get("cache-control") == "public, max-age=3600", unversioned.headers


def check_the_admin_api_is_not_reachable(stack: Stack, edge: ContainerEdge) -> None:
    for port in (stack.ports.public, edge.port):
        for path in ("/admin/status", "/admin/limits", "/metrics"):
            answer = request(port, "GET", path, "127.0.0.8")
            assert answer.status == 404, f"GET {path} through the edge on {port}: {answer.describe()}"


def main() -> int:
    report = Report()
    report.check("both renderings of the nginx template pass nginx -t", check_both_renderings_pass_nginx_t)
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
    print(f"edge test: run dir {run_dir}; nginx on {stack.base_url}", flush=True)
    started = time.monotonic()
    edge = None
    stack.start()
    try:
        stack.wait_until_up()
        report.check("a flood from one address gets 429 with X-Dam-Layer: edge; another address is served",
                     lambda: check_a_flood_from_one_address_is_refused_by_the_edge(stack))
        report.check("too many requests in progress from one address get 429 too_many_connections from the edge",
                     lambda: check_too_many_requests_in_progress_are_refused_by_the_edge(stack))
        edge = ContainerEdge(stack)
        report.check("through the container edge two addresses get separate gate limits; X-Forwarded-For is ignored",
                     lambda: check_container_edge_keeps_clients_apart(edge))
        report.check("nginx serves the chat page with its cache rules (both renderings)",
                     lambda: check_the_chat_page_is_served_by_nginx(stack, edge))
        report.check("the admin API and metrics are not reachable through either edge",
                     lambda: check_the_admin_api_is_not_reachable(stack, edge))
    except Exception:  # noqa: BLE001 - a stack that does not start fails the run, with its output
        report.failed += 1
        print(f"FAIL the stack: {traceback.format_exc()}\n{stack.output()[-3000:]}", flush=True)
    finally:
        if edge is not None:
            if report.failed:
                print(f"container edge output:\n{edge.log()}", flush=True)
            edge.stop()
        stack.emergency_stop()
    if report.failed == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
        stack.output_path.unlink(missing_ok=True)
    else:
        print(f"logs kept in {run_dir / 'logs'}", flush=True)
    print(f"edge test took {time.monotonic() - started:.1f}s; {report.passed} passed, {report.failed} failed",
          flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    threading.current_thread().name = "edge-test"
    sys.exit(main())
