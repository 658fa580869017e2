"""Processes of a local stack, seen from outside: is a pid alive (a zombie counts as gone), does it belong to a run
directory, which ports are taken, and stopping a group of pids with SIGTERM, a bound, then SIGKILL. Used by the
supervisor (deploy/supervisor.py) and by the tests' view of the stack (deploy/local_stack.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (an exited child its parent has not reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the command name, which is in parentheses and may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def belongs_to_run_dir(pid: int, run_dir: Path) -> bool:
    """Whether pid's command line names the run directory (guards against a recycled pid)."""
    return f"{run_dir}/" in command_line(pid)


def child_pids(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10)
    return [int(line) for line in found.stdout.split()]


def read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def write_pid_file(path: Path, pid: int) -> None:
    """In one rename, so nobody reads a half-written pid file."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(f"{pid}\n")
    partial.replace(path)


def port_is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def port_is_free(port: int) -> bool:
    """Nothing listens and the port can be bound (no lingering connection holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not port_is_listening(port)


def send(pids: Iterable[int], number: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass


def wait_until_gone(pids: list[int], timeout_s: float, reap: Callable[[], None]) -> list[int]:
    """The pids still alive after `timeout_s`; `reap` collects exited children meanwhile."""
    deadline = time.monotonic() + timeout_s
    remaining = [pid for pid in pids if pid_alive(pid)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        reap()
        remaining = [pid for pid in remaining if pid_alive(pid)]
    return remaining


def stop_pids(pids: Iterable[int], timeout_s: float, say: Callable[[str], None], phase: str,
              reap: Callable[[], None] = lambda: None) -> bool:
    """SIGTERM to each live pid, wait up to `timeout_s` for all of them, then SIGKILL the rest. False if any
    needed SIGKILL."""
    alive = [pid for pid in pids if pid_alive(pid)]
    if not alive:
        return True
    send(alive, signal.SIGTERM)
    remaining = wait_until_gone(alive, timeout_s, reap)
    if not remaining:
        return True
    say(f"{phase}: still running after {timeout_s:.0f}s, sending SIGKILL to {' '.join(map(str, remaining))}")
    send(remaining, signal.SIGKILL)
    wait_until_gone(remaining, 5.0, reap)
    return False
