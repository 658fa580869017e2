"""The settings deploy/compose.yaml hands the services: every DAM_* name is a real setting, the LLM's API key reaches
the workers only, the services listen beyond loopback, the gateways trust the compose network's proxies, and the
admin API is published only in a profile, on 127.0.0.1, with its token required."""

from __future__ import annotations

import ipaddress
import re

from compose_files import (
    COMPOSE_FILE,
    COMPOSE_ONLY_DAM_VARIABLES,
    DAM_ADMIN_PORT,
    ENV_EXAMPLE_FILE,
    INTERPOLATION,
    LISTEN_HOST_SETTINGS,
    environment_of,
    interpolate,
    known_settings,
    published_ports,
)


def test_every_dam_variable_is_a_real_setting(compose, services) -> None:
    settings = known_settings()
    problems = []
    for name, service in services.items():
        for variable in environment_of(service):
            if variable.startswith("DAM_") and variable not in settings:
                problems.append(f"{name}: {variable} is not a setting (services refuse unknown DAM_* variables)")
    for variable in set(match.group(1) for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text(encoding="utf-8"))):
        if variable.startswith("DAM_") and variable not in settings | COMPOSE_ONLY_DAM_VARIABLES:
            problems.append(f"compose.yaml interpolates {variable}, which is not a setting")
    for line in ENV_EXAMPLE_FILE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*#?\s*(DAM_[A-Z0-9_]+)=", line)
        if match and match.group(1) not in settings | COMPOSE_ONLY_DAM_VARIABLES:
            problems.append(f".env.example names {match.group(1)}, which is not a setting")
    assert not problems, "; ".join(problems)


def test_the_llm_api_key_reaches_the_workers_only(services) -> None:
    holders = sorted(name for name, service in services.items() if "DAM_LLM__API_KEY" in environment_of(service))
    assert holders == ["worker"], f"DAM_LLM__API_KEY must reach the workers only, not {holders}"


def test_the_services_listen_beyond_loopback(services) -> None:
    problems = []
    for name, setting in LISTEN_HOST_SETTINGS.items():
        host = environment_of(services.get(name, {})).get(setting)
        if host is None:
            problems.append(f"{name} does not set {setting}")
        elif ipaddress.ip_address(host).is_loopback:
            problems.append(f"{name}'s {setting}={host} is unreachable from the other containers")
    assert not problems, "; ".join(problems)


def test_the_trusted_proxies_cover_the_compose_network(compose, services) -> None:
    problems = []
    subnets = []
    for network in (compose.get("networks") or {}).values():
        for entry in ((network or {}).get("ipam") or {}).get("config") or []:
            if entry.get("subnet"):
                subnets.append(ipaddress.ip_network(entry["subnet"]))
    if not subnets:
        problems.append("no network has a fixed subnet for the gateways to trust")
    gateway = services.get("gateway", {})
    trusted_text = interpolate(environment_of(gateway).get("DAM_AUTH__TRUSTED_PROXIES", ""))
    trusted = [ipaddress.ip_network(cidr.strip(), strict=False) for cidr in trusted_text.split(",") if cidr.strip()]
    for subnet in subnets:
        if not any(subnet.version == cidr.version and subnet.subnet_of(cidr) for cidr in trusted):
            problems.append(f"the gateway's DAM_AUTH__TRUSTED_PROXIES ({trusted_text or 'unset'}) does not cover "
                            f"the network {subnet}: every user would share the edge's identity")
    assert not problems, "; ".join(problems)


def test_the_admin_api_is_published_only_locally_with_the_token(services) -> None:
    dam = services.get("dam", {})
    problems = []
    token = environment_of(dam).get("DAM_DAM__ADMIN_TOKEN", "")
    token_required = re.fullmatch(r"\$\{DAM_DAM__ADMIN_TOKEN:?\?[^}]*\}", token) is not None
    if published_ports(dam):
        problems.append("the dam publishes its own port; publish it through the admin profile on 127.0.0.1 only")
    host = environment_of(dam).get("DAM_DAM__HOST", "127.0.0.1")
    if not ipaddress.ip_address(host).is_loopback and not token_required:
        problems.append(f"the dam listens on {host} but DAM_DAM__ADMIN_TOKEN is not required (${{...:?}})")
    # A service that relays to the dam, or publishes the admin port, publishes the admin API.
    for name, service in services.items():
        relays_to_dam = "dam" in (service.get("depends_on") or {}) and name != "edge"
        for host_address, _host_port, container_port in published_ports(service):
            if relays_to_dam or container_port == str(DAM_ADMIN_PORT):
                if not token_required:
                    problems.append(f"{name} publishes the admin API but DAM_DAM__ADMIN_TOKEN is not required")
                if host_address != "127.0.0.1":
                    problems.append(f"{name} publishes the admin API on {host_address or 'every address'}")
                if not service.get("profiles"):
                    problems.append(f"{name} publishes the admin API by default; put it in a profile")
    assert not problems, "; ".join(problems)
