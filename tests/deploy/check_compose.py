#!/usr/bin/env python3
"""Checks the container deployment files against the rules they must keep: deploy/compose.yaml (validated by
`docker-compose config`, then its scaling, health, ordering, limits, secrets and settings rules), the Dockerfile's
build targets, Prometheus's compose configuration and the CI workflow. One line per check; exits 1 on any failure.

Run from anywhere: `python3 tests/deploy/check_compose.py`. Needs python3 with PyYAML and `docker-compose`
(Debian's 1.29, which validates offline) or `docker compose`. promtool, check-jsonschema, actionlint
and hadolint, when installed, add deeper checks of the same files; without them those checks say "skip".
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIRECTORY = REPO_ROOT / "deploy"
COMPOSE_FILE = DEPLOY_DIRECTORY / "compose.yaml"
ENV_EXAMPLE_FILE = DEPLOY_DIRECTORY / ".env.example"
SETTINGS_SAMPLE_FILE = REPO_ROOT / "config" / "example.toml.sample"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PROMETHEUS_CONFIG_FILE = DEPLOY_DIRECTORY / "compose" / "prometheus.yml"
WORKFLOW_FILE = REPO_ROOT / ".github" / "workflows" / "ci.yml"
CI_SCRIPT = REPO_ROOT / ".ci" / "run"

# The shared contract of the deployment: each image's build target, its binary and its container port.
RUST_TARGETS = {"gateway": 8080, "llm-worker": 9200, "dam": 9100, "mock-llm": 9090}
EDGE_TARGET_PORT = 8080
ALL_TARGETS = [*RUST_TARGETS, "edge"]
# The compose services run more than once (deploy.replicas or --scale).
SCALED_SERVICES = ["gateway", "worker"]
# The one service that may publish a port on every host address.
PUBLIC_SERVICE = "edge"
# Compose's own interpolation variable that looks like a setting: it must never reach a container.
COMPOSE_ONLY_DAM_VARIABLES = {"DAM_PUBLIC_PORT"}
# The startup order: each service and what it must wait to see healthy.
REQUIRED_DEPENDENCIES = {
    "edge": {"gateway"},
    "gateway": {"redis"},
    "worker": {"redis", "mock-llm"},
    "dam": {"redis"},
}
# Each Rust service's listen address setting, which must not be loopback inside a container.
LISTEN_HOST_SETTINGS = {
    "gateway": "DAM_GATEWAY__HOST",
    "worker": "DAM_WORKER__HOST",
    "dam": "DAM_DAM__HOST",
    "mock-llm": "DAM_MOCK_LLM__HOST",
}
MEMORY_LIMIT_CAPS = {"gateway": 512 * 2**20, "redis": 512 * 2**20}
DAM_ADMIN_PORT = 9100
# Host paths a service may mount besides the repository's own files.
ALLOWED_HOST_MOUNTS = {"/var/run/docker.sock"}

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class CheckFailed(Exception):
    """One rule broken; the message says which and where."""


# ---------------------------------------------------------------------------------------------------------------
# Reading the files


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


def known_settings() -> set[str]:
    """Every `DAM_<SECTION>__<KEY>` name, from the sample that lists every setting (and names the two secrets)."""
    text = SETTINGS_SAMPLE_FILE.read_text(encoding="utf-8")
    names: set[str] = set()

    def collect(table: dict, path: list[str]) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                collect(value, [*path, key])
            else:
                names.add("DAM_" + "__".join(part.upper() for part in [*path, key]))

    collect(tomllib.loads(text), [])
    names.update(re.findall(r"set (DAM_[A-Z0-9_]+) in the environment", text))
    return names


def settings_defaults() -> dict:
    return tomllib.loads(SETTINGS_SAMPLE_FILE.read_text(encoding="utf-8"))


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with every variable unset: defaults in, required ones marked, `$$` kept as `$`."""

    def replace(match: re.Match) -> str:
        operator, argument = match.group(2), match.group(3)
        if operator in (":-", "-"):
            return argument
        if operator in (":?", "?"):
            return "<required>"
        return ""

    return INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def environment_of(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in environment)
        return {name: value for name, value in pairs}
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def published_ports(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port; '' host address means every address."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append((str(entry.get("host_ip", "")), str(entry.get("published", "")), str(entry["target"])))
            continue
        text = interpolate(str(entry)).split("/")[0]
        parts = text.rsplit(":", 2)
        if len(parts) == 3:
            result.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            result.append(("", parts[0], parts[1]))
        else:
            result.append(("", parts[0], parts[0]))
    return result


def memory_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)b?", str(text).strip().lower())
    if not match:
        raise CheckFailed(f"cannot read the memory size {text!r}")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2) or "_"))


def duration_seconds(text: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    if not parts or "".join(number + unit for number, unit in parts) != str(text):
        raise CheckFailed(f"cannot read the duration {text!r}")
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def dockerfile_stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Stage name -> (the image or stage it starts FROM, its instructions as (keyword, arguments))."""
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    logical_line = ""
    for raw_line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if raw_line.lstrip().startswith("#") and not logical_line:
            continue
        logical_line += raw_line.rstrip("\\").strip() + " "
        if raw_line.rstrip().endswith("\\"):
            continue
        line, logical_line = logical_line.strip(), ""
        if not line:
            continue
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", arguments.strip(), re.IGNORECASE)
            if not match:
                raise CheckFailed(f"Dockerfile: cannot read `FROM {arguments}`")
            current = []
            stages[(match.group(2) or f"stage{len(stages)}").lower()] = (match.group(1), current)
        elif current is not None:
            current.append((keyword, arguments.strip()))
    return stages


def instructions_of_target(stages, target: str) -> list[tuple[str, str]]:
    """A target's instructions including those of the stages it is built FROM, the oldest first."""
    chain = []
    name = target
    while name in stages:
        base, instructions = stages[name]
        chain = instructions + chain
        name = base.lower()
    return chain


def run_command(arguments: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(arguments, capture_output=True, text=True, timeout=120, **options)


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and run_command(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    raise CheckFailed("neither docker-compose nor `docker compose` is installed (Debian: apt-get install docker-compose)")


def clean_environment() -> dict[str, str]:
    """The caller's DAM_* or compose variables must not change what the file means, so compose sees none of them."""
    return {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG", "LC_ALL")}


# ---------------------------------------------------------------------------------------------------------------
# The checks: each raises CheckFailed with every problem it found, or returns a short note.

try:
    COMPOSE = load_yaml(COMPOSE_FILE)
except yaml.YAMLError as load_error:
    print(f"FAIL compose file parses: {load_error}")
    print("0 passed, 1 failed")
    sys.exit(1)
SERVICES: dict[str, dict] = COMPOSE.get("services") or {}
COMPOSE_TEXT = COMPOSE_FILE.read_text(encoding="utf-8")


def fail_if(problems: list[str]) -> None:
    if problems:
        raise CheckFailed("; ".join(problems))


def check_compose_cli_validates() -> str:
    command = compose_command()
    with tempfile.TemporaryDirectory() as directory:
        env_file = Path(directory) / "check.env"
        env_file.write_text("DAM_DAM__ADMIN_TOKEN=check-compose-token\n", encoding="utf-8")
        problems = []
        for profile in ([], ["--profile", "logs"], ["--profile", "admin"]):
            arguments = [*command, *profile, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"]
            result = run_command(arguments, env=clean_environment(), cwd=REPO_ROOT)
            if result.returncode != 0:
                problems.append(f"`{' '.join(arguments[len(command):])}` failed: {result.stderr.strip()}")
        fail_if(problems)
    return f"{' '.join(command)} config accepts it, with and without --profile logs / admin"


def check_compose_cli_requires_admin_token() -> str:
    command = compose_command()
    with tempfile.TemporaryDirectory() as directory:
        env_file = Path(directory) / "empty.env"
        env_file.write_text("", encoding="utf-8")
        arguments = [*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"]
        result = run_command(arguments, env=clean_environment(), cwd=REPO_ROOT)
    if result.returncode == 0 or "DAM_DAM__ADMIN_TOKEN" not in result.stderr:
        raise CheckFailed("without DAM_DAM__ADMIN_TOKEN, `config` must fail and name the variable; it "
                          f"exited {result.returncode}: {result.stderr.strip()[:300]}")
    return "without DAM_DAM__ADMIN_TOKEN, config refuses and names it"


def check_no_version_key() -> str:
    fail_if(["the Compose Specification has no `version:` key"] if "version" in COMPOSE else [])
    return "no version key"


def check_scaled_services_have_no_ports_or_names() -> str:
    problems = []
    for name in SCALED_SERVICES:
        service = SERVICES.get(name)
        if service is None:
            problems.append(f"service {name} is missing")
            continue
        for key in ("ports", "container_name"):
            if service.get(key):
                problems.append(f"{name} is scaled and must not set {key}")
    for name, service in SERVICES.items():
        if service.get("container_name"):
            problems.append(f"{name} sets container_name, which blocks --scale and a second copy of the stack")
    fail_if(problems)
    return f"{', '.join(SCALED_SERVICES)}: no ports, no container_name"


def check_only_edge_is_public() -> str:
    problems, loopback = [], []
    for name, service in SERVICES.items():
        for host_address, _host_port, _container_port in published_ports(service):
            if name == PUBLIC_SERVICE:
                continue
            if host_address != "127.0.0.1":
                problems.append(f"{name} publishes a port on {host_address or 'every address'}; only "
                                f"{PUBLIC_SERVICE} may, others only on 127.0.0.1")
            else:
                loopback.append(name)
    if not published_ports(SERVICES.get(PUBLIC_SERVICE, {})):
        problems.append(f"{PUBLIC_SERVICE} publishes no port")
    fail_if(problems)
    return f"public: {PUBLIC_SERVICE} only; on 127.0.0.1: {', '.join(sorted(set(loopback))) or 'none'}"


def check_public_port_stays_out_of_services() -> str:
    problems = []
    for name, service in SERVICES.items():
        for variable in COMPOSE_ONLY_DAM_VARIABLES & set(environment_of(service)):
            problems.append(f"{name} passes {variable} into its environment (a compose variable, not a setting)")
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file.get("path", "")
            if Path(path).name == ".env":
                problems.append(f"{name} loads {path} as env_file: every compose variable would reach it")
    public_ports = [port for port in (SERVICES.get(PUBLIC_SERVICE, {}).get("ports") or []) if "DAM_PUBLIC_PORT" in str(port)]
    if not public_ports:
        problems.append(f"{PUBLIC_SERVICE}'s published port is not ${{DAM_PUBLIC_PORT:-...}}")
    fail_if(problems)
    return "DAM_PUBLIC_PORT only sets the edge's host port; no service loads .env"


def check_edge_follows_gateways_through_docker_dns() -> str:
    edge = environment_of(SERVICES.get(PUBLIC_SERVICE, {}))
    problems = []
    gateways = edge.get("EDGE_GATEWAYS", "")
    service_name, _, port = gateways.partition(":")
    if service_name not in SCALED_SERVICES or port != str(RUST_TARGETS["gateway"]):
        problems.append(f"EDGE_GATEWAYS={gateways!r} is not the gateway service's DNS name and port (gateway:8080)")
    # The entrypoint resolves through the container's own resolver, which is Docker's embedded DNS (127.0.0.11)
    # unless the service overrides it.
    edge_service = SERVICES.get(PUBLIC_SERVICE, {})
    if edge_service.get("dns") or edge_service.get("network_mode"):
        problems.append("the edge overrides its DNS or network mode: it would not ask Docker's DNS (127.0.0.11)")
    entrypoint = REPO_ROOT / "deploy" / "nginx" / "edge-entrypoint.sh"
    note = "EDGE_GATEWAYS=gateway:8080, re-resolved through Docker's DNS (127.0.0.11) by the entrypoint"
    text = entrypoint.read_text(encoding="utf-8")
    for wanted in ("EDGE_GATEWAYS", "getent ahostsv4", "EDGE_RESOLVE_INTERVAL_S", "kill -HUP", "127.0.0.11"):
        if wanted not in text:
            problems.append(f"{entrypoint.name} does not re-resolve the gateways (no {wanted!r})")
    fail_if(problems)
    return note


def check_every_service_has_a_healthcheck() -> str:
    problems = []
    for name, service in SERVICES.items():
        healthcheck = service.get("healthcheck") or {}
        if healthcheck.get("disable") or not healthcheck.get("test"):
            problems.append(f"{name} has no health check")
    fail_if(problems)
    return f"all {len(SERVICES)} services"


def check_rust_services_check_healthz() -> str:
    problems = []
    ports = {"gateway": 8080, "worker": 9200, "dam": 9100, "mock-llm": 9090, "edge": 8080}
    for name, port in ports.items():
        test = " ".join(map(str, (SERVICES.get(name, {}).get("healthcheck") or {}).get("test") or []))
        if f"127.0.0.1:{port}/healthz" not in test:
            problems.append(f"{name}'s health check does not GET 127.0.0.1:{port}/healthz")
    fail_if(problems)
    return "gateway, worker, dam, mock-llm and edge GET their /healthz"


def check_depends_on_waits_for_health() -> str:
    problems = []
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on is a plain list; use condition: service_healthy")
            continue
        for dependency, options in depends_on.items():
            if dependency not in SERVICES:
                problems.append(f"{name} depends on {dependency}, which is not a service")
            if (options or {}).get("condition") != "service_healthy":
                problems.append(f"{name} -> {dependency} is not condition: service_healthy")
    for name, required in REQUIRED_DEPENDENCIES.items():
        missing = required - set(SERVICES.get(name, {}).get("depends_on") or {})
        if missing:
            problems.append(f"{name} must wait for {', '.join(sorted(missing))}")
    fail_if(problems)
    return "service_healthy everywhere; redis -> dam/gateway/worker (and mock-llm -> worker) -> edge"


def check_memory_limits() -> str:
    problems, sizes = [], []
    for name, service in SERVICES.items():
        limit = ((service.get("deploy") or {}).get("resources") or {}).get("limits", {}).get("memory")
        if limit is None:
            problems.append(f"{name} has no deploy.resources.limits.memory")
            continue
        cap = MEMORY_LIMIT_CAPS.get(name)
        if cap is not None and memory_bytes(limit) > cap:
            problems.append(f"{name}'s memory limit {limit} is above {cap // 2**20}M")
        if cap is not None:
            sizes.append(f"{name} {limit}")
    fail_if(problems)
    return f"every service limited; {', '.join(sizes)}"


def check_stop_grace_exceeds_drain() -> str:
    defaults = settings_defaults()
    drains = {
        "gateway": ("DAM_GATEWAY__SHUTDOWN_DRAIN_S", defaults["gateway"]["shutdown_drain_s"]),
        "worker": ("DAM_WORKER__DRAIN_TIMEOUT_S", defaults["worker"]["drain_timeout_s"]),
    }
    problems, notes = [], []
    for name, (setting, default_seconds) in drains.items():
        service = SERVICES.get(name, {})
        drain = float(interpolate(environment_of(service).get(setting, str(default_seconds))))
        grace_text = service.get("stop_grace_period")
        if grace_text is None:
            problems.append(f"{name} has no stop_grace_period (compose's default is 10 s; its drain is {drain:g} s)")
            continue
        grace = duration_seconds(grace_text)
        if grace <= drain:
            problems.append(f"{name}'s stop_grace_period {grace_text} does not exceed its drain of {drain:g} s")
        notes.append(f"{name} {grace_text} > {drain:g} s")
    fail_if(problems)
    return "; ".join(notes)


def check_redis_persistence() -> str:
    service = SERVICES.get("redis", {})
    command = service.get("command") or []
    words = command.split() if isinstance(command, str) else [str(word) for word in command]

    def option(name: str) -> str | None:
        return words[words.index(name) + 1] if name in words[:-1] else None

    problems = []
    for name, wanted in (("--appendonly", "yes"), ("--appendfsync", "everysec"), ("--maxmemory-policy", "noeviction")):
        if option(name) != wanted:
            problems.append(f"redis must run with {name} {wanted} (has {option(name)})")
    maxmemory = option("--maxmemory")
    limit = ((service.get("deploy") or {}).get("resources") or {}).get("limits", {}).get("memory")
    if maxmemory is None or memory_bytes(maxmemory) == 0:
        problems.append("redis needs a --maxmemory (noeviction then refuses writes instead of the kernel's OOM kill)")
    elif limit and memory_bytes(maxmemory) >= memory_bytes(limit):
        problems.append(f"redis --maxmemory {maxmemory} leaves no room under its container limit {limit}")
    if not any(str(volume).endswith(":/data") for volume in service.get("volumes") or []):
        problems.append("redis keeps /data (its append-only file) on no volume")
    fail_if(problems)
    return f"AOF everysec, noeviction, maxmemory {maxmemory} under {limit}, /data on a volume"


def check_dam_settings_are_real() -> str:
    settings = known_settings()
    problems = []
    for name, service in SERVICES.items():
        for variable in environment_of(service):
            if variable.startswith("DAM_") and variable not in settings:
                problems.append(f"{name}: {variable} is not a setting (services refuse unknown DAM_* variables)")
    for variable in set(match.group(1) for match in INTERPOLATION.finditer(COMPOSE_TEXT)):
        if variable.startswith("DAM_") and variable not in settings | COMPOSE_ONLY_DAM_VARIABLES:
            problems.append(f"compose.yaml interpolates {variable}, which is not a setting")
    for line in ENV_EXAMPLE_FILE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*#?\s*(DAM_[A-Z0-9_]+)=", line)
        if match and match.group(1) not in settings | COMPOSE_ONLY_DAM_VARIABLES:
            problems.append(f".env.example names {match.group(1)}, which is not a setting")
    fail_if(problems)
    return f"every DAM_* name in compose.yaml and .env.example is one of the {len(settings)} settings"


def check_api_key_reaches_workers_only() -> str:
    holders = sorted(name for name, service in SERVICES.items() if "DAM_LLM__API_KEY" in environment_of(service))
    fail_if([] if holders == ["worker"] else [f"DAM_LLM__API_KEY must reach the workers only, not {holders}"])
    return "DAM_LLM__API_KEY only in worker"


def check_services_listen_beyond_loopback() -> str:
    problems = []
    for name, setting in LISTEN_HOST_SETTINGS.items():
        host = environment_of(SERVICES.get(name, {})).get(setting)
        if host is None:
            problems.append(f"{name} does not set {setting}")
        elif ipaddress.ip_address(host).is_loopback:
            problems.append(f"{name}'s {setting}={host} is unreachable from the other containers")
    fail_if(problems)
    return "gateway, worker, dam and mock-llm listen on 0.0.0.0"


def check_trusted_proxies_cover_the_network() -> str:
    problems = []
    subnets = []
    for network in (COMPOSE.get("networks") or {}).values():
        for entry in ((network or {}).get("ipam") or {}).get("config") or []:
            if entry.get("subnet"):
                subnets.append(ipaddress.ip_network(entry["subnet"]))
    if not subnets:
        problems.append("no network has a fixed subnet for the gateways to trust")
    gateway = SERVICES.get("gateway", {})
    trusted_text = interpolate(environment_of(gateway).get("DAM_AUTH__TRUSTED_PROXIES", ""))
    trusted = [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in trusted_text.split(",") if cidr.strip()]
    for subnet in subnets:
        if not any(subnet.version == cidr.version and subnet.subnet_of(cidr) for cidr in trusted):
            problems.append(f"the gateway's DAM_AUTH__TRUSTED_PROXIES ({trusted_text or 'unset'}) does not cover "
                            f"the network {subnet}: every user would share the edge's identity")
    fail_if(problems)
    return f"DAM_AUTH__TRUSTED_PROXIES={trusted_text} covers {', '.join(map(str, subnets))}"


def check_admin_port_needs_the_token() -> str:
    dam = SERVICES.get("dam", {})
    problems = []
    token = environment_of(dam).get("DAM_DAM__ADMIN_TOKEN", "")
    token_required = re.fullmatch(r"\$\{DAM_DAM__ADMIN_TOKEN:?\?[^}]*\}", token) is not None
    if published_ports(dam):
        problems.append("the dam publishes its own port; publish it through the admin profile on 127.0.0.1 only")
    host = environment_of(dam).get("DAM_DAM__HOST", "127.0.0.1")
    if not ipaddress.ip_address(host).is_loopback and not token_required:
        problems.append(f"the dam listens on {host} but DAM_DAM__ADMIN_TOKEN is not required (${{...:?}})")
    # A service that relays to the dam, or publishes the admin port, publishes the admin API.
    for name, service in SERVICES.items():
        relays_to_dam = "dam" in (service.get("depends_on") or {}) and name != "edge"
        for host_address, _host_port, container_port in published_ports(service):
            if relays_to_dam or container_port == str(DAM_ADMIN_PORT):
                if not token_required:
                    problems.append(f"{name} publishes the admin API but DAM_DAM__ADMIN_TOKEN is not required")
                if host_address != "127.0.0.1":
                    problems.append(f"{name} publishes the admin API on {host_address or 'every address'}")
                if not service.get("profiles"):
                    problems.append(f"{name} publishes the admin API by default; put it in a profile")
    fail_if(problems)
    return "the admin API is published only in a profile, on 127.0.0.1, with the token required"


def check_mounted_paths_exist() -> str:
    problems, count = [], 0
    named_volumes = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source = volume.get("source", "") if isinstance(volume, dict) else str(volume).split(":")[0]
            if source.startswith("."):
                count += 1
                if not (DEPLOY_DIRECTORY / source).exists():
                    problems.append(f"{name} mounts {source}, which does not exist")
            elif source.startswith("/"):
                if source not in ALLOWED_HOST_MOUNTS:
                    problems.append(f"{name} mounts the host path {source}")
                elif not str(volume).endswith(":ro"):
                    problems.append(f"{name} mounts {source} writable; mount it :ro")
            elif source not in named_volumes:
                problems.append(f"{name} mounts volume {source}, which is not declared")
        build = service.get("build")
        if build:
            context = DEPLOY_DIRECTORY / (build if isinstance(build, str) else build.get("context", "."))
            if not (context / "Dockerfile").exists():
                problems.append(f"{name} builds in {context}, which has no Dockerfile")
            target = None if isinstance(build, str) else build.get("target")
            if target and target.lower() not in dockerfile_stages():
                problems.append(f"{name} builds target {target}, which the Dockerfile does not have")
    fail_if(problems)
    return f"{count} repository paths mounted, all present; build targets exist"


def check_images_follow_the_contract() -> str:
    stages = dockerfile_stages()
    problems = []
    for target in ALL_TARGETS:
        if target not in stages:
            problems.append(f"the Dockerfile has no target {target}")
    for target, port in RUST_TARGETS.items():
        if target not in stages:
            continue
        instructions = instructions_of_target(stages, target)
        users = [arguments for keyword, arguments in instructions if keyword == "USER"]
        if not users or users[-1].split(":")[0] not in ("10001", "dam"):
            problems.append(f"{target} does not run as the user dam (uid 10001)")
        if not any(keyword == "COPY" and arguments.endswith(f"/usr/local/bin/{target}") for keyword, arguments in instructions):
            problems.append(f"{target} does not install /usr/local/bin/{target}")
        checks = [arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK"]
        if not checks or f"127.0.0.1:{port}/healthz" not in checks[-1]:
            problems.append(f"{target}'s HEALTHCHECK does not GET 127.0.0.1:{port}/healthz")
        if not any(keyword == "EXPOSE" and str(port) in arguments.split() for keyword, arguments in instructions):
            problems.append(f"{target} does not EXPOSE {port}")
    if "edge" in stages:
        base, instructions = stages["edge"]
        if not base.startswith("nginx:1.27"):
            problems.append(f"edge is built FROM {base}, not nginx:1.27")
        text = "\n".join(f"{keyword} {arguments}" for keyword, arguments in instructions)
        for wanted in ("deploy/nginx/ /opt/dam/nginx/", "crates/gateway/static/ /opt/dam/static/",
                       "/opt/dam/nginx/edge-entrypoint.sh", f"127.0.0.1:{EDGE_TARGET_PORT}/healthz"):
            if wanted not in text:
                problems.append(f"edge's stage lacks {wanted}")
    dockerignore = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for wanted in ("target/", ".run/", "loadtest/results/", ".git/"):
        if wanted not in dockerignore:
            problems.append(f".dockerignore does not keep out {wanted}")
    fail_if(problems)
    return f"targets {', '.join(ALL_TARGETS)}: non-root, /healthz checks, ports; .dockerignore"


def check_dockerfile_with_hadolint() -> str:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        return "skip: hadolint is not installed"
    result = run_command([hadolint, "--no-color", str(DOCKERFILE)])
    if result.returncode != 0:
        raise CheckFailed(f"hadolint: {(result.stdout + result.stderr).strip()}")
    return "hadolint passes"


def check_prometheus_scrapes_every_replica() -> str:
    config = load_yaml(PROMETHEUS_CONFIG_FILE)
    jobs = {job["job_name"]: job for job in config.get("scrape_configs") or []}
    problems = []
    for job_name, service, port in (("gateway", "gateway", 8080), ("worker", "worker", 9200), ("dam", "dam", 9100)):
        job = jobs.get(job_name)
        if job is None:
            problems.append(f"no scrape job {job_name}")
            continue
        discovered = [entry for entry in job.get("dns_sd_configs") or []
                      if entry.get("type") == "A" and service in entry.get("names", []) and entry.get("port") == port]
        if not discovered:
            problems.append(f"job {job_name} does not find {service}'s replicas by DNS (type A, port {port})")
    prometheus = SERVICES.get("prometheus", {})
    mounts = {str(volume).split(":")[1]: str(volume).split(":")[0] for volume in prometheus.get("volumes") or []}
    for rule_file in config.get("rule_files") or []:
        if not mounts.get(rule_file, "").endswith("dashboards/prometheus/alert-rules.yml"):
            problems.append(f"rule file {rule_file} is not dashboards/prometheus/alert-rules.yml mounted")
    alertmanagers = str(config.get("alerting"))
    if "alertmanager:9093" not in alertmanagers:
        problems.append("Prometheus does not send to alertmanager:9093")
    fail_if(problems)
    return "gateway, worker and dam found by DNS; alert rules and Alertmanager wired"


def check_prometheus_config_with_promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        return "skip: promtool is not installed"
    config_text = PROMETHEUS_CONFIG_FILE.read_text(encoding="utf-8").replace(
        "/etc/prometheus/rules/alert-rules.yml", str(REPO_ROOT / "dashboards" / "prometheus" / "alert-rules.yml"))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "prometheus.yml"
        path.write_text(config_text, encoding="utf-8")
        result = run_command([promtool, "check", "config", str(path)])
    if result.returncode != 0:
        raise CheckFailed(f"promtool check config: {(result.stdout + result.stderr).strip()}")
    return "promtool check config passes (with the rules file)"


def check_grafana_provisioning() -> str:
    grafana = SERVICES.get("grafana", {})
    mounts = [str(volume) for volume in grafana.get("volumes") or []]
    problems = []
    datasource_file = REPO_ROOT / "dashboards/grafana/provisioning/datasources/prometheus.yaml"
    datasources = load_yaml(datasource_file).get("datasources", [])
    if not any(source.get("uid") == "dam-prometheus" and source.get("url") == "http://prometheus:9090" for source in datasources):
        problems.append(f"{datasource_file.name} has no datasource dam-prometheus at http://prometheus:9090")
    for wanted in ("dashboards/grafana/provisioning/datasources/prometheus.yaml:/etc/grafana/provisioning/datasources/",
                   "dashboards/grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards",
                   "dashboards/grafana/dashboards:/var/lib/grafana/dashboards/traffic-dam",
                   ":/etc/grafana/provisioning/datasources/loki.yaml"):
        if not any(wanted in mount for mount in mounts):
            problems.append(f"grafana does not mount {wanted}")
    for name in ("loki", "log-shipper"):
        if "logs" not in (SERVICES.get(name, {}).get("profiles") or []):
            problems.append(f"{name} is not in the logs profile")
    fail_if(problems)
    return "datasource dam-prometheus, dashboards and Loki's datasource mounted; loki + shipper in profile logs"


def check_compose_spec_schema() -> str:
    validator = shutil.which("check-jsonschema")
    if validator is None:
        return "skip: check-jsonschema is not installed (pip install check-jsonschema)"
    result = run_command([validator, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    if result.returncode != 0:
        raise CheckFailed(f"the Compose Specification schema refuses it: {(result.stdout + result.stderr).strip()}")
    return "valid against the current Compose Specification schema"


def check_ci_workflow() -> str:
    workflow = load_yaml(WORKFLOW_FILE)
    problems = []
    # YAML 1.1 reads a bare `on` key as the boolean true.
    triggers = workflow.get("on", workflow.get(True)) or {}
    triggers = [triggers] if isinstance(triggers, str) else list(triggers)
    for event in ("push", "pull_request"):
        if event not in triggers:
            problems.append(f"ci.yml does not run on {event}")
    jobs = workflow.get("jobs") or {}

    def commands_of(job_name: str) -> str:
        steps = (jobs.get(job_name) or {}).get("steps") or []
        return "\n".join(str(step.get("run", "")) + " " + str(step.get("with", "")) for step in steps)

    if "make lint" not in commands_of("lint"):
        problems.append("job lint does not run `make lint`")
    test_commands = commands_of("test")
    if ".ci/run" not in test_commands and "make test" not in test_commands:
        problems.append("job test runs neither .ci/run nor `make test`")
    docker_commands = commands_of("docker")
    for target in ALL_TARGETS:
        if not re.search(rf"target\W+{re.escape(target)}\b", docker_commands):
            problems.append(f"job docker does not build target {target}")
    cached = any("rust-cache" in str(step.get("uses", "")) or "actions/cache" in str(step.get("uses", ""))
                 for job in jobs.values() for step in (job or {}).get("steps") or [])
    if not cached:
        problems.append("no job caches cargo")
    if not CI_SCRIPT.exists():
        problems.append(".ci/run is missing")
    fail_if(problems)
    return "push + pull_request; lint, test (.ci/run) and docker (every target); cargo cached"


def check_ci_workflow_with_linters() -> str:
    notes = []
    actionlint = shutil.which("actionlint")
    if actionlint:
        result = run_command([actionlint, "-shellcheck=", "-pyflakes=", str(WORKFLOW_FILE)], cwd=REPO_ROOT)
        if result.returncode != 0:
            raise CheckFailed(f"actionlint: {(result.stdout + result.stderr).strip()}")
        notes.append("actionlint passes")
    validator = shutil.which("check-jsonschema")
    if validator:
        result = run_command([validator, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW_FILE)])
        if result.returncode != 0:
            raise CheckFailed(f"the GitHub workflow schema refuses ci.yml: {(result.stdout + result.stderr).strip()}")
        notes.append("valid against the workflow schema")
    return "; ".join(notes) if notes else "skip: neither actionlint nor check-jsonschema is installed"


CHECKS = [
    check_compose_cli_validates,
    check_compose_cli_requires_admin_token,
    check_no_version_key,
    check_scaled_services_have_no_ports_or_names,
    check_only_edge_is_public,
    check_public_port_stays_out_of_services,
    check_edge_follows_gateways_through_docker_dns,
    check_every_service_has_a_healthcheck,
    check_rust_services_check_healthz,
    check_depends_on_waits_for_health,
    check_memory_limits,
    check_stop_grace_exceeds_drain,
    check_redis_persistence,
    check_dam_settings_are_real,
    check_api_key_reaches_workers_only,
    check_services_listen_beyond_loopback,
    check_trusted_proxies_cover_the_network,
    check_admin_port_needs_the_token,
    check_mounted_paths_exist,
    check_images_follow_the_contract,
    check_dockerfile_with_hadolint,
    check_prometheus_scrapes_every_replica,
    check_prometheus_config_with_promtool,
    check_grafana_provisioning,
    check_compose_spec_schema,
    check_ci_workflow,
    check_ci_workflow_with_linters,
]


def main() -> int:
    passed = failed = 0
    for check in CHECKS:
        label = check.__name__.removeprefix("check_").replace("_", " ")
        try:
            note = check()
        except (CheckFailed, KeyError, ValueError, OSError, subprocess.SubprocessError, yaml.YAMLError) as error:
            failed += 1
            print(f"FAIL {label}: {error}")
        else:
            passed += 1
            print(f"ok   {label}: {note}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
