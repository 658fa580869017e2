"""bench-cancel (`bench.py cancel`): how soon `DELETE /api/chats/{id}` closes a running chat's upstream stream, as
mock-llm counts it, over 20 chats."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import plots
from bench_report import write_results
from bench_stack import RESULTS, mock_stats, start_stack


def bench_cancel() -> None:
    """How long after `DELETE /api/chats/{id}` the upstream stream of a running chat is closed, as mock-llm sees
    it (its `cancelled_by_client` count rises), over 20 chats."""
    settings = {
        "DAM_MOCK_LLM__TOKENS_PER_ANSWER": "400",
        "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "20",
        "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "1000",
        "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "1000",
    }
    stack = start_stack("cancel", gateways=1, workers=1, settings=settings)
    delays_ms = []
    try:
        gateway = f"http://127.0.0.1:{stack.ports.gateways[0]}"
        for index in range(20):
            request = urllib.request.Request(f"{gateway}/api/chats", data=json.dumps(
                {"message": f"cancel me {index}"}).encode(), headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                created = json.loads(response.read())
            events = urllib.request.urlopen(f"{gateway}{created['events_url']}", timeout=30)
            while b"event: token" not in events.readline():
                pass
            cancelled_before = mock_stats(stack)["cancelled_by_client"]
            started = time.perf_counter()
            delete = urllib.request.Request(f"{gateway}/api/chats/{created['id']}", method="DELETE")
            urllib.request.urlopen(delete, timeout=10).read()
            while mock_stats(stack)["cancelled_by_client"] == cancelled_before:
                if time.perf_counter() - started > 10:
                    raise RuntimeError("the upstream stream was not closed within 10 s")
                time.sleep(0.002)
            delays_ms.append((time.perf_counter() - started) * 1000)
            events.close()
    finally:
        stack.stop()
    delays_ms.sort()
    figures = {"delays_ms": delays_ms, "median_ms": delays_ms[len(delays_ms) // 2], "max_ms": delays_ms[-1]}
    markdown = f"""# bench-cancel ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

From `DELETE /api/chats/{{id}}` sent to mock-llm counting the running answer's stream as closed by its client,
{len(delays_ms)} chats (each measured by polling mock-llm's /stats every 2 ms):
median {figures['median_ms']:.1f} ms, max {figures['max_ms']:.1f} ms.

![Time from DELETE to the upstream stream closed, every chat in order](bench-cancel.svg)
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    plots.write_chart({
        "title": "From DELETE /api/chats/{id} to the upstream stream closed",
        "x_label": "cancelled chats, fastest first",
        "y_label": "ms",
        "series": [{"name": "DELETE to upstream closed",
                    "points": [[index + 1, delay] for index, delay in enumerate(delays_ms)]}],
        "note": f"{os.cpu_count()} CPUs; mock-llm's /stats polled every 2 ms",
    }, RESULTS / "bench-cancel.svg")
    write_results("bench-cancel", figures, markdown)
