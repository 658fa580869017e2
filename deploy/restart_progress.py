"""How a rolling restart reports what it does: one line per step on stdout, stamped with the UTC time of day to match
with the services' logs; errors on stderr; and, on SIGINT or SIGTERM, a message naming the step it interrupted.
Shared by deploy/rolling_restart.py and its two modes; what is restarted, and how, does not belong here."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Exit status of an interrupted rolling restart, as a shell reports a process ended by SIGINT.
INTERRUPTED_EXIT_STATUS = 130
# Pause between two looks at a process or a readiness URL.
POLL_INTERVAL_S = 0.1


class RollingRestartError(Exception):
    """Ends the rolling restart with status 1; the message says why (printed as `[rolling-restart] error: ...`)."""


class StepFailed(Exception):
    """One process or container did not come back; the message says why and is printed as a step line (an empty
    one: the step has said it already)."""


def say(message: str) -> None:
    print(f"[rolling-restart {time.strftime('%H:%M:%S', time.gmtime())}] {message}", flush=True)


def print_error(message: str) -> None:
    print(f"[rolling-restart] error: {message}", file=sys.stderr, flush=True)


def seconds_since(start: float) -> str:
    """Seconds (one decimal) from a time.monotonic() reading until now."""
    return f"{time.monotonic() - start:.1f}"


def wait_while(condition: Callable[[], bool], timeout_s: float, pause_s: float = POLL_INTERVAL_S) -> bool:
    """Looks at `condition` until it is false or `timeout_s` has passed; whether it still holds."""
    deadline = time.monotonic() + timeout_s
    while condition():
        if time.monotonic() >= deadline:
            return True
        time.sleep(pause_s)
    return False


class CurrentStep:
    """What the rolling restart is doing now, named by the message of an interruption so that the operator knows
    where to look (a process may be stopped and not started again, or started and not yet ready)."""

    def __init__(self) -> None:
        self.description = ""
        self._deferring = False
        self._interrupted = False

    def install_interrupt_handler(self) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._on_signal)

    @contextmanager
    def deferring_interrupts(self) -> Iterator[None]:
        """An interruption inside waits until the block is done: a command run here (docker compose, or the start
        of a process and the write of its pid file) is not cut in half."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if self._interrupted:
                self._exit()

    def _on_signal(self, _number: int, _frame) -> None:
        if self._deferring:
            self._interrupted = True
        else:
            self._exit()

    def _exit(self) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
        if self.description:
            print(f"[rolling-restart] interrupted while {self.description}; check the pid files and /readyz before "
                  "going on", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT_STATUS)
