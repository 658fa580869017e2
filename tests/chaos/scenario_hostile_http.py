"""Fault test 7, hostile HTTP: a catalogue of hostile requests against nginx and against a gateway's own port, each
with the answer docs/api.md, the gateway's HTTP server (`http1_head.rs`, `http1_connection.rs`) or the nginx
template documents, while a few legitimate users chat in the background; at the end every one of their chats must
have completed intact (seq 1..n, no gap, exactly one terminal event, `done`). The cases live in
hostile_request_cases.py and hostile_connection_cases.py; this file starts the stack and the background users and
runs them. Run alone with `python3 tests/chaos/scenario_hostile_http.py [--long]`; the runner calls `run(long)`."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_stack import ChaosStack, ScenarioResult, run_scenario_alone, start_chaos_stack  # noqa: E402
from hostile_connection_cases import (  # noqa: E402
    idle_connections_case,
    slow_body_case,
    slowloris_case,
    stalled_pipeline_case,
    stalled_reader_case,
)
from hostile_http_catalogue import (  # noqa: E402
    ANONYMOUS_BURST,
    ANONYMOUS_RATE_PER_SECOND,
    BODY_READ_TIMEOUT_S,
    HEADER_READ_TIMEOUT_S,
    NGINX_HEADER_TIMEOUT_S,
    RESPONSE_WRITE_TIMEOUT_S,
    STALLED_ANSWER_TOKENS,
    Catalogue,
    SourceAddresses,
)
from hostile_http_client import FollowedChat, follow_chat  # noqa: E402
from hostile_request_cases import (  # noqa: E402
    admin_cases,
    body_cases,
    head_cases,
    idempotency_cases,
    path_cases,
    spoofing_cases,
)
from server_side_watch import child_pids  # noqa: E402

DESCRIPTION = "hostile HTTP: malformed, oversized, smuggled, slow and spoofed requests; other users untouched"

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
