"""The end-to-end test's metric coverage check: every `dam_*` name the Grafana dashboards and the alert rules use
must appear in some running service's /metrics, so a dashboard can never silently show nothing.
test_end_to_end_observability.py calls check_metric_coverage() while its stack runs, after its chats; this module
adds the traffic a flood's dashboards need (refusals at the gate and at the edge) and mtail, which counts the edge.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dashboards"))
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import stop_child  # noqa: E402 - the shared module lives beside the supervisor
from metric_names import base_name, catalog_owners, metric_names_used  # noqa: E402 - lives with the dashboards

MTAIL_PROGRAMS = ROOT / "dashboards" / "mtail"
# nginx writes its access log in batches at most a second old (its `flush=1s`); mtail polls the file.
EDGE_COUNT_TIMEOUT_S = 20
MTAIL_START_TIMEOUT_S = 20
# The anonymous tier's burst (limits.tiers.anonymous.burst, 5 by default) is passed well before this many chats.
BURST_ATTEMPTS = 30
# One caller of its own for the burst (a TEST-NET-2 address: only a header value, never contacted), so the other
# checks' callers keep their allowance.
BURST_CLIENT = "198.51.100.10"
SCRAPE_TIMEOUT_S = 10


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """(status, body); an HTTP error status is an answer, not an exception."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def exported_names(metrics_text: str) -> set[str]:
    """The `dam_*` names in a Prometheus text exposition: samples and `# TYPE` lines, histogram suffixes stripped."""
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
        elif line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
        else:
            continue
        if name.startswith("dam_"):
            names.add(base_name(name))
    return names


class Mtail:
    """mtail reading the run's nginx access log with the edge program, as `make run-monitoring` runs it."""

    def __init__(self, access_log: Path, log_path: Path):
        self.port = free_port()
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["mtail", "--progs", str(MTAIL_PROGRAMS), "--logs", str(access_log), "--address", "127.0.0.1",
             "--port", str(self.port), "--emit_prog_label=false", "--logtostderr"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + MTAIL_START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"mtail exited with {self.process.returncode} (see {self.log.name})"
            try:
                if fetch(self.metrics_url)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"mtail did not serve {self.metrics_url} within {MTAIL_START_TIMEOUT_S}s")

    def stop(self) -> None:
        stop_child(self.process)
        self.log.close()


def send_refused_requests(base_url: str) -> dict[str, int]:
    """Refusals at both layers, through nginx: a burst of chats from one anonymous caller past its allowance (the
    gate's 429 rate_limited or too_many_active_chats), a route no gateway has (the gate's 404) and a path nginx
    answers itself (its own 404). Returns how many of each status came back."""
    statuses: dict[str, int] = {}

    def note(status: int) -> None:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    for attempt in range(BURST_ATTEMPTS):
        # Each chat differs (the mock strips the directive), so none is joined to an earlier one as a duplicate.
        body = json.dumps({"message": f"coverage burst {attempt} [[mock ttft_ms={100 + attempt}]]"}).encode()
        status, _ = fetch(f"{base_url}/api/chats", body,
                          {"content-type": "application/json", "x-forwarded-for": BURST_CLIENT})
        note(status)
        if status == 429:
            break
    note(fetch(f"{base_url}/no-such-route-for-the-coverage-check")[0])
    note(fetch(f"{base_url}/metrics")[0])
    assert statuses.get("429"), f"{BURST_ATTEMPTS} chats from one anonymous caller were never refused: {statuses}"
    return statuses


def edge_layer_problems(mtail_metrics: str) -> list[str]:
    """The gate's 429 must count as layer="gate" (the gateway's X-Dam-Instance header reached nginx's log) and
    nginx's own 404 for /metrics as layer="edge"."""
    lines = [line for line in mtail_metrics.splitlines() if line.startswith("dam_edge_requests_total{")]
    problems = []
    for status, layer, who in (("429", "gate", "the gate's 429 (a gateway answered: its X-Dam-Instance header is "
                                "logged)"), ("404", "edge", "nginx's own 404 for /metrics")):
        if not any(f'status="{status}"' in line and f'layer="{layer}"' in line for line in lines):
            problems.append(f"{who} is not counted with layer=\"{layer}\"; mtail has: {lines}")
    return problems


def wait_for_edge_refusals(mtail: Mtail) -> str:
    """mtail's /metrics once it counted a 429 (nginx flushes its log buffer within a second)."""
    deadline = time.monotonic() + EDGE_COUNT_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        text = fetch(mtail.metrics_url)[1].decode("utf-8", "replace")
        if any(line.startswith("dam_edge_requests_total{") and 'status="429"' in line for line in text.splitlines()):
            return text
        time.sleep(0.3)
    raise AssertionError(f"mtail counted no 429 in {EDGE_COUNT_TIMEOUT_S}s; its dam_ lines: "
                         f"{[line for line in text.splitlines() if line.startswith('dam_')]}")


def scrape(name: str, url: str, exported: dict[str, set[str]], unreachable: list[str]) -> None:
    try:
        status, body = fetch(url)
    except OSError as error:
        unreachable.append(f"{name} {url}: {error}")
        return
    if status != 200:
        unreachable.append(f"{name} {url}: HTTP {status}")
        return
    exported[name] = exported_names(body.decode("utf-8", "replace"))


def check_metric_coverage(stack) -> None:
    """Fails listing every name the dashboards and alert rules use that no service of `stack` exports."""
    assert shutil.which("mtail"), "mtail is not installed (make deps): the edge's metrics come from it"
    mtail = Mtail(stack.run_dir / "logs" / "nginx-access.log", stack.run_dir / "logs" / "mtail-coverage.log")
    try:
        mtail.wait_until_ready()
        statuses = send_refused_requests(stack.base_url)
        layer_problems = edge_layer_problems(wait_for_edge_refusals(mtail))

        exported: dict[str, set[str]] = {}
        unreachable: list[str] = []
        for number, port in enumerate(stack.ports.gateways, start=1):
            scrape(f"gateway-{number}", f"http://127.0.0.1:{port}/metrics", exported, unreachable)
        # Each running worker serves its own listener; Ports may hold spare ports beyond the workers started.
        for number, port in enumerate(stack.ports.workers[: stack.workers], start=1):
            scrape(f"worker-{number}", f"http://127.0.0.1:{port}/metrics", exported, unreachable)
        scrape("dam", f"http://127.0.0.1:{stack.ports.admin}/metrics", exported, unreachable)
        scrape("mtail (edge)", mtail.metrics_url, exported, unreachable)
    finally:
        mtail.stop()

    used = metric_names_used()
    everything = set().union(*exported.values())
    missing = {name: places for name, places in used.items() if name not in everything}
    print(f"     traffic through nginx: {statuses}; {len(used)} names used, exported by "
          + ", ".join(f"{service} {len(names & set(used))}" for service, names in exported.items()), flush=True)
    lines = []
    if missing:
        owners = catalog_owners()
        lines.append(f"{len(missing)} of the {len(used)} metric names the dashboards and alert rules use are "
                     "exported by no service of the stack (a panel or alert on them would show nothing):")
        for name, places in missing.items():
            lines.append(f"  {name}  [catalog: {owners.get(name, 'not in the catalog')}]  used in: "
                         + "; ".join(places[:3]) + (f"; and {len(places) - 3} more" if len(places) > 3 else ""))
    if unreachable:
        lines.append("services whose /metrics could not be read:")
        lines.extend(f"  {problem}" for problem in unreachable)
    if layer_problems:
        lines.append("the edge's layers are wrong:")
        lines.extend(f"  {problem}" for problem in layer_problems)
    if lines:
        raise AssertionError("\n".join(lines))
