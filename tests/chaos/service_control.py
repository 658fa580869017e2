"""ChaosStack, a running stack plus the means to hurt it: its addresses, its services' processes (send one a signal,
start it again exactly as it ran, adopt the pid files another tool rewrote), their memory and open files from
/proc, and reads and knobs of Redis, mock-llm and the metrics. Starting and stopping the stack is chaos_stack.py's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
from local_stack import Stack, pid_alive, stop_child  # noqa: E402 - the shared module lives beside the supervisor

# The key prefix of the stack's services (the default of `redis.key_prefix`).
KEY_PREFIX = "dam:"


@dataclass
class RestartedProcess:
    """A service started again by the helper rather than by the supervisor."""

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
        """The pid of the service now: the restarted process if the helper restarted it, else the supervisor's."""
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
        # The supervisor stops whatever the pid file names, so its Ctrl-C path stops the restarted process too.
        (self.run_dir / "pids" / f"{name}.pid").write_text(f"{process.pid}\n")
        self.stack.known_pids[f"{name}-restarted-{process.pid}"] = process.pid
        self.restarts += 1
        return process.pid

    def adopt_pid_files(self) -> dict[str, int]:
        """After a tool outside this helper restarted services and wrote their new pids to the pid files (as
        deploy/rolling-restart.sh does): takes the pid files as the truth, and counts those processes among the ones
        the emergency stop kills should the supervisor's stop miss them. Returns name -> pid."""
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
        """SIGTERM to every restarted process still running, in the supervisor's stop order, then SIGKILL."""
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
