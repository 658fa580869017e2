"""The deployment files as the tests read them: deploy/compose.yaml parsed once per session, and the Kubernetes
manifests rendered once (k8s_manifests.py). A test that takes `placed_container`, `rust_service_container`,
`edge_container` or `memory_capped_container` runs once for each such container of the manifests, named by its
workload and container."""

from __future__ import annotations

import pytest

from compose_files import COMPOSE_FILE, load_yaml
from k8s_manifests import EDGE_IMAGE, MEMORY_LIMITS, RUST_SERVICES, Manifests, load_manifests

# Each per-container fixture name, and which containers it stands for.
CONTAINER_PARAMETERS = {
    "placed_container": lambda placed: True,
    "rust_service_container": lambda placed: placed.base_image in RUST_SERVICES,
    "edge_container": lambda placed: placed.base_image == EDGE_IMAGE,
    "memory_capped_container": lambda placed: placed.base_image in MEMORY_LIMITS,
}


@pytest.fixture(scope="session")
def compose() -> dict:
    """deploy/compose.yaml as YAML: the file a developer edits, before compose interpolates or merges anything."""
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="session")
def services(compose: dict) -> dict[str, dict]:
    return compose.get("services") or {}


@pytest.fixture(scope="session")
def manifests() -> Manifests:
    return load_manifests()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture_name, wanted in CONTAINER_PARAMETERS.items():
        if fixture_name in metafunc.fixturenames:
            chosen = [placed for placed in load_manifests().placed_containers() if wanted(placed)]
            metafunc.parametrize(fixture_name, chosen, ids=[placed.test_id for placed in chosen])
