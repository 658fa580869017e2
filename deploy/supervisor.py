"""`make run`'s supervisor: runs the local topology of deploy/topology.toml on loopback and stays in the
foreground. It starts the processes wave by wave (a wave once the one before is ready), writes RUN_DIR/stack.json
and prints how to use the stack once every process is ready, reports a process that exits, and on SIGINT, SIGTERM
or SIGHUP stops everything in the topology's stop phases: SIGTERM, STOP_TIMEOUT_S, then SIGKILL.

Run it through deploy/run-local.sh (which installs the system packages first). `--clean` stops what a killed run
left behind (only processes whose command line names RUN_DIR) and removes RUN_DIR, and so Redis's data.

A service killed while the stack runs may be started again by hand (the fault tests and deploy/rolling-restart.sh
do): writing its new pid to RUN_DIR/pids/NAME.pid makes the stop stop that process in the old one's place, and
RUN_DIR/pids/NAME.restarting marks its exit as a restart rather than a crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_control import (  # noqa: E402 - the modules beside this one
    belongs_to_run_dir,
    child_pids,
    command_line,
    pid_alive,
    port_is_listening,
    read_pid_file,
    stop_pids,
    write_pid_file,
)
from stack_plan import ROOT, Plan, PlannedProcess, PlanError, make_plan  # noqa: E402
from stack_startup import (  # noqa: E402
    banner,
    build_binaries,
    check_programs,
    is_ready,
    open_files_warnings,
    prepare_nginx,
    raise_open_files_limit,
    service_settings,
)

STATE_FILE = "stack.json"
SUPERVISOR_PID_FILE = "stack.pid"


class StartupFailed(Exception):
    """The stack cannot start; the message says why (the processes already started are stopped)."""


class Supervisor:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.started: dict[str, subprocess.Popen] = {}  # in start order
        self.reported: set[str] = set()
        self.stop_signal: str | None = None
        self.stopping = False

    def say(self, message: str) -> None:
        print(f"[supervisor] {message}", file=sys.stderr, flush=True)

    # -- signals -----------------------------------------------------------------------------------------------

    def on_signal(self, number: int, _frame) -> None:
        if not self.stopping and self.stop_signal is None:
            self.stop_signal = signal.Signals(number).name
            self.say(f"received {self.stop_signal}")

    def install_signal_handlers(self) -> None:
        # Set even when the caller started us with SIGINT ignored (`&` in a script, nohup): Ctrl-C must work.
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, self.on_signal)

    def check_not_stopping(self) -> None:
        if self.stop_signal:
            raise StartupFailed(f"stopped by {self.stop_signal} while starting")

    # -- before anything starts --------------------------------------------------------------------------------

    def check_no_earlier_run(self) -> None:
        running = read_pid_file(self.plan.run_dir / SUPERVISOR_PID_FILE)
        if running and running != os.getpid() and pid_alive(running) and "supervisor.py" in command_line(running):
            raise StartupFailed(f"a stack is already running from {self.plan.run_dir} (supervisor pid {running}); "
                                "stop it with Ctrl-C, or use another RUN_DIR and ports")
        for pid_file in sorted(self.plan.pid_dir.glob("*.pid")):
            pid = read_pid_file(pid_file)
            if pid and pid_alive(pid) and belongs_to_run_dir(pid, self.plan.run_dir):
                raise StartupFailed(f"{pid_file.stem} (pid {pid}) of an earlier run in {self.plan.run_dir} is still "
                                    "running; run 'make clean-run' (or 'deploy/run-local.sh --clean') to stop it")

    def check_ports_free(self) -> None:
        for process in self.plan.processes:
            if port_is_listening(process.port):
                raise StartupFailed(f"port {process.port} (for {process.name}) is already in use on this machine; stop "
                                    f"whatever holds it (ss -ltnp 'sport = :{process.port}') or pick another port "
                                    "with the knobs in deploy/topology.toml")

    # -- starting ----------------------------------------------------------------------------------------------

    def start(self, process: PlannedProcess) -> None:
        """In a session of its own (a terminal's Ctrl-C reaches only the supervisor, which then stops the stack in
        order), its output in RUN_DIR/logs/NAME.log."""
        if process.binary:
            link = self.plan.run_dir / "bin" / process.name
            link.unlink(missing_ok=True)
            link.symlink_to(self.plan.bin_dir / process.binary)
        environment = {**self.plan.environment, **process.environment}
        if not process.sees_llm_api_key:
            environment.pop("DAM_LLM__API_KEY", None)
        program = shutil.which(process.command[0], path=os.environ.get("PATH", "") + ":/usr/sbin")
        with open(self.plan.log_dir / f"{process.name}.log", "wb") as log_file:
            child = subprocess.Popen([program or process.command[0], *process.command[1:]], cwd=ROOT,
                                     env=environment, stdin=subprocess.DEVNULL, stdout=log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.started[process.name] = child
        write_pid_file(self.plan.pid_dir / f"{process.name}.pid", child.pid)

    def log_tail(self, name: str, lines: int = 25) -> None:
        path = self.plan.log_dir / f"{name}.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            text = []
        self.say(f"last lines of {path}:")
        for line in text:
            print(f"    {line}", file=sys.stderr, flush=True)

    def wait_until_ready(self, processes: list[PlannedProcess], deadline: float) -> None:
        pending = list(processes)
        while pending:
            self.check_not_stopping()
            for process in pending:
                if self.started[process.name].poll() is not None:
                    self.log_tail(process.name)
                    raise StartupFailed(f"{process.name} exited during startup (log: "
                                        f"{self.plan.log_dir / process.name}.log)")
            pending = [process for process in pending if not is_ready(process)]
            if pending and time.monotonic() >= deadline:
                for process in pending:
                    self.say(f"{process.name} is not ready: {process.ready} check of port {process.port} fails")
                    self.log_tail(process.name)
                raise StartupFailed(f"the stack was not ready within {self.plan.knobs['READY_TIMEOUT_S']}s")
            if pending:
                time.sleep(0.2)

    def start_everything(self) -> None:
        deadline = time.monotonic() + int(self.plan.knobs["READY_TIMEOUT_S"])
        plan = self.plan
        gateways, workers = len(plan.of_kind("gateway")), len(plan.of_kind("worker"))
        self.say(f"starting in {plan.run_dir} (profile {plan.knobs['PROFILE']}, {gateways} gateways, "
                 f"{workers} workers)")
        if not plan.use_mock_llm:
            key_state = "set" if plan.environment.get("DAM_LLM__API_KEY") else "not set"
            self.say(f"real LLM at {plan.environment['DAM_LLM__BASE_URL']} (api key {key_state}), model "
                     f"{plan.served_model}; mock-llm is not started")
        for wave in sorted({process.wave for process in plan.processes}):
            members = [process for process in plan.processes if process.wave == wave]
            for process in members:
                self.check_not_stopping()
                if process.kind == "nginx":
                    settings = service_settings(plan)
                    for warning in open_files_warnings(settings):
                        self.say(warning)
                    prepare_nginx(plan, settings)
                self.start(process)
            self.wait_until_ready(members, deadline)
        # Every process still ready once the last wave is (none died meanwhile).
        self.wait_until_ready(plan.processes, deadline)

    def write_state(self) -> None:
        """RUN_DIR/stack.json: what runs where, written once every process is ready (deploy/local_stack.py waits
        for it)."""
        state = {
            "supervisor_pid": os.getpid(),
            "public_url": self.plan.public_url,
            "processes": {process.name: {"pid": self.started[process.name].pid, "port": process.port,
                                         "ready_url": process.ready_url if process.ready != "redis-ping" else None}
                          for process in self.plan.processes},
        }
        partial = self.plan.run_dir / f"{STATE_FILE}.new"
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self.plan.run_dir / STATE_FILE)

    # -- serving -----------------------------------------------------------------------------------------------

    def current_pid(self, name: str) -> int:
        """The pid its pid file names when that one is alive and of this run (started again by hand after it
        died), else the pid started here."""
        started = self.started[name].pid
        named = read_pid_file(self.plan.pid_dir / f"{name}.pid")
        if named and named != started and pid_alive(named) and belongs_to_run_dir(named, self.plan.run_dir):
            return named
        return started

    def reap_and_report(self) -> None:
        for name, child in self.started.items():
            if name in self.reported or child.poll() is None:
                continue
            self.reported.add(name)
            if self.stopping:
                continue
            if (self.plan.pid_dir / f"{name}.restarting").exists():
                self.say(f"{name} (pid {child.pid}) stopped for a restart by deploy/rolling-restart.sh")
            else:
                self.say(f"{name} exited on its own with status {child.returncode}; the rest keep running")
                self.log_tail(name)
            # Only if the file still names the process that exited: one started again in its place keeps it.
            pid_file = self.plan.pid_dir / f"{name}.pid"
            if read_pid_file(pid_file) == child.pid:
                pid_file.unlink(missing_ok=True)

    def serve(self) -> int:
        """Until a signal (0), or until every process has exited (1). A process that ends on its own is reported
        and the rest keep serving, so one gateway can be stopped to watch nginx fail over."""
        while not self.stop_signal:
            self.reap_and_report()
            if not any(pid_alive(self.current_pid(name)) for name in self.started):
                self.say("every process has exited")
                return 1
            time.sleep(0.2)
        return 0

    # -- stopping ----------------------------------------------------------------------------------------------

    def stop_everything(self) -> bool:
        """In the order that loses no work: the edge and gateways (no new chats), then workers and dam (running
        jobs finish or go back to the queue while Redis and the LLM are still up), then mock-llm and Redis."""
        self.stopping = True
        if not self.started:
            return True
        self.say("stopping the stack")
        began = time.monotonic()
        timeout_s = float(self.plan.knobs["STOP_TIMEOUT_S"])
        nginx = self.started.get("nginx")
        nginx_workers = child_pids(nginx.pid) if nginx and nginx.poll() is None else []
        clean = True
        for phase in sorted({process.stop_phase for process in self.plan.processes}):
            names = [process.name for process in self.plan.processes
                     if process.stop_phase == phase and process.name in self.started]
            pids = [self.current_pid(name) for name in names]
            clean &= stop_pids(pids, timeout_s, self.say, " ".join(names), self.reap_and_report)
        # nginx workers exit with their master; make sure of it.
        clean &= stop_pids(nginx_workers, timeout_s, self.say, "nginx workers", self.reap_and_report)
        left = [pid for pid in {*(self.current_pid(name) for name in self.started),
                                *(child.pid for child in self.started.values()), *nginx_workers} if pid_alive(pid)]
        if left:
            self.say(f"error: processes still alive after SIGKILL: {' '.join(map(str, left))}")
            return False
        for leftover in (*self.plan.pid_dir.glob("*.pid"), self.plan.run_dir / SUPERVISOR_PID_FILE,
                         self.plan.run_dir / STATE_FILE):
            leftover.unlink(missing_ok=True)
        how = "" if clean else ", some only to SIGKILL"
        self.say(f"stopped: every process exited{how} ({time.monotonic() - began:.1f}s)")
        return True

    # -- the whole run -----------------------------------------------------------------------------------------

    def prepare_run_dir(self) -> None:
        for directory in ("logs", "pids", "bin", "redis", "nginx/temp"):
            (self.plan.run_dir / directory).mkdir(parents=True, exist_ok=True)
        for leftover in (*self.plan.pid_dir.glob("*.pid"), *self.plan.pid_dir.glob("*.restarting")):
            leftover.unlink(missing_ok=True)
        (self.plan.run_dir / STATE_FILE).unlink(missing_ok=True)
        write_pid_file(self.plan.run_dir / SUPERVISOR_PID_FILE, os.getpid())

    def run(self) -> int:
        self.install_signal_handlers()
        status = 1
        try:
            self.plan.run_dir.mkdir(parents=True, exist_ok=True)
            self.check_no_earlier_run()
            self.check_ports_free()
            for warning in raise_open_files_limit():
                self.say(warning)
            check_programs(self.plan)
            if self.plan.knobs["SKIP_BUILD"] != "1":
                build_binaries(self.plan, self.say, lambda: self.stop_signal is not None)
            self.check_not_stopping()
            for process in self.plan.processes:
                if process.binary and not (self.plan.bin_dir / process.binary).is_file():
                    raise StartupFailed(f"{self.plan.bin_dir / process.binary} is missing; build it (PROFILE="
                                        f"{self.plan.knobs['PROFILE']}) or drop SKIP_BUILD")
            self.prepare_run_dir()
            self.start_everything()
            self.write_state()
            print(banner(self.plan), flush=True)
            status = self.serve()
        except (StartupFailed, PlanError, OSError, subprocess.CalledProcessError) as error:
            if self.stop_signal:
                status = 0  # asked to stop while starting: a stop like any other, not a failure
            elif isinstance(error, subprocess.CalledProcessError):
                self.say(f"error: {Path(error.cmd[0]).name} failed with status {error.returncode} (see above)")
            else:
                self.say(f"error: {error}")
        finally:
            stopped = self.stop_everything()
        return status if stopped else 1


def clean(plan: Plan, say) -> int:
    """Stops what an earlier, killed run left behind (only processes whose command line names RUN_DIR), and
    removes RUN_DIR."""
    running = read_pid_file(plan.run_dir / SUPERVISOR_PID_FILE)
    if running and pid_alive(running) and "supervisor.py" in command_line(running):
        say(f"error: a stack is running from {plan.run_dir} (supervisor pid {running}); stop it with Ctrl-C or "
            f"kill -TERM {running} first")
        return 1
    leftovers: list[int] = []
    for pid_file in sorted(plan.pid_dir.glob("*.pid")):
        pid = read_pid_file(pid_file)
        if pid and pid_alive(pid) and belongs_to_run_dir(pid, plan.run_dir):
            # nginx workers do not carry the run directory in their title: take them with their master.
            leftovers += [*child_pids(pid), pid]
    if leftovers:
        say(f"stopping leftovers of an earlier run: {' '.join(map(str, leftovers))}")
        stop_pids(leftovers, float(plan.knobs["STOP_TIMEOUT_S"]), say, "leftovers")
    shutil.rmtree(plan.run_dir, ignore_errors=True)
    say(f"removed {plan.run_dir}")
    return 0


def main(arguments: list[str]) -> int:
    def say(message: str) -> None:
        print(f"[supervisor] {message}", file=sys.stderr, flush=True)

    if arguments not in ([], ["--clean"]):
        say(f"error: unknown argument '{arguments[0]}' (the only argument is --clean; everything else is set by "
            "the environment variables of deploy/topology.toml's [knobs])")
        return 2
    try:
        plan = make_plan()
    except PlanError as error:
        say(f"error: {error}")
        return 1
    if arguments == ["--clean"]:
        return clean(plan, say)
    return Supervisor(plan).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
