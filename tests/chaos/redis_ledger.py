"""RedisLedger: what Redis itself counted over a whole fault run (chats admitted, jobs ended), for the scenarios that
check no chat was lost. It reads the short-lived statistics buckets often enough that none expires unread."""

from __future__ import annotations

import subprocess
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service_control import ChaosStack


# The statistics buckets the admission and ending scripts count in (RedisKeys::admission_counts and
# job_outcome_counts in crates/protocol/src/keys.rs, whose tests pin the names). Each bucket is a hash of
# decision (or outcome) -> count that lives 120 s, so a ledger reads them more often than that.
# The patterns below follow the stack's key prefix (ChaosStack.key_prefix).
ADMISSION_BUCKETS = "stats:admission:*"
OUTCOME_BUCKETS = "stats:outcomes:*"
# Outcomes that are not an ending: a requeue after a dead worker puts the job back in line.
NOT_AN_ENDING = {"requeued"}
# Well within the buckets' 120 s life.
LEDGER_READ_INTERVAL_S = 15.0


class RedisLedger:
    """Adds up, over a whole run, the chats Redis admitted and the jobs Redis saw end, from the short-lived
    statistics buckets, read every LEDGER_READ_INTERVAL_S on a thread of its own from `start()` to `stop()` (a
    read while Redis is down is skipped, the next one catches up)."""

    def __init__(self, chaos: ChaosStack):
        self.chaos = chaos
        self.admission_bucket_pattern = chaos.key_prefix + ADMISSION_BUCKETS
        self.outcome_bucket_pattern = chaos.key_prefix + OUTCOME_BUCKETS
        # (bucket key, field) -> the highest count seen: counts only grow while a bucket lives.
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed_reads = 0

    def start(self) -> "RedisLedger":
        self._thread = threading.Thread(target=self._read_until_stopped, name="redis-ledger", daemon=True)
        self._thread.start()
        return self

    def _read_until_stopped(self) -> None:
        while not self._stopping.wait(LEDGER_READ_INTERVAL_S):
            self.read()

    def stop(self) -> None:
        """Stops the thread and reads once more: every count is then in."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if not self.read():
            raise AssertionError("the last read of Redis's statistics failed")

    def read(self) -> bool:
        try:
            for pattern in (self.admission_bucket_pattern, self.outcome_bucket_pattern):
                keys = self.chaos.redis("--scan", "--pattern", pattern).split()
                for key in keys:
                    flat = self.chaos.redis("HGETALL", key).split("\n")
                    for name, value in zip(flat[0::2], flat[1::2]):
                        if value.strip().isdigit():
                            with self._lock:
                                self._counts[(key, name)] = max(self._counts.get((key, name), 0), int(value))
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            self.failed_reads += 1
            return False

    def totals(self, pattern: str) -> dict[str, int]:
        prefix = pattern.rstrip("*")
        totals: dict[str, int] = {}
        with self._lock:
            counts = dict(self._counts)
        for (key, name), count in counts.items():
            if key.startswith(prefix):
                totals[name] = totals.get(name, 0) + count
        return totals

    @property
    def admitted(self) -> int:
        return self.totals(self.admission_bucket_pattern).get("admitted", 0)

    @property
    def outcomes(self) -> dict[str, int]:
        return self.totals(self.outcome_bucket_pattern)

    @property
    def ended(self) -> int:
        return sum(count for name, count in self.outcomes.items() if name not in NOT_AN_ENDING)
