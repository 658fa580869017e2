"""The hostile-HTTP catalogue's shared ground: the limits the scenario's stack runs with (every case's expectation
is computed from them), the loopback source addresses that each stand for one caller, the record of each case's
expected and observed answer, and what counts as a refusal. The cases live in hostile_request_cases.py and
hostile_connection_cases.py; the scenario that runs them in scenario_hostile_http.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from hostile_http_client import RawAnswer

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
