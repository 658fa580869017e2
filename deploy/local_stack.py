"""The local topology (deploy/topology.toml) started from Python, as `make run` starts it, for the end-to-end,
browser, edge, load and fault tests and the benchmarks: free ports, deploy/run-local.sh (and so the supervisor,
deploy/supervisor.py) as a child process, the state it writes once the stack is ready, and an emergency stop that
never leaves a process behind."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Named here too: the tests import them from this module.
from process_control import child_pids, pid_alive, port_is_free, port_is_listening  # noqa: E402

__all__ = ["LIFTED_EDGE_LIMITS", "ROOT", "STOP_TIMEOUT_S", "Ports", "Stack", "child_pids", "more_free_ports",
           "pgrep_full", "pick_ports", "pid_alive", "port_is_free", "port_is_listening", "running_stack", "stop_child",
           "tail"]

ROOT = Path(__file__).resolve().parents[1]
RUN_SCRIPT = ROOT / "deploy" / "run-local.sh"
# The supervisor stops the stack in three phases of at most 15 s each; an idle stack stops in about a second.
STOP_TIMEOUT_S = 60.0


# Worker listener ports `pick_ports` reserves unless told otherwise; a stack with more workers finds more.
DEFAULT_WORKER_PORTS = 4
# deploy/run-local.sh's knobs for nginx's per-address limits, set far above anything a test sends from loopback.
LIFTED_EDGE_LIMITS = {
    "EDGE_RATE_PER_SECOND": "100000",
    "EDGE_BURST": "100000",
    "EDGE_CONNECTIONS_PER_ADDRESS": "65535",
}


@dataclass
class Ports:
    public: int
    gateways: list[int]
    redis: int
    mock_llm: int
    admin: int
    # Each worker's own listener (/metrics, /healthz, /readyz), worker N on workers[N-1].
    workers: list[int] = field(default_factory=list)


def pick_ports(gateway_count: int, worker_count: int = DEFAULT_WORKER_PORTS) -> Ports:
    """A block of free consecutive loopback ports below the ephemeral range, away from `make run`'s defaults."""
    needed = 4 + gateway_count + worker_count
    for _attempt in range(100):
        base = random.randrange(20000, 30000 - needed)
        block = list(range(base, base + needed))
        if all(port_is_free(port) for port in block):
            return Ports(
                public=block[0],
                gateways=block[1 : 1 + gateway_count],
                redis=block[1 + gateway_count],
                mock_llm=block[2 + gateway_count],
                admin=block[3 + gateway_count],
                workers=block[4 + gateway_count :],
            )
    raise RuntimeError("no block of free loopback ports found in 20000-30000")


def more_free_ports(ports: Ports, count: int) -> list[int]:
    """`count` further free loopback ports, none of them already in `ports`."""
    taken = {ports.public, ports.redis, ports.mock_llm, ports.admin, *ports.gateways, *ports.workers}
    found: list[int] = []
    for _attempt in range(1000):
        if len(found) == count:
            return found
        port = random.randrange(20000, 30000)
        if port not in taken and port not in found and port_is_free(port):
            found.append(port)
    raise RuntimeError("not enough free loopback ports found in 20000-30000")


class Stack:
    """One run of deploy/run-local.sh: `profile` build, `workers` workers, one gateway per port in `ports`, and
    `settings` (DAM_* variables, and knobs of deploy/topology.toml such as EDGE_*) on top of the defaults; the
    developer's own DAM_* variables are dropped. nginx's per-address limits are lifted unless `settings` sets
    them."""

    def __init__(
        self,
        run_dir: Path,
        ports: Ports,
        profile: str = "debug",
        workers: int = 2,
        settings: dict[str, str] | None = None,
        start_timeout_s: float = 900.0,
    ):
        self.run_dir = run_dir
        self.ports = ports
        self.profile = profile
        self.workers = workers
        # Every worker needs a listener port of its own.
        if len(ports.workers) < workers:
            ports.workers = ports.workers + more_free_ports(ports, workers - len(ports.workers))
        # nginx's per-address limits are lifted unless a test sets them: every test client comes from loopback, so
        # the edge would otherwise count a whole load test as one abusive address.
        self.settings = {**LIFTED_EDGE_LIMITS, **(settings or {})}
        self.start_timeout_s = start_timeout_s
        self.output_path = run_dir.parent / f"{run_dir.name}.supervisor.log"
        self.process: subprocess.Popen | None = None
        self.known_pids: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.public}"

    def environment(self) -> dict[str, str]:
        """What the supervisor of this stack runs with: the knobs for these ports, counts and settings."""
        environment = {name: value for name, value in os.environ.items() if not name.startswith("DAM_")}
        # Settings the developer exported for their own `make run` must not leak into the test; the test uses
        # the mock LLM, whatever provider is configured in the shell.
        dropped = sorted(name for name in os.environ if name.startswith("DAM_") and name != "DAM_CONFIG_DIR")
        if dropped:
            print(f"note: ignoring these settings from the environment: {', '.join(dropped)}", flush=True)
        if "DAM_CONFIG_DIR" in os.environ:
            environment["DAM_CONFIG_DIR"] = os.environ["DAM_CONFIG_DIR"]
        environment.update(self.settings)
        environment.update(
            PROFILE=self.profile,
            RUN_DIR=str(self.run_dir),
            SCALE_GATEWAY=str(len(self.ports.gateways)),
            SCALE_WORKER=str(self.workers),
            PUBLIC_PORT=str(self.ports.public),
            GATEWAY_PORT_BASE=str(self.ports.gateways[0]),
            WORKER_PORTS=" ".join(str(port) for port in self.ports.workers[: self.workers]),
            REDIS_PORT=str(self.ports.redis),
            MOCK_LLM_PORT=str(self.ports.mock_llm),
            ADMIN_PORT=str(self.ports.admin),
            READY_TIMEOUT_S="120",
            NO_COLOR="1",
        )
        return environment

    def start(self) -> None:
        environment = self.environment()
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        output = open(self.output_path, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            ["bash", str(RUN_SCRIPT)],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        output.close()

    def output(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ready_state(self) -> dict | None:
        """RUN_DIR/stack.json, which the supervisor writes once every process is ready, if this run wrote it."""
        try:
            state = json.loads((self.run_dir / "stack.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return state if state.get("supervisor_pid") == self.process.pid else None

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            state = self.ready_state()
            if state:
                self.known_pids = {name: entry["pid"] for name, entry in state["processes"].items()}
                master = self.known_pids.get("nginx")
                for worker_pid in child_pids(master) if master else []:
                    self.known_pids[f"nginx-worker-{worker_pid}"] = worker_pid
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the supervisor exited with {self.process.returncode} before the stack was up:\n"
                    + tail(self.output(), 40)
                )
            time.sleep(0.5)
        raise AssertionError(f"the stack was not up within {self.start_timeout_s:.0f}s:\n" + tail(self.output(), 40))

    def log(self, name: str) -> str:
        try:
            return (self.run_dir / "logs" / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGINT to the supervisor, as Ctrl-C would; anything still alive after the bound is killed."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self.emergency_stop()

    def pid(self, name: str) -> int:
        """The pid of one service of the stack (`gateway-1`, `redis`, `mock-llm`, ...), from its pid file."""
        return int((self.run_dir / "pids" / f"{name}.pid").read_text().strip())

    def emergency_stop(self) -> None:
        """Used only when a check failed before the shutdown check: never leave processes behind."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for name, pid in self.known_pids.items():
            if pid_alive(pid):
                print(f"note: killing leftover {name} (pid {pid})", flush=True)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@contextmanager
def running_stack(stack: Stack, keep_logs: Callable[[], bool]) -> Iterator[Stack]:
    """Starts `stack` and yields it once every process is ready; always stops it afterwards. Its run directory and
    the supervisor's output are removed then, unless it never came up or `keep_logs()` (a test failed): then the
    output's tail is printed and both are kept."""
    came_up = False
    stack.start()
    try:
        stack.wait_until_up()
        came_up = True
        yield stack
    finally:
        stack.emergency_stop()
        if not came_up or keep_logs():
            print(f"\nsupervisor output ({stack.output_path}):\n{tail(stack.output(), 30)}\n"
                  f"logs kept in {stack.run_dir / 'logs'}", flush=True)
        else:
            shutil.rmtree(stack.run_dir, ignore_errors=True)
            stack.output_path.unlink(missing_ok=True)


def stop_child(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to a child process still running, then SIGKILL if it is not gone within `grace_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def pgrep_full(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", pattern], capture_output=True, text=True, timeout=10)
    return [line for line in found.stdout.splitlines() if line.strip()]


def tail(text: str, lines: int) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
