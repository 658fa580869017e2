"""The local topology's one description, deploy/topology.toml: the plan the supervisor makes from it for a range of
knobs (start waves after what each process needs, stop phases that lose no work, ports, settings, refusals of bad
knobs), and deploy/compose.yaml mirroring it. Offline and in a second: no process is started here (the end-to-end
test runs the supervisor itself)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from stack_plan import PlanError, load_topology, make_plan  # noqa: E402 - the supervisor's modules live in deploy/

TOPOLOGY = load_topology()
COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
# What a developer's shell could hold that the plan must ignore or use as documented.
BASE_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/root"}


def plan_for(**knobs: str):
    return make_plan({**BASE_ENVIRONMENT, **knobs})


def test_every_process_starts_in_a_wave_after_every_process_it_needs() -> None:
    plan = plan_for(MONITORING="1", SCALE_GATEWAY="3", SCALE_WORKER="4")
    waves = {process.kind: process.wave for process in plan.processes}
    for entry in TOPOLOGY["process"]:
        for needed in entry.get("needs", []):
            assert waves[needed] < waves[entry["name"]], f"{entry['name']} starts no later than {needed}"
    assert [process.name for process in plan.of_kind("gateway")] == ["gateway-1", "gateway-2", "gateway-3"]
    assert len(plan.of_kind("worker")) == 4


def test_the_edge_and_gateways_stop_before_workers_and_dam_which_stop_before_redis_and_the_llm() -> None:
    phase = {process.kind: process.stop_phase for process in plan_for(MONITORING="1").processes}
    assert phase["nginx"] == phase["gateway"] == phase["monitoring"]
    assert phase["gateway"] < phase["worker"] == phase["dam"] < phase["redis"] == phase["mock-llm"]


def test_ports_follow_the_knobs_and_every_placeholder_is_filled() -> None:
    plan = plan_for(GATEWAY_PORT_BASE="20001", WORKER_PORTS="20101 20107", PUBLIC_PORT="20000", RUN_DIR="/tmp/x")
    assert plan.ports_of("gateway") == [20001, 20002]
    assert plan.ports_of("worker") == [20101, 20107]
    assert plan.of_kind("nginx")[0].ready_url == "http://127.0.0.1:20000/readyz"
    for process in plan.processes:
        for text in (*process.command, *process.environment.values()):
            assert "{" not in text, f"{process.name}: placeholder left in {text!r}"
    worker = plan.of_kind("worker")[1]
    assert worker.command == ["/tmp/x/bin/worker-2"], "binaries run through a link naming the run directory"
    assert worker.environment["DAM_WORKER__PORT"] == "20107"
    assert worker.environment["DAM_TELEMETRY__INSTANCE"] == "worker-2"
    assert plan.environment["DAM_REDIS__URL"] == f"redis://127.0.0.1:{plan.ports_of('redis')[0]}"


def test_only_workers_see_the_api_key_and_a_real_llm_replaces_mock_llm() -> None:
    plan = plan_for(DAM_LLM__BASE_URL="https://llm.example/v1", DAM_LLM__MODEL_NAME="vendor/model")
    assert not plan.of_kind("mock-llm") and not plan.use_mock_llm
    assert {process.kind for process in plan.processes if process.sees_llm_api_key} == {"worker"}
    assert plan.environment["DAM_CHAT__DEFAULT_MODEL"] == "vendor/model"
    assert "DAM_LLM__MODEL_NAME" not in plan.environment, "not a setting: the services would refuse it"
    mock = plan_for()
    assert mock.environment["DAM_LLM__BASE_URL"] == f"http://127.0.0.1:{mock.ports_of('mock-llm')[0]}/v1"


def test_the_callers_settings_win_over_the_stacks_defaults_but_not_over_its_addresses() -> None:
    plan = plan_for(DAM_WORKER__DRAIN_TIMEOUT_S="40", DAM_REDIS__URL="redis://elsewhere:1", DAM_PUBLIC_PORT="20500")
    assert plan.environment["DAM_WORKER__DRAIN_TIMEOUT_S"] == "40"
    assert plan.environment["DAM_REDIS__URL"].startswith("redis://127.0.0.1:"), "the stack's own Redis"
    assert plan.knobs["PUBLIC_PORT"] == "20500", "DAM_PUBLIC_PORT is an alias of PUBLIC_PORT"
    assert "DAM_PUBLIC_PORT" not in plan.environment, "not a setting: the services would refuse it"
    assert plan_for().environment["DAM_WORKER__DRAIN_TIMEOUT_S"] == "5"


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"SCALE_GATEWAY": "0"}, "SCALE_GATEWAY must be 1..32"),
        ({"SCALE_WORKER": "65"}, "SCALE_WORKER must be 0..64"),
        ({"REDIS_PORT": "63x"}, "REDIS_PORT must be a whole number"),
        ({"PROFILE": "fast"}, "PROFILE must be release or debug"),
        ({"WORKER_PORTS": "20101"}, "WORKER_PORTS names 1 ports for 2 workers"),
        ({"WORKER_PORTS": "a b"}, "WORKER_PORTS must be whole numbers"),
        ({"ADMIN_PORT": "8081"}, "port 8081 is set for both"),
        ({"PUBLIC_PORT": "70000"}, "port 70000 is out of range"),
        ({"EDGE_BURST": "lots"}, "EDGE_BURST must be a whole number or empty"),
    ],
)
def test_bad_knobs_are_refused_with_a_message_naming_them(knobs: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_for(**knobs)


def test_a_cycle_in_needs_is_refused() -> None:
    looped = {**TOPOLOGY, "process": [dict(entry) for entry in TOPOLOGY["process"]]}
    looped["process"][0]["needs"] = ["nginx"]  # redis would wait for the edge, which waits for it
    with pytest.raises(PlanError, match="a cycle in `needs`"):
        make_plan(BASE_ENVIRONMENT, looped)


def test_compose_runs_every_process_under_its_mirror_name_with_the_same_dependencies() -> None:
    services = COMPOSE["services"]
    mirror = {entry["name"]: entry["compose_service"] for entry in TOPOLOGY["process"] if "compose_service" in entry}
    unmirrored = {entry["name"] for entry in TOPOLOGY["process"]} - mirror.keys()
    assert unmirrored == {"monitoring"}, "only the monitoring supervisor has no single compose service"
    for name, service in mirror.items():
        assert service in services, f"compose has no `{service}` service for {name}"
        entry = next(entry for entry in TOPOLOGY["process"] if entry["name"] == name)
        needed = {mirror[needed] for needed in entry.get("needs", [])}
        depends_on = set(services[service].get("depends_on", {}))
        assert depends_on == needed, f"compose `{service}` depends on {sorted(depends_on)}, the topology's " \
                                     f"{name} needs {sorted(needed)}"


def test_compose_checks_each_service_on_its_own_port_with_an_http_or_redis_probe() -> None:
    services = COMPOSE["services"]
    for entry in TOPOLOGY["process"]:
        if "compose_service" not in entry:
            continue
        probe = " ".join(services[entry["compose_service"]]["healthcheck"]["test"])
        expected = "redis-cli ping" if entry["ready"] == "redis-ping" else "http://127.0.0.1:"
        assert expected in probe, f"{entry['compose_service']}'s health check is {probe!r}"
