"""deploy/compose.yaml's shape: the scaled services publish nothing and have no fixed names, only the edge is
public, the edge finds the gateways through Docker's DNS, every service has a health check that gets its /healthz,
starts after its dependencies are healthy, has a memory limit and a stop grace period longer than its drain, and
Redis keeps its data and refuses writes when full."""

from __future__ import annotations

from pathlib import Path

from compose_files import (
    COMPOSE_ONLY_DAM_VARIABLES,
    MEMORY_LIMIT_CAPS,
    PUBLIC_SERVICE,
    REPO_ROOT,
    REQUIRED_DEPENDENCIES,
    RUST_TARGETS,
    SCALED_SERVICES,
    duration_seconds,
    environment_of,
    interpolate,
    memory_bytes,
    published_ports,
    settings_defaults,
)


def test_scaled_services_publish_no_port_and_set_no_container_name(services) -> None:
    problems = []
    for name in SCALED_SERVICES:
        service = services.get(name)
        if service is None:
            problems.append(f"service {name} is missing")
            continue
        for key in ("ports", "container_name"):
            if service.get(key):
                problems.append(f"{name} is scaled and must not set {key}")
    for name, service in services.items():
        if service.get("container_name"):
            problems.append(f"{name} sets container_name, which blocks --scale and a second copy of the stack")
    assert not problems, "; ".join(problems)


def test_only_the_edge_publishes_a_port_beyond_loopback(services) -> None:
    problems, loopback = [], []
    for name, service in services.items():
        for host_address, _host_port, _container_port in published_ports(service):
            if name == PUBLIC_SERVICE:
                continue
            if host_address != "127.0.0.1":
                problems.append(f"{name} publishes a port on {host_address or 'every address'}; only "
                                f"{PUBLIC_SERVICE} may, others only on 127.0.0.1")
            else:
                loopback.append(name)
    if not published_ports(services.get(PUBLIC_SERVICE, {})):
        problems.append(f"{PUBLIC_SERVICE} publishes no port")
    assert not problems, "; ".join(problems)


def test_the_public_port_variable_stays_out_of_the_services(services) -> None:
    problems = []
    for name, service in services.items():
        for variable in COMPOSE_ONLY_DAM_VARIABLES & set(environment_of(service)):
            problems.append(f"{name} passes {variable} into its environment (a compose variable, not a setting)")
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file.get("path", "")
            if Path(path).name == ".env":
                problems.append(f"{name} loads {path} as env_file: every compose variable would reach it")
    public_ports = [port for port in (services.get(PUBLIC_SERVICE, {}).get("ports") or []) if "DAM_PUBLIC_PORT" in str(port)]
    if not public_ports:
        problems.append(f"{PUBLIC_SERVICE}'s published port is not ${{DAM_PUBLIC_PORT:-...}}")
    assert not problems, "; ".join(problems)


def test_the_edge_follows_the_gateways_through_docker_dns(services) -> None:
    edge = environment_of(services.get(PUBLIC_SERVICE, {}))
    problems = []
    gateways = edge.get("EDGE_GATEWAYS", "")
    service_name, _, port = gateways.partition(":")
    if service_name not in SCALED_SERVICES or port != str(RUST_TARGETS["gateway"]):
        problems.append(f"EDGE_GATEWAYS={gateways!r} is not the gateway service's DNS name and port (gateway:8080)")
    # The entrypoint resolves through the container's own resolver, which is Docker's embedded DNS (127.0.0.11)
    # unless the service overrides it.
    edge_service = services.get(PUBLIC_SERVICE, {})
    if edge_service.get("dns") or edge_service.get("network_mode"):
        problems.append("the edge overrides its DNS or network mode: it would not ask Docker's DNS (127.0.0.11)")
    entrypoint = REPO_ROOT / "deploy" / "nginx" / "edge-entrypoint.sh"
    text = entrypoint.read_text(encoding="utf-8")
    for wanted in ("EDGE_GATEWAYS", "getent ahostsv4", "EDGE_RESOLVE_INTERVAL_S", "kill -HUP", "127.0.0.11"):
        if wanted not in text:
            problems.append(f"{entrypoint.name} does not re-resolve the gateways (no {wanted!r})")
    assert not problems, "; ".join(problems)


def test_every_service_has_a_health_check(services) -> None:
    problems = []
    for name, service in services.items():
        healthcheck = service.get("healthcheck") or {}
        if healthcheck.get("disable") or not healthcheck.get("test"):
            problems.append(f"{name} has no health check")
    assert not problems, "; ".join(problems)


def test_each_service_health_check_gets_its_healthz(services) -> None:
    problems = []
    ports = {"gateway": 8080, "worker": 9200, "dam": 9100, "mock-llm": 9090, "edge": 8080}
    for name, port in ports.items():
        test = " ".join(map(str, (services.get(name, {}).get("healthcheck") or {}).get("test") or []))
        if f"127.0.0.1:{port}/healthz" not in test:
            problems.append(f"{name}'s health check does not GET 127.0.0.1:{port}/healthz")
    assert not problems, "; ".join(problems)


def test_services_start_after_their_dependencies_are_healthy(services) -> None:
    problems = []
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on is a plain list; use condition: service_healthy")
            continue
        for dependency, options in depends_on.items():
            if dependency not in services:
                problems.append(f"{name} depends on {dependency}, which is not a service")
            if (options or {}).get("condition") != "service_healthy":
                problems.append(f"{name} -> {dependency} is not condition: service_healthy")
    for name, required in REQUIRED_DEPENDENCIES.items():
        missing = required - set(services.get(name, {}).get("depends_on") or {})
        if missing:
            problems.append(f"{name} must wait for {', '.join(sorted(missing))}")
    assert not problems, "; ".join(problems)


def test_every_service_has_a_memory_limit_within_its_cap(services) -> None:
    problems = []
    for name, service in services.items():
        limit = ((service.get("deploy") or {}).get("resources") or {}).get("limits", {}).get("memory")
        if limit is None:
            problems.append(f"{name} has no deploy.resources.limits.memory")
            continue
        cap = MEMORY_LIMIT_CAPS.get(name)
        if cap is not None and memory_bytes(limit) > cap:
            problems.append(f"{name}'s memory limit {limit} is above {cap // 2**20}M")
    assert not problems, "; ".join(problems)


def test_the_stop_grace_period_exceeds_the_drain(services) -> None:
    defaults = settings_defaults()
    drains = {
        "gateway": ("DAM_GATEWAY__SHUTDOWN_DRAIN_S", defaults["gateway"]["shutdown_drain_s"]),
        "worker": ("DAM_WORKER__DRAIN_TIMEOUT_S", defaults["worker"]["drain_timeout_s"]),
    }
    problems = []
    for name, (setting, default_seconds) in drains.items():
        service = services.get(name, {})
        drain = float(interpolate(environment_of(service).get(setting, str(default_seconds))))
        grace_text = service.get("stop_grace_period")
        if grace_text is None:
            problems.append(f"{name} has no stop_grace_period (compose's default is 10 s; its drain is {drain:g} s)")
            continue
        grace = duration_seconds(grace_text)
        if grace <= drain:
            problems.append(f"{name}'s stop_grace_period {grace_text} does not exceed its drain of {drain:g} s")
    assert not problems, "; ".join(problems)


def test_redis_persists_its_data_and_refuses_writes_when_full(services) -> None:
    service = services.get("redis", {})
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
    assert not problems, "; ".join(problems)
