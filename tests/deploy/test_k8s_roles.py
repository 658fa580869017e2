"""What each part of the system needs from deploy/k8s, checked against the code: the gateways and workers get a
termination grace period longer than their pre-stop pause and drain, the gateways spread and trust the edge's
network, the edge finds them through a headless Service, the autoscalers watch a real gateway metric and exactly the
lanes' Redis lists, the dam stays inside the cluster with its token from a Secret, and Redis keeps its data."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from k8s_manifests import (
    ROOT,
    Manifests,
    container_env,
    default_key_prefix,
    lane_list_names,
    name_of,
    pod_spec_of,
    selects,
)


@pytest.mark.parametrize(("image", "drain_setting"), [
    ("traffic-dam/gateway", "gateway.shutdown_drain_s"),
    ("traffic-dam/llm-worker", "worker.drain_timeout_s"),
])
def test_grace_period_exceeds_the_pre_stop_pause_and_the_drain(manifests: Manifests, image: str,
                                                               drain_setting: str) -> None:
    workload, container = manifests.workload_by_image(image)
    section, key = drain_setting.split(".")
    drain_s = int(manifests.settings_of(container)[f"DAM_{section.upper()}__{key.upper()}"])
    grace_s = pod_spec_of(workload).get("terminationGracePeriodSeconds", 30)
    pause_s = int(container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))
    assert grace_s > pause_s + drain_s, \
        f"grace period {grace_s}s does not exceed the pre-stop pause {pause_s}s + {drain_setting} {drain_s}s"


def test_gateways_spread_across_nodes_and_zones(manifests: Manifests) -> None:
    gateway, _container = manifests.workload_by_image("traffic-dam/gateway")
    assert pod_spec_of(gateway).get("topologySpreadConstraints"), "the gateways have no topologySpreadConstraints"


def test_gateways_trust_the_edges_network(manifests: Manifests) -> None:
    _gateway, container = manifests.workload_by_image("traffic-dam/gateway")
    trusted = container_env(container).get("DAM_AUTH__TRUSTED_PROXIES")
    assert isinstance(trusted, str), f"DAM_AUTH__TRUSTED_PROXIES is {trusted!r}"
    try:
        networks = [ipaddress.ip_network(cidr.strip()) for cidr in trusted.split(",")]
    except ValueError as error:
        pytest.fail(f"DAM_AUTH__TRUSTED_PROXIES={trusted}: {error}")
    assert networks, f"DAM_AUTH__TRUSTED_PROXIES={trusted} names no network"


def test_the_edge_finds_the_gateways_through_a_headless_service(manifests: Manifests) -> None:
    gateway, _container = manifests.workload_by_image("traffic-dam/gateway")
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    _edge, edge_container = manifests.workload_by_image("traffic-dam/edge")
    edge_gateways = str(container_env(edge_container).get("EDGE_GATEWAYS", ""))
    host, _, port = edge_gateways.rpartition(":")
    service_name, namespace = (host.split(".") + ["", ""])[:2]
    service = manifests.services.get(service_name)
    assert (
        service is not None
        and service["spec"].get("clusterIP") == "None"
        and service["metadata"].get("namespace") == namespace
        and selects(service["spec"].get("selector", {}), gateway_labels)
        and any(str(declared["port"]) == port for declared in service["spec"]["ports"])
    ), f"EDGE_GATEWAYS ({edge_gateways}) does not name a headless Service of the gateway pods on their port"


def test_gateway_autoscaling_watches_a_gateway_metric(manifests: Manifests) -> None:
    source = "\n".join(path.read_text() for path in (ROOT / "crates" / "gateway" / "src").rglob("*.rs"))
    unknown = []
    for autoscaler in manifests.of_kind("HorizontalPodAutoscaler").values():
        for metric in autoscaler["spec"].get("metrics", []):
            if metric["type"] == "Pods" and f'"{metric["pods"]["metric"]["name"]}"' not in source:
                unknown.append(f"{name_of(autoscaler)} Pods metric {metric['pods']['metric']['name']}")
    assert not unknown, f"not gateway metrics: {unknown}"


def worker_scaled_objects(manifests: Manifests) -> list[dict]:
    worker, _container = manifests.workload_by_image("traffic-dam/llm-worker")
    return [scaled_object for scaled_object in manifests.of_kind("ScaledObject").values()
            if scaled_object["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]]


def test_one_keda_scaled_object_scales_the_workers(manifests: Manifests) -> None:
    assert len(worker_scaled_objects(manifests)) == 1, [name_of(o) for o in worker_scaled_objects(manifests)]


def test_worker_scaling_watches_exactly_the_lanes_lists(manifests: Manifests) -> None:
    _worker, container = manifests.workload_by_image("traffic-dam/llm-worker")
    key_prefix = manifests.settings_of(container).get("DAM_REDIS__KEY_PREFIX", default_key_prefix())
    expected_lists = lane_list_names(key_prefix)
    for scaled_object in worker_scaled_objects(manifests):
        triggers = scaled_object["spec"].get("triggers", [])
        list_names = {trigger["metadata"].get("listName") for trigger in triggers if trigger["type"] == "redis"}
        assert list_names == expected_lists, \
            f"{name_of(scaled_object)} watches {sorted(map(str, list_names))}, not {sorted(expected_lists)}"
        without_target = [trigger["metadata"].get("listName") for trigger in triggers
                          if int(trigger["metadata"].get("listLength", 0)) <= 0]
        assert not without_target, f"{name_of(scaled_object)} triggers without a listLength target: {without_target}"
        spec = scaled_object["spec"]
        assert 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 0), \
            f"{name_of(scaled_object)} lacks sound min and max replica counts"


def test_the_dam_stays_inside_the_cluster(manifests: Manifests) -> None:
    dam, _container = manifests.workload_by_image("traffic-dam/dam")
    dam_labels = dam["spec"]["template"]["metadata"]["labels"]
    exposed = [name_of(service) for service in manifests.services.values()
               if selects(service["spec"].get("selector", {}), dam_labels)
               and service["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert not exposed, f"Services that take the dam outside the cluster: {exposed}"
    routed = [name_of(ingress) for ingress in manifests.of_kind("Ingress").values()
              if "dam" in yaml.safe_dump(ingress["spec"])]
    assert not routed, f"Ingresses that route to the dam: {routed}"


def test_the_dams_admin_token_comes_from_a_secret(manifests: Manifests) -> None:
    _dam, container = manifests.workload_by_image("traffic-dam/dam")
    token = container_env(container).get("DAM_DAM__ADMIN_TOKEN")
    assert isinstance(token, dict) and "secretKeyRef" in token, f"DAM_DAM__ADMIN_TOKEN is {token!r}"


@pytest.mark.parametrize("required", [
    "--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--maxmemory ",
])
def test_redis_keeps_its_data_and_refuses_writes_when_full(manifests: Manifests, required: str) -> None:
    _redis, container = manifests.workload_by_image("redis")
    arguments = " ".join(str(argument) for argument in container.get("args", []))
    assert required in arguments, f"redis runs without {required.strip()}: {arguments}"
