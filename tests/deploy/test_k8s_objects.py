"""The Kubernetes objects of deploy/k8s against each other: all in one namespace, workloads select their own pods
and spread by their own labels, Services and disruption budgets select pods that exist and reach their ports,
autoscalers scale workloads that exist, host names name Services that exist, and every DAM_* key the generated
settings hold is a real setting. With the kubernetes-validate package installed, each object also matches the
Kubernetes API's schema (otherwise that test is skipped)."""

from __future__ import annotations

import base64
import re
from urllib.parse import urlparse

import pytest

from k8s_manifests import (
    CLUSTER_DNS_SERVICE,
    MINIMUM_KUBERNETES_VERSION,
    Manifests,
    container_env,
    containers_of,
    name_of,
    pod_spec_of,
    resolves_port,
    selects,
)


def test_the_manifests_hold_workloads(manifests: Manifests) -> None:
    assert manifests.workloads, f"no workload among the {len(manifests.documents)} objects"


def test_every_object_is_in_the_traffic_dam_namespace(manifests: Manifests) -> None:
    namespaces = {document["metadata"].get("namespace") for document in manifests.documents
                  if document["kind"] != "Namespace"}
    assert namespaces == {"traffic-dam"}, str(namespaces)


def test_workloads_select_their_own_pods_and_spread_by_their_labels(manifests: Manifests) -> None:
    problems = []
    for workload in manifests.workloads:
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        selector = workload["spec"]["selector"].get("matchLabels", {})
        if not selects(selector, labels):
            problems.append(f"{name_of(workload)} does not select its own pod template: {selector} vs {labels}")
        for constraint in pod_spec_of(workload).get("topologySpreadConstraints", []):
            spread_selector = constraint.get("labelSelector", {}).get("matchLabels", {})
            if not selects(spread_selector, labels):
                problems.append(f"{name_of(workload)} spreads over {constraint['topologyKey']} by labels that are "
                                f"not its own pods': {spread_selector}")
        if workload["kind"] == "StatefulSet" and workload["spec"].get("serviceName") not in manifests.services:
            problems.append(f"{name_of(workload)}'s serviceName is not a Service")
    assert not problems, "; ".join(problems)


def test_services_select_pods_and_reach_their_container_ports(manifests: Manifests) -> None:
    problems = []
    for service in manifests.services.values():
        selector = service["spec"].get("selector", {})
        selected = manifests.workloads_selected_by(selector)
        if not selected:
            problems.append(f"{name_of(service)} selects no pods: {selector}")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            reached = all(any(resolves_port(target, container) for container in containers_of(workload))
                          for workload in selected)
            if not (selected and reached):
                problems.append(f"{name_of(service)} port {port['port']} does not reach container port {target}")
    assert not problems, "; ".join(problems)


def test_disruption_budgets_cover_pods(manifests: Manifests) -> None:
    uncovered = []
    for budget in manifests.of_kind("PodDisruptionBudget").values():
        selector = budget["spec"]["selector"].get("matchLabels", {})
        if not manifests.workloads_selected_by(selector):
            uncovered.append(f"{name_of(budget)} covers no pods: {selector}")
    assert not uncovered, "; ".join(uncovered)


def test_autoscalers_scale_workloads_that_exist(manifests: Manifests) -> None:
    workload_names = {(workload["kind"], workload["metadata"]["name"]) for workload in manifests.workloads}
    scalers = [*manifests.of_kind("HorizontalPodAutoscaler").values(), *manifests.of_kind("ScaledObject").values()]
    missing = []
    for scaler in scalers:
        target = scaler["spec"]["scaleTargetRef"]
        target_kind = target.get("kind", "Deployment")
        if (target_kind, target["name"]) not in workload_names:
            missing.append(f"{name_of(scaler)} scales {target_kind}/{target['name']}, which does not exist")
    assert not missing, "; ".join(missing)


def test_generated_settings_and_secrets_hold_only_real_settings(manifests: Manifests) -> None:
    unknown = []
    for holder in [*manifests.config_maps.values(), *manifests.secrets.values()]:
        for name in [*holder.get("data", {}), *holder.get("stringData", {})]:
            if name.startswith("DAM_") and name not in manifests.setting_variables:
                unknown.append(f"{name_of(holder)} key {name}")
    assert not unknown, f"not settings: {unknown}"


def texts_that_may_name_services(manifests: Manifests) -> list[str]:
    """Env values, KEDA addresses and the generated settings' values: where a host name can hide."""
    texts = []
    for document in manifests.documents:
        for container in containers_of(document):
            texts += [value for value in container_env(container).values() if isinstance(value, str)]
        if document["kind"] == "ScaledObject":
            texts += [trigger["metadata"].get("address", "") for trigger in document["spec"].get("triggers", [])]
    for holder in [*manifests.config_maps.values(), *manifests.secrets.values()]:
        texts += [str(value) for value in holder.get("stringData", {}).values()]
        for value in holder.get("data", {}).values():
            # A rendered Secret's data is base64; a ConfigMap's is plain.
            texts.append(base64.b64decode(value).decode() if holder["kind"] == "Secret" else str(value))
    return texts


def test_host_names_name_services_that_exist(manifests: Manifests) -> None:
    """Full names (`name.namespace.svc.cluster.local[:port]`) and bare URL hosts name Services of the kustomization
    (or the cluster DNS), on a port the Service declares."""
    services = manifests.services

    def service_has_port(service: dict, port: str | None) -> bool:
        return port is None or any(str(declared["port"]) == port for declared in service["spec"].get("ports", []))

    problems = []
    for text in texts_that_may_name_services(manifests):
        for name, namespace, port in re.findall(r"\b([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local(?::(\d+))?", text):
            exists = (name, namespace) == CLUSTER_DNS_SERVICE or (
                name in services
                and services[name]["metadata"].get("namespace") == namespace
                and service_has_port(services[name], port or None)
            )
            if not exists:
                problems.append(f"{name}.{namespace}.svc.cluster.local{':' + port if port else ''} is not a Service "
                                "(or not its port)")
        if re.match(r"^(redis|https?)://", text):
            url = urlparse(text)
            host = url.hostname or ""
            if "." not in host and host != "localhost" and not (
                host in services and service_has_port(services[host], str(url.port) if url.port else None)
            ):
                problems.append(f"the URL {text} does not name a Service in the namespace and its port")
    assert not problems, "; ".join(sorted(set(problems)))


def test_every_object_matches_the_kubernetes_schema(manifests: Manifests) -> None:
    """Strictly (unknown fields refused); custom resources (KEDA's) have no schema there and are left out."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate to check every object against the API's schema")
    problems = []
    for document in manifests.documents:
        try:
            kubernetes_validate.validate(document, MINIMUM_KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            continue
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{name_of(document)}: {error.message}")
    assert not problems, f"against the Kubernetes {MINIMUM_KUBERNETES_VERSION} schema: {'; '.join(problems)}"
