"""--compose: the rolling restart of the compose services `gateway` and then `worker`. For each running container of
the service: scale the service up by one without recreating the others, wait until the new container is healthy,
then `docker stop` the old one (SIGTERM: it drains within the grace) and remove it. The number of containers ends
where it began. Works with `docker compose` (v2) and `docker-compose` (v1).

THIS PATH IS UNTESTED against Docker: it was written on a machine without a Docker engine, where it was only checked
by pyflakes and by walking its steps with a stand-in docker CLI that keeps containers as files (which shows the
control flow, not Docker's behaviour). Try it on a staging deployment before relying on it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from captured_process import is_whole_number
from restart_progress import CurrentStep, RollingRestartError, StepFailed, say, seconds_since
from stack_plan import ROOT

DEFAULT_COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
# Per service: the variable of its drain setting and that setting's built-in default.
SERVICES = (("gateway", "DAM_GATEWAY__SHUTDOWN_DRAIN_S", 10), ("worker", "DAM_WORKER__DRAIN_TIMEOUT_S", 30))
HEALTH_POLL_INTERVAL_S = 1
LOG_LINES_SHOWN = 20
HEALTH_TEMPLATE = "{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck:{{.State.Status}}{{end}}"


def output_of(command: list[str]) -> str | None:
    """Its standard output without the final newlines (its errors go to ours), or None when it fails."""
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    return done.stdout.decode(errors="replace").rstrip("\n") if done.returncode == 0 else None


def quiet_output_of(command: list[str]) -> str | None:
    """Like output_of, its errors dropped (`docker inspect` of a container that may be gone)."""
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
    return done.stdout.decode(errors="replace").rstrip("\n") if done.returncode == 0 else None


def succeeds(command: list[str], show_output: bool = False) -> bool:
    done = subprocess.run(command, stdin=subprocess.DEVNULL,
                          stdout=None if show_output else subprocess.DEVNULL)
    return done.returncode == 0


def short_id(container: str) -> str:
    return container[:12]


def choose_compose_command(files: list[str], project_directory: str, project_name: str) -> tuple[list[str], int]:
    """The compose command line with its files and project options, and compose's major version."""
    if shutil.which("docker") is None:
        raise RollingRestartError("docker is not installed")
    if subprocess.run(["docker", "compose", "version"], stdin=subprocess.DEVNULL, capture_output=True).returncode == 0:
        command, version = ["docker", "compose"], 2
    elif shutil.which("docker-compose"):
        command, version = ["docker-compose"], 1
    else:
        raise RollingRestartError("neither 'docker compose' nor 'docker-compose' is available")
    for file in files or [str(DEFAULT_COMPOSE_FILE)]:
        if not Path(file).is_file():
            raise RollingRestartError(f"compose file {file} does not exist")
        command += ["-f", file]
    if project_directory:
        command += ["--project-directory", project_directory]
    if project_name:
        command += ["-p", project_name]
    return command, version


class ComposeRollingRestart:
    """One rolling restart of a compose project's gateways, then workers; `run` does it or raises
    RollingRestartError."""

    def __init__(self, files: list[str], project_directory: str, project_name: str, ready_timeout_s: int,
                 stop_margin_s: int, settle_s: int, steps: CurrentStep):
        self.files, self.project_directory, self.project_name = files, project_directory, project_name
        self.ready_timeout_s = ready_timeout_s
        self.stop_margin_s = stop_margin_s
        self.settle_s = settle_s
        self.steps = steps
        self.compose: list[str] = []
        self.version = 0

    def run(self) -> None:
        self.compose, self.version = choose_compose_command(self.files, self.project_directory, self.project_name)
        self.steps.install_interrupt_handler()
        started = time.monotonic()
        say(f"using '{' '.join(self.compose)}' (compose v{self.version})")
        for service, drain_variable, drain_default in SERVICES:
            try:
                self.replace_service(service, drain_variable, drain_default)
            except StepFailed as failure:
                if str(failure):
                    say(str(failure))
                raise RollingRestartError("the gateways' rolling restart stopped; the workers were not restarted"
                                          if service == "gateway" else "the workers' rolling restart stopped") from None
        say(f"done in {seconds_since(started)}s")

    # -- what docker tells -------------------------------------------------------------------------------------

    def container_ids(self, service: str) -> list[str]:
        """Ids of the service's containers, stopped ones included (v2 lists only running ones without --all)."""
        listing = [*self.compose, "ps", *(["--all"] if self.version == 2 else []), "-q", service]
        with self.steps.deferring_interrupts():
            listed = output_of(listing)
        if listed is None:
            raise StepFailed(f"{service}: '{' '.join(self.compose)} ps' failed")
        return listed.split("\n")

    def container_running(self, container: str) -> bool:
        return quiet_output_of(["docker", "inspect", "-f", "{{.State.Running}}", container]) == "true"

    def container_health(self, container: str) -> str:
        """healthy, starting, unhealthy; `no-healthcheck:<state>` when it has no health check; gone."""
        health = quiet_output_of(["docker", "inspect", "-f", HEALTH_TEMPLATE, container])
        return "gone" if health is None else health

    def container_grace_s(self, container: str, drain_variable: str, drain_default: int) -> int:
        """Its stop grace: its drain setting (from its environment, else the default) plus the margin."""
        listed = quiet_output_of(["docker", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", container])
        values = [line.split("=", 1)[1] for line in (listed or "").split("\n") if line.startswith(f"{drain_variable}=")]
        drain = values[0] if values and is_whole_number(values[0]) else str(drain_default)
        return int(drain) + self.stop_margin_s

    # -- replacing -----------------------------------------------------------------------------------------------

    def replace_service(self, service: str, drain_variable: str, drain_default: int) -> None:
        """Replaces each running container of the service, one at a time; StepFailed on a failure."""
        running = []
        for container in self.container_ids(service):
            if not container:
                continue
            if not self.container_running(container):
                raise StepFailed(f"{service}: container {short_id(container)} is not running; remove it first "
                                 f"('{' '.join(self.compose)} rm -f {service}')")
            running.append(container)
        if not running:
            say(f"{service}: no running containers; nothing to restart")
            return
        if len(running) == 1 and service == "gateway":
            say("warning: one gateway: the edge relies on the new one before the old one stops")
        say(f"{service}: replacing {len(running)} containers one at a time")
        for old in running:
            self.replace_container(service, old, len(running), drain_variable, drain_default)

    def replace_container(self, service: str, old: str, count: int, drain_variable: str, drain_default: int) -> None:
        step_started = time.monotonic()
        before = self.container_ids(service)
        self.steps.description = f"adding a {service} container to replace {short_id(old)}"
        with self.steps.deferring_interrupts():
            scaled = succeeds([*self.compose, "up", "-d", "--no-deps", "--no-recreate", "--scale",
                               f"{service}={count + 1}", service], show_output=True)
        if not scaled:
            raise StepFailed(f"{service}: scaling up to {count + 1} failed")
        added = sorted(set(self.container_ids(service)) - set(before) - {""})
        if not added:
            raise StepFailed(f"{service}: scaling up created no new container")
        new = added[0]
        say(f"{service}: started {short_id(new)} to replace {short_id(old)}")

        self.steps.description = f"waiting for {service} container {short_id(new)} to be healthy"
        self.wait_until_healthy(service, old, new, drain_variable, drain_default)
        say(f"{service}: {short_id(new)} healthy after {seconds_since(step_started)}s")
        # The edge finds gateways by DNS, re-resolved now and then: let it see the new one before the old goes.
        self.settle(service)

        self.steps.description = f"stopping {service} container {short_id(old)} (it drains)"
        grace_s = self.container_grace_s(old, drain_variable, drain_default)
        stop_started = time.monotonic()
        with self.steps.deferring_interrupts():
            stopped = succeeds(["docker", "stop", "-t", str(grace_s), old])
        if not stopped:
            raise StepFailed(f"{service}: docker stop {short_id(old)} failed")
        exit_code = quiet_output_of(["docker", "inspect", "-f", "{{.State.ExitCode}}", old]) or "?"
        if exit_code == "137":
            say(f"{service}: {short_id(old)} did not exit within {grace_s}s of SIGTERM and was killed (exit 137)")
        else:
            say(f"{service}: {short_id(old)} exited (status {exit_code}) {seconds_since(stop_started)}s after SIGTERM")
        if not succeeds(["docker", "rm", old]):
            raise StepFailed(f"{service}: docker rm {short_id(old)} failed")
        # Likewise, let the edge forget the removed gateway's address before the next one changes.
        self.settle(service)
        say(f"{service}: replaced {short_id(old)} with {short_id(new)} in {seconds_since(step_started)}s")
        self.steps.description = ""

    def wait_until_healthy(self, service: str, old: str, new: str, drain_variable: str, drain_default: int) -> None:
        """Until the new container is healthy; when it turns unhealthy, vanishes, has no health check or the wait
        runs out, it is removed (the old one keeps running) and StepFailed raised."""
        deadline = time.monotonic() + self.ready_timeout_s
        while (health := self.container_health(new)) != "healthy":
            if health in ("unhealthy", "gone") or health.startswith("no-healthcheck:") or time.monotonic() >= deadline:
                say(f"{service}: new container {short_id(new)} is '{health}' (waited at most {self.ready_timeout_s}s); "
                    f"removing it, {short_id(old)} keeps running")
                if health.startswith("no-healthcheck:"):
                    say(f"{service}: the service needs a health check (the images' HEALTHCHECK)")
                logs = subprocess.run(["docker", "logs", "--tail", str(LOG_LINES_SHOWN), new], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                for line in logs.stdout.decode(errors="replace").splitlines():
                    print(f"    {line}", flush=True)
                grace_s = self.container_grace_s(new, drain_variable, drain_default)
                if succeeds(["docker", "stop", "-t", str(grace_s), new]):
                    succeeds(["docker", "rm", new])
                raise StepFailed("")
            time.sleep(HEALTH_POLL_INTERVAL_S)

    def settle(self, service: str) -> None:
        if service == "gateway" and self.settle_s > 0:
            time.sleep(self.settle_s)
