"""The steps of starting a local stack that are not about supervising processes: the system programs it needs, the
cargo build, the open-files limit, nginx's configuration, readiness checks, and the text printed once it is up.
Used by deploy/supervisor.py."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from stack_plan import ROOT, Plan, PlannedProcess, PlanError

# A gateway needs a descriptor per stream, plus nginx's idle keep-alive connections, Redis, its listener and logs.
GATEWAY_SPARE_OPEN_FILES = 1024
# The edge's per-address limit knobs and the renderer's options for them; an empty knob keeps its default.
EDGE_LIMIT_OPTIONS = {"EDGE_RATE_PER_SECOND": "--edge-rate-per-second", "EDGE_BURST": "--edge-burst",
                      "EDGE_CONNECTIONS_PER_ADDRESS": "--edge-connections-per-address"}
# Straight to loopback, whatever proxy the caller's environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def is_ready(process: PlannedProcess) -> bool:
    if process.ready == "redis-ping":
        try:
            with socket.create_connection(("127.0.0.1", process.port), timeout=2) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False
    try:
        with DIRECT.open(process.ready_url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def service_settings(plan: Plan) -> dict:
    """The settings as the services load them here (config files, then the DAM_* variables), from `dam settings`:
    read rather than repeated, so a default or the loader's layering lives only in the code that owns it."""
    environment = {name: value for name, value in plan.environment.items() if name != "DAM_LLM__API_KEY"}
    done = subprocess.run([str(plan.bin_dir / "dam"), "settings"], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        raise PlanError(f"the settings do not load: {done.stderr.strip()}")
    return json.loads(done.stdout)


def raise_open_files_limit() -> list[str]:
    """Soft limit up to the hard one: every process started inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return [f"could not raise the open-files soft limit ({soft}) to the hard limit ({hard})"]
    return []


def open_files_warnings(settings: dict) -> list[str]:
    """A warning when the open-files limit is short of what the gateways' limits.max_open_streams needs."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = 1048576 if limit == resource.RLIM_INFINITY else limit
    needed = settings["limits"]["max_open_streams"] + GATEWAY_SPARE_OPEN_FILES
    if limit >= needed:
        return []
    return [f"open files: the limit is {limit} per process, below the {needed} a gateway needs for "
            f"limits.max_open_streams; past about {max(0, limit - GATEWAY_SPARE_OPEN_FILES)} streams a gateway "
            "cannot accept connections. Raise the hard limit (ulimit -Hn as root, LimitNOFILE= in systemd, "
            "/etc/security/limits.conf) or lower DAM_LIMITS__MAX_OPEN_STREAMS"]


def check_programs(plan: Plan) -> None:
    path = os.environ.get("PATH", "") + ":/usr/sbin"
    for process in plan.processes:
        if not process.binary and not shutil.which(process.command[0], path=path):
            raise OSError(f"{process.command[0]} (for {process.name}) is not installed (run 'make deps')")


def build_binaries(plan: Plan, say: Callable[[str], None], stopping: Callable[[], bool]) -> None:
    arguments = ["cargo", "build", *(["--release"] if plan.knobs["PROFILE"] == "release" else [])]
    for binary in plan.binaries:
        arguments += ["-p", binary]
    say(f"building: {' '.join(arguments)}")
    build = subprocess.Popen(arguments, cwd=ROOT)
    while build.poll() is None:
        if stopping():
            build.terminate()
            build.wait(timeout=30)
            return
        time.sleep(0.2)
    if build.returncode != 0:
        raise subprocess.CalledProcessError(build.returncode, arguments)


def prepare_nginx(plan: Plan, settings: dict) -> None:
    """nginx.conf rendered from deploy/nginx/nginx.conf.template for this stack's gateways (`settings`: the
    services' own), checked by nginx -t."""
    knobs = plan.knobs
    streams = len(plan.of_kind("gateway")) * settings["limits"]["max_open_streams"]
    nginx_dir, log_dir = plan.run_dir / "nginx", plan.log_dir
    render = [str(ROOT / "deploy" / "nginx" / "render-nginx-conf.sh"), "--prefix", str(nginx_dir),
              "--log-dir", str(log_dir), "--public-port", knobs["PUBLIC_PORT"],
              "--gateway-ports", " ".join(map(str, plan.ports_of("gateway"))),
              "--gateway-max-body-bytes", str(settings["gateway"]["max_body_bytes"]),
              "--streams", str(streams)]
    for knob, option in EDGE_LIMIT_OPTIONS.items():
        if knobs[knob]:
            render += [option, knobs[knob]]
    with open(nginx_dir / "nginx.conf", "wb") as config:
        subprocess.run(render, check=True, stdout=config, timeout=60)
    nginx = plan.of_kind("nginx")[0].command
    subprocess.run([shutil.which(nginx[0], path=os.environ.get("PATH", "") + ":/usr/sbin") or nginx[0], "-t", "-q",
                    *nginx[1:]], check=True, timeout=60)


def banner(plan: Plan) -> str:
    url, model = plan.public_url, plan.served_model
    lines = [
        "",
        f"  Traffic Dam is up: open {url}/",
        "",
        "  Browser flow (queue a chat, then stream its events):",
        f"    curl -N \"{url}$(curl -sS {url}/api/chats -H 'content-type: application/json' \\",
        "      -d '{\"message\":\"Hello\"}' | sed -E 's/.*\"events_url\":\"([^\"]+)\".*/\\1/')\"",
        "",
        "  OpenAI-compatible API:",
        f"    curl -N {url}/v1/chat/completions -H 'content-type: application/json' \\",
        f"      -d '{{\"model\":\"{model}\",\"stream\":true,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'",
        "",
        "  OpenAI Python SDK (pip install openai):",
        "    from openai import OpenAI",
        f"    client = OpenAI(base_url=\"{url}/v1\", api_key=\"unused\")",
        f"    for chunk in client.chat.completions.create(model=\"{model}\", stream=True,",
        "                                                messages=[{\"role\": \"user\", \"content\": \"Hello\"}]):",
        "        print(chunk.choices[0].delta.content or \"\" if chunk.choices else \"\", end=\"\", flush=True)",
        "",
        f"  nginx {url} -> gateways {' '.join(map(str, plan.ports_of('gateway')))} (127.0.0.1); "
        f"{len(plan.of_kind('worker'))} workers; redis 127.0.0.1:{plan.ports_of('redis')[0]}",
    ]
    lines += [f"  {worker.name}: http://127.0.0.1:{worker.port}/metrics (and /healthz, /readyz)"
              for worker in plan.of_kind("worker")]
    admin = plan.ports_of("dam")[0]
    lines += [f"  dam admin (loopback only, not behind nginx): http://127.0.0.1:{admin}/readyz",
              f"    and its CLI: {plan.bin_dir / 'dam'} --url http://127.0.0.1:{admin} status"]
    if plan.use_mock_llm:
        mock = plan.ports_of("mock-llm")[0]
        lines.append(f"  mock LLM: http://127.0.0.1:{mock}/v1 (stats: http://127.0.0.1:{mock}/stats)")
    lines += [f"  logs: {plan.log_dir}/   pids: {plan.pid_dir}/", "  Ctrl-C stops everything.", ""]
    monitoring_banner = plan.run_dir / "monitoring" / "banner.txt"
    if plan.of_kind("monitoring") and monitoring_banner.is_file():
        lines.append(monitoring_banner.read_text())
    return "\n".join(lines)
