"""bench-llm-rate (`bench.py llm-rate`): a burst of 2,000 chats sent at once to 1 gateway and drained by 4 workers
under a global 100 LLM requests/s: the queue's peak, the steady drain rate, and the most requests mock-llm saw in
any one second."""

from __future__ import annotations

import os
import threading
import time

import plots
from bench_report import write_results
from bench_stack import RESULTS, mock_stats, queue_depth, start_stack, wait_until
from load_generators import metric, run_k6


# The global limit under test, and every other limit lifted out of its way.
LLM_RATE_SETTINGS = {
    "DAM_LIMITS__LLM__MAX_REQUESTS_PER_SECOND": "100",
    # One client sends the whole burst: its own limits must not be what holds it back.
    "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "100000",
    "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "100000",
    "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "100000",
    "DAM_LIMITS__DUPLICATE_WINDOW_S": "0",
    # Nobody listens to these chats; they must not be cancelled as abandoned while they wait.
    "DAM_WORKER__ABANDON_GRACE_MS": "600000",
    "DAM_MOCK_LLM__TOKENS_PER_ANSWER": "16",
    "DAM_MOCK_LLM__TIME_TO_FIRST_TOKEN_MS": "20",
    "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": "5",
}


def bench_llm_rate() -> None:
    chats = int(os.environ.get("BENCH_CHATS", "2000"))
    stack = start_stack("llm-rate", gateways=1, workers=4, settings=LLM_RATE_SETTINGS)
    samples: list[tuple[float, int, int]] = []
    try:
        gateway = f"http://127.0.0.1:{stack.ports.gateways[0]}"
        started = time.monotonic()
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                samples.append((time.monotonic() - started, queue_depth(stack), mock_stats(stack)["requests"]))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        burst = run_k6("llm_burst.js", {"BASE_URL": gateway, "CHATS": str(chats), "VUS": "100"}, "bench-llm-rate")
        burst_s = time.monotonic() - started
        drained_s = wait_until(
            "the queue drained", 300, lambda: mock_stats(stack)["completed"] >= metric(burst, "burst_admitted")
        ) + burst_s
        stop_sampling.set()
        sampler.join(timeout=5)
        stats = mock_stats(stack)
    finally:
        stack.stop()
    write_llm_rate_results(chats, burst, burst_s, drained_s, stats, samples)


def write_llm_rate_results(chats: int, burst: dict, burst_s: float, drained_s: float, stats: dict,
                           samples: list[tuple[float, int, int]]) -> None:
    """The burst's figures, from k6's summary and the queue samples taken while it drained, as JSON, Markdown and a
    chart."""
    peak_depth = max(depth for _, depth, _ in samples)
    # The steady drain rate: requests seen between 10% and 90% of the burst, over the time that took.
    low = next(at for at, _, seen in samples if seen >= 0.1 * chats)
    high = next((at for at, _, seen in samples if seen >= 0.9 * chats), samples[-1][0])
    steady_rate = 0.8 * chats / max(high - low, 1e-6)
    figures = {
        "chats": chats,
        "admitted": metric(burst, "burst_admitted"),
        "refused": metric(burst, "burst_refused"),
        "burst_sent_in_s": burst_s,
        "peak_queue_depth": peak_depth,
        "drained_in_s": drained_s,
        "steady_drain_per_s": steady_rate,
        "limit_per_s": 100,
        "mock_llm": stats,
        "samples": samples,
    }
    markdown = f"""# bench-llm-rate ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

{chats} chats sent at once ({burst_s:.1f} s to send them all) to 1 gateway, drained by 4 workers under
`limits.llm.max_requests_per_second = 100`.

| figure | value |
|---|---|
| admitted / refused | {figures['admitted']:.0f} / {figures['refused']:.0f} |
| peak queue depth | {peak_depth} |
| most request starts mock-llm saw in any one second | {stats['max_starts_in_one_second']} (limit 100) |
| steady drain rate (10% to 90% of the burst) | {steady_rate:.1f} chats/s |
| burst fully answered after | {drained_s:.1f} s |
| mock-llm requests / completed / failed | {stats['requests']} / {stats['completed']} / {stats['failed']} |

![Queue depth and requests that reached mock-llm over time](bench-llm-rate-queue.svg)
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    plots.write_chart({
        "title": f"A burst of {chats} chats drained under 100 LLM requests/s",
        "x_label": "seconds since the burst began",
        "y_label": "chats",
        "series": [
            {"name": "waiting in the queue", "points": [[at, depth] for at, depth, _ in samples]},
            {"name": "requests mock-llm has seen", "points": [[at, seen] for at, _, seen in samples]},
        ],
        "horizontal_lines": [{"name": f"the burst: {chats} chats", "y": chats}],
        "note": f"{os.cpu_count()} CPUs; 1 gateway, 4 workers; limits.llm.max_requests_per_second = 100",
    }, RESULTS / "bench-llm-rate-queue.svg")
    write_results("bench-llm-rate", figures, markdown)
