#!/usr/bin/env python3
"""Benchmarks of Traffic Dam on this machine, run through `make bench-*`. Each starts the real topology with
deploy/run-local.sh (release build, loopback only), drives it with k6 or dam-load (loadtest/dam-load), reads what
reached mock-llm, writes its figures to loadtest/results/<bench>.json and .md, and stops everything it started.
Loops are bounded in time.

  bench.py gate       (bench_gate.py) a flood of 5,000 requests/s from 5 callers while 100 users chat; then the
                      429 throughput of one gateway pinned to one core
  bench-llm-rate      (bench.py llm-rate, bench_llm_rate.py) a burst of 2,000 chats drained by 4 workers under a
                      global 100 requests/s
  bench.py streams    (bench_streams.py) memory per stream and admission latency of one gateway holding up to
                      18,000 event streams
  bench.py cancel     (bench_cancel.py) how soon a cancelled chat's upstream stream is closed
  bench.py overhead   (bench_overhead.py, overhead_report.py) what the dam adds to a chat (throughput, first token,
                      CPU and Redis commands per chat) at 1 to 1,000 concurrent streams, against mock-llm direct in
                      the same run
  bench.py capacity   (bench_capacity.py) users held at p95 TTFT < 3 s by 1 gateway + 2 workers, then 2 + 4
  bench.py flood      (bench_flood.py) legitimate users with and without a 5,000 requests/s flood
  bench.py redis      (bench_redis.py) chats/s at zero LLM latency and Redis commands per chat

Knobs (environment): BENCH_DURATION_S, BENCH_CHATS, BENCH_STREAM_COUNTS; BENCH_OVERHEAD_LEVELS (1,50,200,1000),
BENCH_OVERHEAD_DURATION_S (20), BENCH_OVERHEAD_WARM_UP_S (3), BENCH_OVERHEAD_BROWSER (1), BENCH_OVERHEAD_MONITOR_S
(3; 0 skips counting batches), BENCH_OVERHEAD_GATEWAYS (2), BENCH_OVERHEAD_WORKERS (2); BENCH_DAM_LOAD (a
dam-load binary to use); SKIP_BUILD=1 and CARGO_TARGET_DIR as for deploy/run-local.sh.

What the benches share: bench_stack.py (the stack and its state), load_generators.py (k6, wrk, dam-load),
stack_meter.py (CPU, Redis commands and script calls, the gateway's metrics), bench_report.py (the result files),
plots.py (the charts).
"""

from __future__ import annotations

import resource
import shutil
import sys

import bench_cancel
import bench_capacity
import bench_flood
import bench_gate
import bench_llm_rate
import bench_overhead
import bench_redis
import bench_streams
from bench_stack import RESULTS

# `make bench-<name>` runs `bench.py <name>`.
BENCHES = {
    "gate": bench_gate.bench_gate,
    "llm-rate": bench_llm_rate.bench_llm_rate,
    "streams": bench_streams.bench_streams,
    "cancel": bench_cancel.bench_cancel,
    "overhead": bench_overhead.bench_overhead,
    "capacity": bench_capacity.bench_capacity,
    "flood": bench_flood.bench_flood,
    "redis": bench_redis.bench_redis,
}


def raise_open_file_limit() -> None:
    """Holding thousands of streams needs as many sockets: take the whole hard limit (the stack inherits it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in BENCHES:
        print(f"usage: {sys.argv[0]} {'|'.join(BENCHES)}", file=sys.stderr)
        return 2
    if shutil.which("k6") is None and sys.argv[1] in ("gate", "llm-rate", "flood"):
        print("k6 is missing: make bench-tools", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None and sys.argv[1] == "gate":
        print("wrk is missing: make bench-tools", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    raise_open_file_limit()
    BENCHES[sys.argv[1]]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
