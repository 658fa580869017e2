"""How one running process was started, read from /proc (command line, environment, working directory, open-files
limit); its settings as the service itself loads them (`dam settings` in its environment and directory); and
starting it again exactly so. Used by deploy/rolling_restart_local.py, which decides when."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


WHOLE_NUMBER = re.compile(r"[0-9]+")
# Straight to loopback, whatever proxy the caller's environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
READY_CHECK_TIMEOUT_S = 2


def is_whole_number(text: str | None) -> bool:
    return text is not None and WHOLE_NUMBER.fullmatch(text) is not None


def read_nul_separated(path: str) -> list[str]:
    """The entries of /proc/PID/cmdline or environ; empty entries (an empty argument) survive, and any byte but
    NUL (undecodable ones are kept as surrogates, so they are written back unchanged)."""
    entries = os.fsdecode(Path(path).read_bytes()).split("\0")
    return entries[:-1] if entries and entries[-1] == "" else entries


def answers_ready(url: str) -> bool:
    """200 from the URL within about 2 s."""
    try:
        with DIRECT.open(url, timeout=READY_CHECK_TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class CapturedProcess:
    command: list[str]
    environment: list[str]  # NAME=value entries, in the process's order
    directory: str
    open_files: int | None  # the soft limit; None when unlimited or unreadable

    @classmethod
    def capture(cls, pid: int) -> CapturedProcess | None:
        """None when /proc does not tell (the process is gone, or belongs to another user)."""
        try:
            command = read_nul_separated(f"/proc/{pid}/cmdline")
            environment = read_nul_separated(f"/proc/{pid}/environ")
            directory = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return None
        try:
            soft_limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
        except OSError:
            soft_limit = resource.RLIM_INFINITY
        open_files = None if soft_limit == resource.RLIM_INFINITY else soft_limit
        return cls(command, environment, directory, open_files) if command else None

    def variable(self, name: str) -> str | None:
        """Its value of NAME (the first entry wins, as getenv does); None when it is absent."""
        for entry in self.environment:
            if entry.startswith(f"{name}="):
                return entry.split("=", 1)[1]
        return None

    def settings(self) -> dict | str:
        """Its settings as it loaded them: `dam settings` (the dam binary beside its own) run with its environment
        in its working directory, so no default or config-file rule is repeated here. The reason, as text, when
        they cannot be read."""
        dam = Path(os.path.realpath(self.command[0])).with_name("dam")
        try:
            done = subprocess.run([str(dam), "settings"], cwd=self.directory, env=self.environment_mapping(),
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{dam} settings: {error}"
        if done.returncode != 0:
            return f"{dam} settings: {done.stderr.strip()}"
        return json.loads(done.stdout)

    @staticmethod
    def ready_url(settings: dict, section: str) -> str | None:
        """Its /readyz URL from the host and port `settings` of section `gateway` or `worker`; a wildcard listen
        address is reached on loopback. None when the port is not one."""
        host, port = str(settings[section]["host"]), settings[section]["port"]
        if not 0 < int(port) <= 65535:
            return None
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host in ("::", "[::]"):
            host = "[::1]"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{port}/readyz"

    def start_again(self, log_path: Path) -> int:
        """Starts it again: same working directory, open-files limit, environment and command line, in a session of
        its own (as the supervisor starts it), output appended to its log. Returns the new pid.
        The environment goes to execve as it is: never on a command line, which every local user can read, since
        it holds secrets (the worker's DAM_LLM__API_KEY, a password in DAM_REDIS__URL)."""
        with open(log_path, "ab") as log_file:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            log_file.write(f"\n---- restarted by deploy/rolling-restart.sh at {stamp} ----\n".encode())
            log_file.flush()
            child = subprocess.Popen(self.command, cwd=self.directory, env=self.environment_mapping(),
                                     stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=self.apply_open_files_limit)
        return child.pid

    def environment_mapping(self) -> dict[str, str]:
        # Entries without `=` carry no value; a later entry of the same name wins, as it would in a shell.
        return dict(entry.split("=", 1) for entry in self.environment if "=" in entry)

    def apply_open_files_limit(self) -> None:
        """In the new process, before its program runs: the captured soft limit, if the hard one allows it."""
        if self.open_files is None:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (self.open_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        except (ValueError, OSError):
            pass

    def differences_from(self, pid: int) -> str:
        """Which /proc entries of pid differ from the captured ones (names only: values may be secrets); empty when
        it runs exactly as captured."""
        current = CapturedProcess.capture(pid) or CapturedProcess([], [], "", None)
        differences = []
        if current.command != self.command:
            differences.append("command line")
        changed = sorted({entry.split("=", 1)[0] for entry in set(self.environment) ^ set(current.environment)})
        if changed:
            differences.append(f"environment: {' '.join(changed)}")
        return " ".join(differences)
