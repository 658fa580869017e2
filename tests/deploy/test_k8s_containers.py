"""Each container of deploy/k8s, one test run per container: a contract image (or an allowed third-party one) with
a tag; the Rust services listen on every address, on the port they declare, running their own binary; the edge's
port and variables are its entrypoint's; probes get real routes on declared ports; resources are requested and
memory limited; every container runs as the images' non-root user; and its environment names real settings,
existing Secrets and ConfigMaps, and the settings it cannot do without."""

from __future__ import annotations

import pytest

from k8s_manifests import (
    CONTRACT_IMAGES,
    CONTRACT_USER_ID,
    EDGE_DEFAULT_LISTEN_PORT,
    EDGE_IMAGE,
    EDGE_ROUTES_CRATE,
    EDGE_VARIABLES,
    MEMORY_LIMITS,
    REQUIRED_VARIABLES,
    RUST_SERVICES,
    THIRD_PARTY_IMAGES,
    Manifests,
    PlacedContainer,
    container_env,
    pod_spec_of,
    resolves_port,
    routes_of_crate,
    variable_of,
)


def declares_port(container: dict, port: int) -> bool:
    return any(declared.get("containerPort") == port for declared in container.get("ports", []))


def test_container_runs_a_contract_image_with_a_tag(placed_container: PlacedContainer) -> None:
    image, base_image = placed_container.container["image"], placed_container.base_image
    assert base_image in CONTRACT_IMAGES | THIRD_PARTY_IMAGES, f"{base_image} is neither a contract image nor allowed"
    assert image != base_image, f"the image {image} has no tag"


def test_rust_service_listens_on_every_address(rust_service_container: PlacedContainer, manifests: Manifests) -> None:
    _crate, section = RUST_SERVICES[rust_service_container.base_image]
    listen_host = manifests.settings_of(rust_service_container.container)[variable_of(f"{section}.host")]
    assert listen_host == "0.0.0.0", f"{variable_of(section + '.host')} is {listen_host}"


def test_rust_service_declares_the_port_it_listens_on(rust_service_container: PlacedContainer,
                                                      manifests: Manifests) -> None:
    _crate, section = RUST_SERVICES[rust_service_container.base_image]
    listen_port = int(manifests.settings_of(rust_service_container.container)[variable_of(f"{section}.port")])
    assert declares_port(rust_service_container.container, listen_port), \
        f"{section}.port = {listen_port} is not a declared container port"


def test_rust_service_runs_its_own_binary(rust_service_container: PlacedContainer) -> None:
    crate, _section = RUST_SERVICES[rust_service_container.base_image]
    # A container without `command` runs the image's entrypoint, which is the binary.
    command = rust_service_container.container.get("command", [f"/usr/local/bin/{crate}"])
    assert command[0] == f"/usr/local/bin/{crate}", str(command)


def test_edge_declares_its_listen_port_and_reads_only_its_variables(edge_container: PlacedContainer) -> None:
    edge_env = container_env(edge_container.container)
    listen_port = int(edge_env.get("EDGE_LISTEN_PORT", EDGE_DEFAULT_LISTEN_PORT))
    assert declares_port(edge_container.container, listen_port), \
        f"EDGE_LISTEN_PORT = {listen_port} is not a declared container port"
    unknown = set(edge_env) - EDGE_VARIABLES
    assert not unknown, f"not the entrypoint's variables: {sorted(unknown)}"


def routes_answering(placed: PlacedContainer) -> set[str]:
    """The paths the container's process serves: its crate's routes; the edge passes every path to a gateway."""
    if placed.base_image in RUST_SERVICES:
        return routes_of_crate(RUST_SERVICES[placed.base_image][0])
    if placed.base_image == EDGE_IMAGE:
        return routes_of_crate(EDGE_ROUTES_CRATE)
    return set()


@pytest.mark.parametrize("probe_kind", ["readinessProbe", "livenessProbe"])
def test_container_probe_gets_a_real_route_on_a_declared_port(placed_container: PlacedContainer,
                                                             probe_kind: str) -> None:
    container = placed_container.container
    probe = container.get(probe_kind)
    assert probe, f"no {probe_kind}"
    if "httpGet" in probe:
        path, port = probe["httpGet"]["path"], probe["httpGet"]["port"]
        routes = routes_answering(placed_container)
        assert path in routes, f"GET {path} is not a route of its service: {sorted(routes)}"
        assert resolves_port(port, container), f"port {port} is not a container port"
    elif "tcpSocket" in probe:
        port = probe["tcpSocket"]["port"]
        assert resolves_port(port, container), f"port {port} is not a container port"
    else:
        assert "exec" in probe and placed_container.base_image in THIRD_PARTY_IMAGES, \
            "only a third-party image may be probed by running a command"


def test_container_requests_cpu_and_memory_and_limits_memory(placed_container: PlacedContainer) -> None:
    resources = placed_container.container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    assert {"cpu", "memory"} <= set(requests) and "memory" in limits, str(resources)


def test_memory_limit_is_the_replaced_systems(memory_capped_container: PlacedContainer) -> None:
    limits = memory_capped_container.container.get("resources", {}).get("limits", {})
    assert limits.get("memory") == MEMORY_LIMITS[memory_capped_container.base_image], str(limits.get("memory"))


def test_container_runs_as_the_images_user_without_capabilities(placed_container: PlacedContainer) -> None:
    pod_security = pod_spec_of(placed_container.workload).get("securityContext", {})
    security = {**pod_security, **placed_container.container.get("securityContext", {})}
    assert security.get("runAsNonRoot") is True, str(security)
    assert security.get("runAsUser") == CONTRACT_USER_ID, str(security)
    assert security.get("allowPrivilegeEscalation") is False, str(security)
    assert security.get("capabilities", {}).get("drop") == ["ALL"], str(security)


def test_container_env_names_only_real_settings(placed_container: PlacedContainer, manifests: Manifests) -> None:
    unknown = [name for name in container_env(placed_container.container)
               if name.startswith("DAM_") and name not in manifests.setting_variables]
    assert not unknown, f"not settings: {unknown}"


def test_container_secrets_are_generated_or_documented(placed_container: PlacedContainer,
                                                        manifests: Manifests) -> None:
    missing = []
    for variable in placed_container.container.get("env", []):
        secret_reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if secret_reference:
            secret_name = secret_reference["name"]
            if secret_name not in manifests.secrets and secret_name not in manifests.hand_made_secrets:
                missing.append(f"{variable['name']} from {secret_name}")
    assert not missing, f"from a Secret neither generated nor documented: {missing}"


def test_container_env_from_sources_exist(placed_container: PlacedContainer, manifests: Manifests) -> None:
    missing = []
    for source in placed_container.container.get("envFrom", []):
        for reference_kind, available in (("configMapRef", manifests.config_maps), ("secretRef", manifests.secrets)):
            reference = source.get(reference_kind)
            if reference and reference["name"] not in available:
                missing.append(f"{reference_kind} {reference['name']}")
    assert not missing, f"envFrom names what does not exist: {missing}"


def test_container_is_given_the_settings_it_cannot_do_without(placed_container: PlacedContainer,
                                                               manifests: Manifests) -> None:
    container = placed_container.container
    provided = set(container_env(container))
    for source in container.get("envFrom", []):
        for reference_kind, available in (("configMapRef", manifests.config_maps), ("secretRef", manifests.secrets)):
            if source.get(reference_kind, {}).get("name") in available:
                holder = available[source[reference_kind]["name"]]
                provided |= set(holder.get("data", {})) | set(holder.get("stringData", {}))
    missing = sorted(REQUIRED_VARIABLES.get(placed_container.base_image, set()) - provided)
    assert not missing, f"not given {missing}"
