"""The fault tests' view of the local topology (deploy/topology.toml through deploy/local_stack.py): start it on free
loopback ports, send one service a signal, start it again exactly as it ran, read its memory and open files from
/proc, read and shape Redis and mock-llm. What a scenario checks lives in its own file, not here."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import Stack, pick_ports, pid_alive, stop_child, tail  # noqa: E402 - the shared module lives beside the supervisor

# Building the debug binaries from a cold cache takes minutes on 2 cores; a warm start takes seconds.
START_TIMEOUT_S = float(os.environ.get("CHAOS_START_TIMEOUT_S", "900"))
# The key prefix of the stack's services (the default of `redis.key_prefix`).
KEY_PREFIX = "dam:"
# Far above what any scenario sends from its one address behind nginx, so only the fault under test refuses chats.
GENEROUS_ANONYMOUS_LIMITS = {
    "DAM_LIMITS__TIERS__ANONYMOUS__RATE_PER_SECOND": "10000",
    "DAM_LIMITS__TIERS__ANONYMOUS__BURST": "10000",
    "DAM_LIMITS__TIERS__ANONYMOUS__MAX_ACTIVE_CHATS": "10000",
    "DAM_LIMITS__TIERS__ANONYMOUS__DAILY_TOKEN_BUDGET": "0",
}


@dataclass
class ScenarioResult:
    """What one scenario reports: its figures (printed by the runner) and its broken promises (empty: passed)."""

    name: str
    figures: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, condition: bool, message: str) -> bool:
        """Records `message` as a failure when `condition` is false; returns the condition."""
        if not condition:
            self.failures.append(message)
        return condition


def run_scenario_alone(run) -> int:
    """A scenario file's own `__main__`: runs `run` (the long version with `--long` on the command line), prints its
    figures and broken promises, and returns the exit status. The binaries are used as they are (the runner,
    `run_chaos.py`, builds them first)."""
    result = run("--long" in sys.argv[1:])
    print(f"figures: {json.dumps(result.figures, default=str)}")
    for failure in result.failures:
        print(f"FAILED: {failure}")
    print("passed" if not result.failures else f"{len(result.failures)} broken expectations")
    return 1 if result.failures else 0


@dataclass
class RestartedProcess:
    """A service started again by the helper rather than by the run script."""

    name: str
    process: subprocess.Popen


class ChaosStack:
    """A running stack plus the means to hurt it. Made by `start_chaos_stack`, which also stops it."""

    def __init__(self, stack: Stack, gateways: int, workers: int):
        self.stack = stack
        self.gateway_count = gateways
        self.worker_count = workers
        self.key_prefix = KEY_PREFIX
        # name -> (command line, environment, working directory), read from /proc while the process ran.
        self._launch: dict[str, tuple[list[str], dict[str, str], str]] = {}
        self._restarted: dict[str, RestartedProcess] = {}
        self.restarts = 0

    # -- addresses --------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def run_dir(self) -> Path:
        return self.stack.run_dir

    @property
    def redis_port(self) -> int:
        return self.stack.ports.redis

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.admin}"

    @property
    def mock_llm_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.mock_llm}"

    def gateway_url(self, index: int) -> str:
        """The gateway `gateway-{index}` directly (1-based), bypassing nginx."""
        return f"http://127.0.0.1:{self.gateway_port(index)}"

    # The same addresses as bare loopback ports, for the raw-socket clients.

    @property
    def public_port(self) -> int:
        return self.stack.ports.public

    @property
    def admin_port(self) -> int:
        return self.stack.ports.admin

    def gateway_port(self, index: int) -> int:
        return self.stack.ports.gateways[index - 1]

    def worker_url(self, index: int) -> str:
        """The listener of `worker-{index}` (1-based): /metrics, /healthz, /readyz. A restart keeps the port."""
        return f"http://127.0.0.1:{self.stack.ports.workers[index - 1]}"

    # -- processes --------------------------------------------------------------------------------------------

    def service_names(self) -> list[str]:
        names = ["redis", "mock-llm", "dam", "nginx"]
        names += [f"gateway-{index}" for index in range(1, self.gateway_count + 1)]
        names += [f"worker-{index}" for index in range(1, self.worker_count + 1)]
        return names

    def pid(self, name: str) -> int:
        """The pid of the service now: the restarted process if the helper restarted it, else the run script's."""
        if name in self._restarted:
            return self._restarted[name].process.pid
        return self.stack.pid(name)

    def alive(self, name: str) -> bool:
        try:
            return pid_alive(self.pid(name))
        except (FileNotFoundError, ValueError):
            return False

    def dead_services(self) -> list[str]:
        return [name for name in self.service_names() if not self.alive(name)]

    def remember_launch(self, name: str) -> None:
        """Reads how `name` was started (command line, environment, directory), so it can be started again."""
        if name in self._launch:
            return
        pid = self.pid(name)
        # Each argument ends with a NUL; empty arguments (redis's `--save ""`) are kept.
        command = Path(f"/proc/{pid}/cmdline").read_bytes().removesuffix(b"\0").split(b"\0")
        environment_entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        environment = {}
        for entry in environment_entries:
            name_bytes, separator, value = entry.partition(b"=")
            if separator:
                environment[name_bytes.decode()] = value.decode()
        directory = os.readlink(f"/proc/{pid}/cwd")
        self._launch[name] = ([part.decode() for part in command], environment, directory)

    def kill(self, name: str, number: int = signal.SIGKILL) -> int:
        """Sends one signal to one service; returns the pid it went to. For SIGKILL, waits (bounded) until the
        process is gone, so a restart never overlaps it."""
        self.remember_launch(name)
        pid = self.pid(name)
        os.kill(pid, number)
        if number == signal.SIGKILL:
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.02)
            if pid_alive(pid):
                raise AssertionError(f"{name} (pid {pid}) still alive 10 s after SIGKILL")
        return pid

    def restart(self, name: str) -> int:
        """Starts `name` again with the command line, environment and log file it had; returns the new pid."""
        self.remember_launch(name)
        if self.alive(name):
            raise AssertionError(f"restart({name}): it is still running")
        command, environment, directory = self._launch[name]
        log_path = self.run_dir / "logs" / f"{name}.log"
        with open(log_path, "ab") as log_file:
            log_file.write(f"\n---- restarted by the fault test at {time.strftime('%H:%M:%S')} ----\n".encode())
            log_file.flush()
            process = subprocess.Popen(
                command,
                cwd=directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._restarted[name] = RestartedProcess(name, process)
        # The run script stops whatever the pid file names, so its Ctrl-C path stops the restarted process too.
        (self.run_dir / "pids" / f"{name}.pid").write_text(f"{process.pid}\n")
        self.stack.known_pids[f"{name}-restarted-{process.pid}"] = process.pid
        self.restarts += 1
        return process.pid

    def adopt_pid_files(self) -> dict[str, int]:
        """After a tool outside this helper restarted services and wrote their new pids to the pid files (as
        deploy/rolling-restart.sh does): takes the pid files as the truth, and counts those processes among the ones
        the emergency stop kills should the run script's stop miss them. Returns name -> pid."""
        adopted = {}
        for name in self.service_names():
            try:
                pid = self.stack.pid(name)
            except (FileNotFoundError, ValueError):
                continue
            restarted = self._restarted.get(name)
            if restarted is not None and restarted.process.pid != pid:
                restarted.process.poll()
                del self._restarted[name]
            self.stack.known_pids.setdefault(f"{name}-adopted-{pid}", pid)
            adopted[name] = pid
        return adopted

    def _reap(self) -> None:
        for restarted in self._restarted.values():
            restarted.process.poll()

    def stop_restarted(self) -> None:
        """SIGTERM to every restarted process still running, in the run script's stop order, then SIGKILL."""
        order = ["gateway-", "worker-", "dam", "mock-llm", "redis"]
        for prefix in order:
            for restarted in self._restarted.values():
                if restarted.name.startswith(prefix):
                    stop_child(restarted.process, grace_s=20)

    # -- /proc ------------------------------------------------------------------------------------------------

    def rss_kib(self, name: str) -> int:
        for line in Path(f"/proc/{self.pid(name)}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def threads(self, name: str) -> int:
        for line in Path(f"/proc/{self.pid(name)}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return 0

    def open_fds(self, name: str) -> int:
        return len(os.listdir(f"/proc/{self.pid(name)}/fd"))

    # -- Redis, mock-llm, metrics -----------------------------------------------------------------------------

    def redis(self, *arguments: str, timeout_s: float = 10) -> str:
        """One redis-cli command against the stack's Redis; its output as text (raises when redis-cli fails)."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), *arguments],
            capture_output=True, text=True, timeout=timeout_s,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(arguments)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def redis_answers(self) -> bool:
        try:
            return self.redis("PING", timeout_s=3) == "PONG"
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def set_mock_llm(self, **knobs) -> dict:
        """Replaces mock-llm's default knobs at runtime (PUT /config); returns the settings now in force."""
        status, body = http_json("PUT", f"{self.mock_llm_url}/config", knobs)
        if status != 200:
            raise AssertionError(f"PUT /config of mock-llm answered {status}: {body}")
        return body

    def mock_llm_stats(self) -> dict:
        return http_json("GET", f"{self.mock_llm_url}/stats")[1]

    def admin_status(self) -> dict | None:
        """The dam's /admin/status (queues, running jobs, breaker, outcomes), or None when it cannot answer."""
        try:
            status, body = http_json("GET", f"{self.admin_url}/admin/status", timeout_s=5)
        except OSError:
            return None
        return body if status == 200 else None

    def metrics(self, name: str) -> str:
        """A gateway's (`gateway-1`), a worker's (`worker-1`) or the dam's (`dam`) Prometheus text."""
        if name == "dam":
            url = f"{self.admin_url}/metrics"
        elif name.startswith("worker-"):
            url = f"{self.worker_url(int(name.split('-')[1]))}/metrics"
        else:
            url = f"{self.gateway_url(int(name.split('-')[1]))}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def open_streams(self, gateway: str) -> int:
        """The gateway's `dam_gateway_open_streams` gauge (0 when unreadable)."""
        try:
            text = self.metrics(gateway)
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith("dam_gateway_open_streams"):
                return int(float(line.split()[-1]))
        return 0

    def log(self, name: str) -> str:
        return self.stack.log(name)


# The statistics buckets the admission and ending scripts count in (RedisKeys::admission_counts and
# job_outcome_counts in crates/protocol/src/keys.rs, whose tests pin the names). Each bucket is a hash of
# decision (or outcome) -> count that lives 120 s, so a ledger reads them more often than that.
ADMISSION_BUCKET_PATTERN = KEY_PREFIX + "stats:admission:*"
OUTCOME_BUCKET_PATTERN = KEY_PREFIX + "stats:outcomes:*"
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
            for pattern in (ADMISSION_BUCKET_PATTERN, OUTCOME_BUCKET_PATTERN):
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
        return self.totals(ADMISSION_BUCKET_PATTERN).get("admitted", 0)

    @property
    def outcomes(self) -> dict[str, int]:
        return self.totals(OUTCOME_BUCKET_PATTERN)

    @property
    def ended(self) -> int:
        return sum(count for name, count in self.outcomes.items() if name not in NOT_AN_ENDING)


def http_json(method: str, url: str, body: object | None = None, timeout_s: float = 10,
              headers: dict | None = None) -> tuple[int, object]:
    """(status, decoded JSON body or the raw text); HTTP errors are answers, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_until(condition, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Polls `condition` until it is true or `timeout_s` passed; returns its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


@contextlib.contextmanager
def start_chaos_stack(name: str, gateways: int = 2, workers: int = 2, settings: dict | None = None,
                      result: ScenarioResult | None = None):
    """Starts the topology (debug build) in a fresh run directory and yields a `ChaosStack`; always stops every
    process on the way out, restarted ones included. The run directory (logs, pids, Redis's files) is kept when
    the block raised, when `result` holds failures, or when CHAOS_KEEP_RUN_DIR=1."""
    run_parent = Path(tempfile.mkdtemp(prefix=f"dam-chaos-{name}-"))
    stack = Stack(
        run_parent / "run",
        pick_ports(gateways),
        profile="debug",
        workers=workers,
        settings={**GENEROUS_ANONYMOUS_LIMITS, **(settings or {})},
        start_timeout_s=START_TIMEOUT_S,
    )
    chaos = ChaosStack(stack, gateways, workers)
    print(f"  starting the stack in {stack.run_dir} ({gateways} gateways, {workers} workers)", flush=True)
    failed = True
    try:
        stack.start()
        stack.wait_until_up()
        for service in chaos.service_names():
            chaos.remember_launch(service)
        yield chaos
        failed = False
    finally:
        try:
            stack.stop()
        finally:
            chaos.stop_restarted()
            stack.emergency_stop()
        if failed or (result is not None and result.failures) or os.environ.get("CHAOS_KEEP_RUN_DIR") == "1":
            print(f"  run directory kept: {stack.run_dir}", flush=True)
        else:
            shutil.rmtree(run_parent, ignore_errors=True)


__all__ = [
    "ChaosStack",
    "RedisLedger",
    "ScenarioResult",
    "http_json",
    "start_chaos_stack",
    "tail",
    "wait_until",
]


def drained(chaos: ChaosStack) -> bool:
    """Every lane empty and every worker's processing list empty, per the dam's status report."""
    status = chaos.admin_status()
    if status is None:
        return False
    return all(lane["depth"] == 0 for lane in status["lanes"]) and status["jobs_running"] == 0


def describe_backlog(chaos: ChaosStack) -> str:
    status = chaos.admin_status()
    if status is None:
        return "the dam's status is unreadable"
    lanes = {lane["lane"]: lane["depth"] for lane in status["lanes"]}
    workers = {worker["id"]: worker["jobs_in_flight"]
               for group in ("alive", "presumed_dead") for worker in status["workers"][group]}
    return f"lanes {lanes}, processing lists {workers}"
