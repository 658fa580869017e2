"""--local: the rolling restart of `make run`'s processes (deploy/supervisor.py), found through RUN_DIR/pids/. For each
gateway-N.pid, then each worker-N.pid: capture how the process runs (deploy/captured_process.py), mark the exit as a
restart (NAME.restarting), SIGTERM it (a gateway stops accepting and drains its streams, a worker finishes or hands
back its jobs), wait for its exit bounded by its drain setting plus a margin and SIGKILL only past that bound, start
it again exactly as it ran, write the new pid to its pid file (the supervisor then stops that process on Ctrl-C), and
wait until its /readyz answers 200. The next process is stopped only once the previous one is ready again, so with
two or more gateways one always serves. Tested by tests/chaos/scenario_rolling_restart.py."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from captured_process import CapturedProcess, answers_ready, is_whole_number
from process_control import belongs_to_run_dir, pid_alive, read_pid_file, send, write_pid_file
from restart_progress import (
    POLL_INTERVAL_S,
    CurrentStep,
    RollingRestartError,
    StepFailed,
    say,
    seconds_since,
    wait_while,
)
from stack_plan import ROOT

# Per kind: the section of its settings and its drain setting.
KIND_SETTINGS = {
    "gateway": ("gateway", "shutdown_drain_s"),
    "worker": ("worker", "drain_timeout_s"),
}
# How long a process may take to vanish after SIGKILL before the restart gives up on it.
AFTER_SIGKILL_WAIT_S = 10
LOG_LINES_SHOWN = 20


def text_or_empty(path: Path) -> str:
    """A pid file's or log's text without its final newline; empty when it cannot be read."""
    try:
        return path.read_text(errors="replace").rstrip("\n")
    except OSError:
        return ""


def drain_and_ready_url(name: str, kind: str, captured: CapturedProcess) -> tuple[int, str]:
    section, drain_key = KIND_SETTINGS[kind]
    settings = captured.settings()
    if isinstance(settings, str):
        raise StepFailed(f"{name}: cannot read its settings: {settings}")
    ready_url = captured.ready_url(settings, section)
    if ready_url is None:
        raise StepFailed(f"{name}: no usable {kind} port")
    return int(settings[section][drain_key]), ready_url


class LocalRollingRestart:
    """One rolling restart of a run directory's gateways and workers; `run` does it or raises RollingRestartError."""

    def __init__(self, run_dir: str, ready_timeout_s: int, stop_margin_s: int, steps: CurrentStep):
        # A relative run directory is taken from the repository root, as make run does.
        self.run_dir = ROOT / run_dir
        self.pid_dir = self.run_dir / "pids"
        self.log_dir = self.run_dir / "logs"
        self.ready_timeout_s = ready_timeout_s
        self.stop_margin_s = stop_margin_s
        self.steps = steps

    def running_pid(self, name: str) -> tuple[int | None, str]:
        """The pid its pid file names if that one is a live process of this run directory, and the file's text."""
        text = text_or_empty(self.pid_dir / f"{name}.pid")
        pid = int(text) if is_whole_number(text) else None
        if pid is None or not pid_alive(pid) or not belongs_to_run_dir(pid, self.run_dir):
            return None, text
        return pid, text

    def names_of(self, kind: str) -> list[str]:
        """The processes of one kind (gateway or worker) that have a pid file, in number order."""
        pattern = re.compile(rf"{kind}-([0-9]+)\.pid")
        found = [(int(match.group(1)), match.group(0)) for path in self.pid_dir.glob(f"{kind}-*.pid")
                 if (match := pattern.fullmatch(path.name))]
        return [file_name.removesuffix(".pid") for _, file_name in sorted(found)]

    def check_whole_and_ready(self, names: list[str]) -> None:
        """Everything must be up and ready before anything is stopped: a rolling restart of a stack that already
        lacks a gateway would leave none."""
        problems = []
        for name in names:
            pid, text = self.running_pid(name)
            if pid is None:
                problems.append(f"{name} is not running (pid file: '{text}')")
                continue
            captured = CapturedProcess.capture(pid)
            if captured is None:
                problems.append(f"{name} (pid {pid}): cannot read its command line and environment")
                continue
            section, _ = KIND_SETTINGS["gateway" if name.startswith("gateway-") else "worker"]
            settings = captured.settings()
            if isinstance(settings, str):
                problems.append(f"{name} (pid {pid}): cannot read its settings: {settings}")
                continue
            url = captured.ready_url(settings, section)
            if url is None or not answers_ready(url):
                problems.append(f"{name} (pid {pid}) is not ready ({url or 'no port'})")
        if problems:
            for problem in problems:
                say(problem)
            raise RollingRestartError("nothing was restarted: the stack must be whole and ready first")

    def run(self) -> None:
        if not self.pid_dir.is_dir():
            raise RollingRestartError(f"{self.pid_dir} does not exist: is the stack running (make run) with "
                                      f"--run-dir {self.run_dir}?")
        gateways, workers = self.names_of("gateway"), self.names_of("worker")
        if not gateways:
            raise RollingRestartError(f"no gateway pid files in {self.pid_dir}: is the stack running?")
        names = gateways + workers
        self.check_whole_and_ready(names)
        if len(gateways) < 2:
            say("warning: only one gateway: nginx has none to send requests to while it restarts")

        self.steps.install_interrupt_handler()
        started = time.monotonic()
        say(f"restarting {len(gateways)} gateways, then {len(workers)} workers, of {self.run_dir}")
        for name in names:
            try:
                self.restart(name, name.split("-", 1)[0])
            except StepFailed as failure:
                say(str(failure))
                raise RollingRestartError(f"{name} did not come back ready; the processes after it were not "
                                          "restarted") from None
        say(f"done: {len(names)} processes restarted one at a time in {seconds_since(started)}s")

    def restart(self, name: str, kind: str) -> None:
        """Stops one process of the run directory and starts it again; StepFailed when it did not come back
        ready."""
        pid_file = self.pid_dir / f"{name}.pid"
        old_pid, text = self.running_pid(name)
        if old_pid is None:
            raise StepFailed(f"{name}: pid file {pid_file} names no running process of {self.run_dir} ('{text}')")
        captured = CapturedProcess.capture(old_pid)
        if captured is None:
            raise StepFailed(f"{name}: cannot read pid {old_pid}'s command line and environment")
        drain_s, ready_url = drain_and_ready_url(name, kind, captured)
        step_started = time.monotonic()
        self.stop(name, old_pid, drain_s)
        new_pid = self.start_again(name, old_pid, captured)
        ready_started = time.monotonic()
        self.wait_until_ready(name, new_pid, ready_url)
        # The supervisor removes the pid file of a process that exited, unless it already names another one; should
        # it have read the file just before the write, it removed the new one: write it again.
        if read_pid_file(pid_file) != new_pid:
            write_pid_file(pid_file, new_pid)
        differences = captured.differences_from(new_pid)
        if differences:
            say(f"{name}: warning: pid {new_pid} does not run exactly as pid {old_pid} did ({differences})")
        say(f"{name}: pid {new_pid} ready {seconds_since(ready_started)}s after its start; {name} restarted in "
            f"{seconds_since(step_started)}s")
        self.steps.description = ""

    def stop(self, name: str, pid: int, drain_s: int) -> None:
        """SIGTERM, then the drain bound plus the margin, and SIGKILL only past it."""
        bound_s = drain_s + self.stop_margin_s
        stop_started = time.monotonic()
        self.steps.description = f"stopping {name} (pid {pid})"
        # Tells the supervisor, which sees its child exit, that this is a restart and not a crash (removed once the
        # new process's pid is written).
        (self.pid_dir / f"{name}.restarting").touch()
        send([pid], signal.SIGTERM)
        killed = wait_while(lambda: pid_alive(pid), bound_s)
        if killed:
            say(f"{name}: pid {pid} still running {bound_s}s after SIGTERM (drain {drain_s}s + margin "
                f"{self.stop_margin_s}s): sending SIGKILL")
            send([pid], signal.SIGKILL)
            if wait_while(lambda: pid_alive(pid), AFTER_SIGKILL_WAIT_S):
                (self.pid_dir / f"{name}.restarting").unlink(missing_ok=True)
                raise StepFailed(f"{name}: pid {pid} survived SIGKILL for {AFTER_SIGKILL_WAIT_S}s; not starting a "
                                 "second copy")
        say(f"{name}: pid {pid} exited {seconds_since(stop_started)}s after SIGTERM{' (killed)' if killed else ''}")

    def start_again(self, name: str, old_pid: int, captured: CapturedProcess) -> int:
        """Starts it as it ran and writes its new pid; the interruption of this step waits for both."""
        pid_file = self.pid_dir / f"{name}.pid"
        self.steps.description = f"starting {name} again (pid {old_pid} has exited)"
        with self.steps.deferring_interrupts():
            try:
                new_pid = captured.start_again(self.log_dir / f"{name}.log")
            except (OSError, ValueError, subprocess.SubprocessError) as error:
                (self.pid_dir / f"{name}.restarting").unlink(missing_ok=True)
                raise StepFailed(f"{name}: cannot start it again: {error}") from None
            try:
                write_pid_file(pid_file, new_pid)
            except OSError:
                raise StepFailed(f"{name}: cannot write {pid_file} (new pid {new_pid})") from None
        (self.pid_dir / f"{name}.restarting").unlink(missing_ok=True)
        return new_pid

    def wait_until_ready(self, name: str, new_pid: int, ready_url: str) -> None:
        log_path = self.log_dir / f"{name}.log"
        self.steps.description = f"waiting for {name} (new pid {new_pid}) to be ready"
        deadline = time.monotonic() + self.ready_timeout_s
        while not answers_ready(ready_url):
            if not pid_alive(new_pid):
                lines = text_or_empty(log_path).splitlines()[-LOG_LINES_SHOWN:]
                raise StepFailed("\n".join([f"{name}: new pid {new_pid} exited during startup; last lines of "
                                            f"{log_path}:", *(f"    {line}" for line in lines)]))
            if time.monotonic() >= deadline:
                raise StepFailed(f"{name}: new pid {new_pid} is not ready {self.ready_timeout_s}s after its start "
                                 f"({ready_url}); it is left running")
            time.sleep(POLL_INTERVAL_S)
