"""Checks the Kubernetes manifests in deploy/k8s (issue 11): renders them with `kubectl kustomize` when kubectl is
installed (otherwise reads the files kustomization.yaml lists, generators included), then checks each object against
the API's schema when the kubernetes-validate package is installed, and what no schema catches: selectors, probes,
ports, env names, images, KEDA list names and grace periods must match each other and the code.

Usage: python3 tests/deploy/check_k8s.py [--without-kubectl]. One line per check; exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_DIRECTORY = ROOT / "deploy" / "k8s"
KUSTOMIZE_TIMEOUT_S = 60

# The shared contract of issue 11: the images built from the one Dockerfile, and each one's process.
CONTRACT_IMAGES = {
    "traffic-dam/gateway",
    "traffic-dam/llm-worker",
    "traffic-dam/dam",
    "traffic-dam/mock-llm",
    "traffic-dam/edge",
}
# Images from elsewhere that the manifests may use.
THIRD_PARTY_IMAGES = {"redis"}
# The uid of the `dam` user in every image the Dockerfile builds, which the pods also run as.
CONTRACT_USER_ID = 10001
# The edge image's environment: what deploy/nginx/edge-entrypoint.sh reads.
EDGE_VARIABLES = {
    "EDGE_GATEWAYS",
    "EDGE_LISTEN_PORT",
    "EDGE_RATE_PER_SECOND",
    "EDGE_BURST",
    "EDGE_CONNECTIONS_PER_ADDRESS",
    "EDGE_STREAMS",
    "EDGE_GATEWAY_MAX_BODY_BYTES",
    "EDGE_RESOLVE_INTERVAL_S",
    "EDGE_START_TIMEOUT_S",
    "EDGE_PREFIX",
    "EDGE_STATIC_DIR",
}
EDGE_DEFAULT_LISTEN_PORT = 8080
# The replaced system's memory limits (issue 11): 512 MB for the gateways and Redis.
MEMORY_LIMITS = {"traffic-dam/gateway": "512Mi", "redis": "512Mi"}
# A Rust service's image, the crate whose routes answer its probes, and its settings section (host and port).
RUST_SERVICES = {
    "traffic-dam/gateway": ("gateway", "gateway"),
    "traffic-dam/llm-worker": ("llm-worker", "worker"),
    "traffic-dam/dam": ("dam", "dam"),
    "traffic-dam/mock-llm": ("mock-llm", "mock_llm"),
}
# Settings a service cannot do without in a cluster: their defaults point at 127.0.0.1.
REQUIRED_VARIABLES = {
    "traffic-dam/gateway": {"DAM_REDIS__URL"},
    "traffic-dam/llm-worker": {"DAM_REDIS__URL", "DAM_LLM__BASE_URL"},
    "traffic-dam/dam": {"DAM_REDIS__URL"},
}
# The edge proxies every path to the gateways, so its HTTP probes are answered by a gateway's routes.
EDGE_ROUTES_CRATE = "gateway"
# Variables a service reads beside its settings (settings/loading.rs: CONFIG_DIRECTORY_VARIABLE).
NON_SETTING_DAM_VARIABLES = {"DAM_CONFIG_DIR"}
# The cluster DNS Service, the one name outside the kustomization that the manifests may point at.
CLUSTER_DNS_SERVICE = ("kube-dns", "kube-system")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
# The oldest Kubernetes the manifests are for: their pre-stop `sleep` action is on by default from 1.30.
MINIMUM_KUBERNETES_VERSION = "1.30.0"


@dataclass
class Report:
    failures: int = 0

    def check(self, passed: bool, description: str, detail: str = "") -> None:
        if passed:
            print(f"ok    {description}")
        else:
            self.failures += 1
            print(f"FAIL  {description}{': ' + detail if detail else ''}")


# ---------------------------------------------------------------- reading the manifests


def render_with_kubectl() -> list[dict]:
    completed = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIRECTORY)],
        capture_output=True,
        text=True,
        timeout=KUSTOMIZE_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"FAIL  kubectl kustomize deploy/k8s: {completed.stderr.strip()}")
    return [document for document in yaml.safe_load_all(completed.stdout) if document]


def env_file_pairs(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def generated_object(kind: str, generator: dict) -> dict:
    data = {}
    for env_file in generator.get("envs", []):
        data.update(env_file_pairs(K8S_DIRECTORY / env_file))
    for literal in generator.get("literals", []):
        name, _, value = literal.partition("=")
        data[name] = value
    # Secret values stay unencoded here: only their names are checked.
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": generator["name"]},
        "stringData" if kind == "Secret" else "data": data,
    }


def read_listed_files() -> list[dict]:
    """What kustomize would give, without kubectl: the listed files, the generators, the namespace and image tags
    (generated names keep no hash suffix, so references match them by their plain names)."""
    kustomization = yaml.safe_load((K8S_DIRECTORY / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization.get("resources", []):
        documents += [document for document in yaml.safe_load_all((K8S_DIRECTORY / resource).read_text()) if document]
    documents += [generated_object("ConfigMap", generator) for generator in kustomization.get("configMapGenerator", [])]
    documents += [generated_object("Secret", generator) for generator in kustomization.get("secretGenerator", [])]
    namespace = kustomization.get("namespace")
    tags = {image["name"]: image.get("newTag") for image in kustomization.get("images", [])}
    for document in documents:
        if namespace and document["kind"] != "Namespace":
            document["metadata"]["namespace"] = namespace
        for container in containers_of(document):
            if ":" not in container["image"] and tags.get(container["image"]):
                container["image"] = f"{container['image']}:{tags[container['image']]}"
    return documents


# ---------------------------------------------------------------- what the code says


def routes_of_crate(crate: str) -> set[str]:
    """Every path the crate's routers register (`.route("/path", ...)`), from its source."""
    routes = set()
    for source in (ROOT / "crates" / crate / "src").rglob("*.rs"):
        routes |= set(re.findall(r'\.route\(\s*"([^"]+)"', source.read_text()))
    return routes


def flatten_settings(table: dict, prefix: str = "") -> dict[str, object]:
    names = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            names.update(flatten_settings(value, dotted))
        else:
            names[dotted] = value
    return names


def default_settings() -> dict[str, object]:
    """Every setting and its default, from the sample config (a Rust test holds it equal to the defaults), plus
    the secrets, which only the environment may set (settings/secrets.rs: SECRET_SETTINGS)."""
    settings = flatten_settings(tomllib.loads((ROOT / "config" / "example.toml.sample").read_text()))
    settings_source = (ROOT / "crates" / "protocol" / "src" / "settings" / "secrets.rs").read_text()
    secrets = re.findall(r'\("([a-z_]+\.[a-z_]+)", "(DAM_[A-Z_]+)"\)', settings_source)
    if not secrets:
        raise SystemExit("FAIL  could not read SECRET_SETTINGS in crates/protocol/src/settings/secrets.rs")
    for dotted, _variable in re.findall(r'\("([a-z_]+\.[a-z_]+)", "(DAM_[A-Z_]+)"\)', settings_source):
        settings.setdefault(dotted, None)
    return settings


def variable_of(dotted: str) -> str:
    return "DAM_" + "__".join(part.upper() for part in dotted.split("."))


def lane_list_names(key_prefix: str) -> set[str]:
    """The lanes' list names as `RedisKeys::lane_queue` builds them, for every `Lane` in job.rs."""
    keys_source = (ROOT / "crates" / "protocol" / "src" / "keys.rs").read_text()
    lane_queue = re.search(r'fn lane_queue\(.*?format!\("([^"]+)", self\.prefix, lane\.as_str\(\)\)', keys_source, re.S)
    job_source = (ROOT / "crates" / "protocol" / "src" / "job.rs").read_text()
    lanes = re.findall(r'Lane::\w+ => "([a-z]+)"', job_source)
    if not lane_queue or not lanes:
        raise SystemExit("FAIL  could not read lane_queue in keys.rs or the lanes in job.rs")
    template = lane_queue.group(1)
    return {template.replace("{}", key_prefix, 1).replace("{}", lane, 1) for lane in lanes}


def default_key_prefix() -> str:
    keys_source = (ROOT / "crates" / "protocol" / "src" / "keys.rs").read_text()
    return re.search(r'DEFAULT_KEY_PREFIX: &str = "([^"]*)"', keys_source).group(1)


# ---------------------------------------------------------------- walking the objects


def pod_spec_of(document: dict) -> dict | None:
    if document.get("kind") in WORKLOAD_KINDS:
        return document["spec"]["template"]["spec"]
    return None


def containers_of(document: dict) -> list[dict]:
    pod_spec = pod_spec_of(document)
    return pod_spec.get("containers", []) if pod_spec else []


def image_name(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image.split("@")[0]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def name_of(document: dict) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


def resolves_port(port: object, container: dict) -> bool:
    """A probe's or Service's port, by number or by name, is one the container declares."""
    for declared in container.get("ports", []):
        if port == declared.get("containerPort") or port == declared.get("name"):
            return True
    return False


def container_env(container: dict) -> dict[str, object]:
    return {variable["name"]: variable.get("value", variable.get("valueFrom")) for variable in container.get("env", [])}


def effective_settings(container: dict, config_maps: dict[str, dict], defaults: dict[str, object]) -> dict[str, str]:
    """The DAM_* values the container's process sees: defaults, then envFrom ConfigMaps, then env."""
    values = {variable_of(dotted): str(value) for dotted, value in defaults.items()}
    for source in container.get("envFrom", []):
        reference = source.get("configMapRef")
        if reference and reference["name"] in config_maps:
            values.update({name: str(value) for name, value in config_maps[reference["name"]].get("data", {}).items()})
    for name, value in container_env(container).items():
        if isinstance(value, str):
            values[name] = value
    return values


def documented_hand_made_secrets() -> set[str]:
    """Secrets created with `kubectl create secret generic NAME` by the operator, as deploy/k8s documents them."""
    text = "\n".join(path.read_text() for path in K8S_DIRECTORY.glob("*") if path.suffix in {".md", ".yaml"})
    return set(re.findall(r"create secret generic ([a-z0-9-]+)", text.replace("\\\n", " ")))


# ---------------------------------------------------------------- the checks


def check_manifests(documents: list[dict], report: Report) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    workloads = [document for document in documents if document["kind"] in WORKLOAD_KINDS]
    services = by_kind.get("Service", {})
    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    defaults = default_settings()
    setting_variables = {variable_of(dotted) for dotted in defaults} | NON_SETTING_DAM_VARIABLES
    hand_made_secrets = documented_hand_made_secrets()

    def workloads_selected_by(selector: dict) -> list[dict]:
        return [
            workload
            for workload in workloads
            if selects(selector, workload["spec"]["template"]["metadata"].get("labels", {}))
        ]

    report.check(bool(workloads), f"the manifests hold workloads ({len(documents)} objects)")
    namespaces = {document["metadata"].get("namespace") for document in documents if document["kind"] != "Namespace"}
    report.check(namespaces == {"traffic-dam"}, "every object is in namespace traffic-dam", str(namespaces))

    # Workloads select their own pods, and spread by their own labels.
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        selector = workload["spec"]["selector"].get("matchLabels", {})
        report.check(
            selects(selector, labels), f"{name_of(workload)} selects its own pod template", f"{selector} vs {labels}"
        )
        for constraint in pod_spec_of(workload).get("topologySpreadConstraints", []):
            spread_selector = constraint.get("labelSelector", {}).get("matchLabels", {})
            report.check(
                selects(spread_selector, labels),
                f"{name_of(workload)} spreads over {constraint['topologyKey']} by its own pods' labels",
                str(spread_selector),
            )
        if workload["kind"] == "StatefulSet":
            report.check(
                workload["spec"].get("serviceName") in services, f"{name_of(workload)}'s serviceName is a Service"
            )

    # Services select pods, and their target ports are the pods' container ports.
    for service in services.values():
        selector = service["spec"].get("selector", {})
        selected = workloads_selected_by(selector)
        report.check(
            bool(selected), f"{name_of(service)} selects the pods of {[name_of(w) for w in selected]}", str(selector)
        )
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            report.check(
                bool(selected) and all(any(resolves_port(target, c) for c in containers_of(w)) for w in selected),
                f"{name_of(service)} port {port['port']} reaches container port {target}",
            )
    for budget in by_kind.get("PodDisruptionBudget", {}).values():
        selector = budget["spec"]["selector"].get("matchLabels", {})
        selected = workloads_selected_by(selector)
        report.check(
            bool(selected), f"{name_of(budget)} covers the pods of {[name_of(w) for w in selected]}", str(selector)
        )

    # Autoscalers scale workloads that exist.
    workload_names = {(workload["kind"], workload["metadata"]["name"]) for workload in workloads}
    scalers = list(by_kind.get("HorizontalPodAutoscaler", {}).values()) + list(by_kind.get("ScaledObject", {}).values())
    for scaler in scalers:
        target = scaler["spec"]["scaleTargetRef"]
        target_kind = target.get("kind", "Deployment")
        report.check(
            (target_kind, target["name"]) in workload_names,
            f"{name_of(scaler)} scales {target_kind}/{target['name']}, which exists",
        )

    # Each container: image, probes on real routes and ports, resources, security, env names.
    for workload in workloads:
        pod_spec = pod_spec_of(workload)
        pod_security = pod_spec.get("securityContext", {})
        for container in containers_of(workload):
            where = f"{name_of(workload)} container {container['name']}"
            image = container["image"]
            base_image = image_name(image)
            report.check(
                base_image in CONTRACT_IMAGES | THIRD_PARTY_IMAGES,
                f"{where} runs a contract image or an allowed third-party one ({base_image})",
            )
            report.check(image != base_image, f"{where}'s image has a tag ({image})")
            settings = effective_settings(container, config_maps, defaults)

            if base_image in RUST_SERVICES:
                crate, section = RUST_SERVICES[base_image]
                routes = routes_of_crate(crate)
                listen_port = int(settings[variable_of(f"{section}.port")])
                listen_host = settings[variable_of(f"{section}.host")]
                report.check(
                    listen_host == "0.0.0.0",
                    f"{where} listens on 0.0.0.0 ({variable_of(section + '.host')})",
                    listen_host,
                )
                report.check(
                    any(port.get("containerPort") == listen_port for port in container.get("ports", [])),
                    f"{where} declares the port it listens on ({section}.port = {listen_port})",
                )
                if "command" in container:
                    report.check(
                        container["command"][0] == f"/usr/local/bin/{crate}",
                        f"{where} runs /usr/local/bin/{crate}",
                        str(container["command"]),
                    )
            elif base_image == "traffic-dam/edge":
                routes = routes_of_crate(EDGE_ROUTES_CRATE)
                edge_env = container_env(container)
                listen_port = int(edge_env.get("EDGE_LISTEN_PORT", EDGE_DEFAULT_LISTEN_PORT))
                report.check(
                    any(port.get("containerPort") == listen_port for port in container.get("ports", [])),
                    f"{where} declares the port it listens on (EDGE_LISTEN_PORT = {listen_port})",
                )
                unknown = set(edge_env) - EDGE_VARIABLES
                report.check(not unknown, f"{where}'s EDGE_* variables are the contract's", str(sorted(unknown)))
            else:
                routes = set()

            for probe_kind in ("readinessProbe", "livenessProbe"):
                probe = container.get(probe_kind)
                report.check(probe is not None, f"{where} has a {probe_kind}")
                if not probe:
                    continue
                if "httpGet" in probe:
                    path, port = probe["httpGet"]["path"], probe["httpGet"]["port"]
                    report.check(
                        path in routes,
                        f"{where} {probe_kind} GET {path} is a route of its service",
                        str(sorted(routes)),
                    )
                    report.check(
                        resolves_port(port, container), f"{where} {probe_kind} port {port} is a container port"
                    )
                elif "tcpSocket" in probe:
                    port = probe["tcpSocket"]["port"]
                    report.check(
                        resolves_port(port, container), f"{where} {probe_kind} port {port} is a container port"
                    )
                else:
                    report.check(
                        "exec" in probe and base_image in THIRD_PARTY_IMAGES,
                        f"{where} {probe_kind} runs a command in a third-party image",
                    )

            resources = container.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            report.check(
                {"cpu", "memory"} <= set(requests) and "memory" in limits,
                f"{where} requests CPU and memory and limits memory",
                str(resources),
            )
            if base_image in MEMORY_LIMITS:
                report.check(
                    limits.get("memory") == MEMORY_LIMITS[base_image],
                    f"{where}'s memory limit is {MEMORY_LIMITS[base_image]}",
                    str(limits.get("memory")),
                )

            security = {**pod_security, **container.get("securityContext", {})}
            report.check(
                security.get("runAsNonRoot") is True
                and security.get("runAsUser") == CONTRACT_USER_ID
                and security.get("allowPrivilegeEscalation") is False
                and security.get("capabilities", {}).get("drop") == ["ALL"],
                f"{where} runs as uid {CONTRACT_USER_ID}, non-root, with every capability dropped",
            )

            for name in container_env(container):
                if name.startswith("DAM_"):
                    report.check(name in setting_variables, f"{where} env {name} is a real setting")
            for variable in container.get("env", []):
                secret_reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if secret_reference:
                    secret_name = secret_reference["name"]
                    report.check(
                        secret_name in secrets or secret_name in hand_made_secrets,
                        f"{where} env {variable['name']} comes from a generated or documented Secret ({secret_name})",
                    )
            provided = set(container_env(container))
            for source in container.get("envFrom", []):
                for reference_kind, available in (("configMapRef", config_maps), ("secretRef", secrets)):
                    if source.get(reference_kind, {}).get("name") in available:
                        holder = available[source[reference_kind]["name"]]
                        provided |= set(holder.get("data", {})) | set(holder.get("stringData", {}))
            for required in sorted(REQUIRED_VARIABLES.get(base_image, set())):
                report.check(required in provided, f"{where} is given {required}")
            for source in container.get("envFrom", []):
                for reference_kind, available in (("configMapRef", config_maps), ("secretRef", secrets)):
                    reference = source.get(reference_kind)
                    if reference:
                        report.check(
                            reference["name"] in available,
                            f"{where} envFrom {reference_kind} {reference['name']} exists",
                        )

    # Every DAM_* name the generated settings and secrets hold is a real setting.
    for holder in list(config_maps.values()) + list(secrets.values()):
        for name in list(holder.get("data", {})) + list(holder.get("stringData", {})):
            if name.startswith("DAM_"):
                report.check(name in setting_variables, f"{name_of(holder)} key {name} is a real setting")

    check_gateways_and_edge(by_kind, workloads, config_maps, defaults, report)
    check_worker_scaling(by_kind, workloads, config_maps, defaults, report)
    check_dam_and_redis(by_kind, workloads, report)
    check_service_names(documents, services, config_maps, secrets, report)


def workload_by_image(workloads: list[dict], image: str) -> tuple[dict, dict]:
    for workload in workloads:
        for container in containers_of(workload):
            if image_name(container["image"]) == image:
                return workload, container
    raise SystemExit(f"FAIL  no workload runs {image}")


def pre_stop_seconds(container: dict) -> int:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    return int(pre_stop.get("sleep", {}).get("seconds", 0))


def check_grace_period_exceeds_drain(name: str, workload, container, settings, drain_setting: str,
                                     report: Report) -> None:
    """The pod's termination grace period covers its pre-stop pause and the drain `drain_setting` allows."""
    section, key = drain_setting.split(".")
    drain_s = int(settings[f"DAM_{section.upper()}__{key.upper()}"])
    grace_s = pod_spec_of(workload).get("terminationGracePeriodSeconds", 30)
    pause_s = pre_stop_seconds(container)
    report.check(
        grace_s > pause_s + drain_s,
        f"{name} grace period {grace_s}s exceeds its pre-stop pause {pause_s}s + {drain_setting} {drain_s}s",
    )


def check_gateways_and_edge(by_kind, workloads, config_maps, defaults, report: Report) -> None:
    gateway, gateway_container = workload_by_image(workloads, "traffic-dam/gateway")
    settings = effective_settings(gateway_container, config_maps, defaults)
    check_grace_period_exceeds_drain("gateway", gateway, gateway_container, settings, "gateway.shutdown_drain_s",
                                     report)
    report.check(bool(pod_spec_of(gateway).get("topologySpreadConstraints")), "gateways spread across nodes and zones")

    trusted = container_env(gateway_container).get("DAM_AUTH__TRUSTED_PROXIES")
    try:
        networks = (
            [ipaddress.ip_network(cidr.strip()) for cidr in str(trusted).split(",")] if isinstance(trusted, str) else []
        )
    except ValueError:
        networks = []
    report.check(bool(networks), f"the gateways trust the edge's network in DAM_AUTH__TRUSTED_PROXIES ({trusted})")

    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    _edge, edge_container = workload_by_image(workloads, "traffic-dam/edge")
    edge_gateways = str(container_env(edge_container).get("EDGE_GATEWAYS", ""))
    host, _, port = edge_gateways.rpartition(":")
    service_name, namespace = (host.split(".") + ["", ""])[:2]
    service = by_kind.get("Service", {}).get(service_name)
    report.check(
        service is not None
        and service["spec"].get("clusterIP") == "None"
        and service["metadata"].get("namespace") == namespace
        and selects(service["spec"].get("selector", {}), gateway_labels)
        and any(str(p["port"]) == port for p in service["spec"]["ports"]),
        f"EDGE_GATEWAYS ({edge_gateways}) names a headless Service of the gateway pods on their port",
    )

    for autoscaler in by_kind.get("HorizontalPodAutoscaler", {}).values():
        for metric in autoscaler["spec"].get("metrics", []):
            if metric["type"] == "Pods":
                name = metric["pods"]["metric"]["name"]
                source = "\n".join(path.read_text() for path in (ROOT / "crates" / "gateway" / "src").rglob("*.rs"))
                report.check(f'"{name}"' in source, f"{name_of(autoscaler)} Pods metric {name} is a gateway metric")


def check_worker_scaling(by_kind, workloads, config_maps, defaults, report: Report) -> None:
    worker, worker_container = workload_by_image(workloads, "traffic-dam/llm-worker")
    settings = effective_settings(worker_container, config_maps, defaults)
    check_grace_period_exceeds_drain("llm-worker", worker, worker_container, settings, "worker.drain_timeout_s",
                                     report)
    expected_lists = lane_list_names(settings.get("DAM_REDIS__KEY_PREFIX", default_key_prefix()))
    scaled_objects = [
        o
        for o in by_kind.get("ScaledObject", {}).values()
        if o["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    ]
    report.check(len(scaled_objects) == 1, "one KEDA ScaledObject scales the llm-workers")
    for scaled_object in scaled_objects:
        triggers = scaled_object["spec"].get("triggers", [])
        list_names = {trigger["metadata"].get("listName") for trigger in triggers if trigger["type"] == "redis"}
        report.check(
            list_names == expected_lists,
            f"{name_of(scaled_object)} watches exactly the lanes' lists {sorted(expected_lists)}",
            str(sorted(map(str, list_names))),
        )
        for trigger in triggers:
            report.check(
                int(trigger["metadata"].get("listLength", 0)) > 0,
                f"{name_of(scaled_object)} trigger {trigger['metadata'].get('listName')} has a listLength target",
            )
        spec = scaled_object["spec"]
        report.check(
            1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 0),
            f"{name_of(scaled_object)} has min and max replica counts",
        )


def check_dam_and_redis(by_kind, workloads, report: Report) -> None:
    dam, dam_container = workload_by_image(workloads, "traffic-dam/dam")
    dam_labels = dam["spec"]["template"]["metadata"]["labels"]
    for service in by_kind.get("Service", {}).values():
        if selects(service["spec"].get("selector", {}), dam_labels):
            report.check(
                service["spec"].get("type", "ClusterIP") == "ClusterIP",
                f"{name_of(service)} keeps the dam inside the cluster",
            )
    token = container_env(dam_container).get("DAM_DAM__ADMIN_TOKEN")
    report.check(isinstance(token, dict) and "secretKeyRef" in token, "the dam's admin token comes from a Secret")
    for ingress in by_kind.get("Ingress", {}).values():
        report.check("dam" not in yaml.safe_dump(ingress["spec"]), f"{name_of(ingress)} does not route to the dam")

    _redis, redis_container = workload_by_image(workloads, "redis")
    arguments = " ".join(str(argument) for argument in redis_container.get("args", []))
    for required in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--maxmemory "):
        report.check(required in arguments, f"redis runs with {required.strip()}")


def check_service_names(documents, services, config_maps, secrets, report: Report) -> None:
    """Host names in env values and KEDA addresses name Services that exist (full names in their namespace)."""
    texts = []
    for document in documents:
        for container in containers_of(document):
            texts += [value for value in container_env(container).values() if isinstance(value, str)]
        if document["kind"] == "ScaledObject":
            texts += [trigger["metadata"].get("address", "") for trigger in document["spec"].get("triggers", [])]
    for holder in list(config_maps.values()) + list(secrets.values()):
        texts += [str(value) for value in holder.get("stringData", {}).values()]
        for value in holder.get("data", {}).values():
            # A rendered Secret's data is base64; a ConfigMap's is plain.
            texts.append(base64.b64decode(value).decode() if holder["kind"] == "Secret" else str(value))

    def service_has_port(service: dict, port: str | None) -> bool:
        return port is None or any(str(declared["port"]) == port for declared in service["spec"].get("ports", []))

    seen = set()
    for text in texts:
        for name, namespace, port in re.findall(r"\b([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local(?::(\d+))?", text):
            if (name, namespace, port) in seen:
                continue
            seen.add((name, namespace, port))
            exists = (name, namespace) == CLUSTER_DNS_SERVICE or (
                name in services
                and services[name]["metadata"].get("namespace") == namespace
                and service_has_port(services[name], port or None)
            )
            report.check(
                exists, f"{name}.{namespace}.svc.cluster.local{':' + port if port else ''} is a Service (and its port)"
            )
        if re.match(r"^(redis|https?)://", text):
            url = urlparse(text)
            host = url.hostname or ""
            if "." not in host and host != "localhost":
                report.check(
                    host in services and service_has_port(services[host], str(url.port) if url.port else None),
                    f"the URL {text} names a Service in the namespace, and its port",
                )


def check_schemas(documents: list[dict], report: Report) -> None:
    """Each object against the Kubernetes API's own schema, strictly (unknown fields refused), when the optional
    kubernetes-validate package is installed; custom resources (KEDA's) have no schema there."""
    try:
        import kubernetes_validate
    except ImportError:
        print("skip  schema check: pip install kubernetes-validate to check every object against the API's schema")
        return
    for document in documents:
        try:
            kubernetes_validate.validate(document, MINIMUM_KUBERNETES_VERSION, strict=True)
            report.check(True, f"{name_of(document)} matches the Kubernetes {MINIMUM_KUBERNETES_VERSION} schema")
        except kubernetes_validate.SchemaNotFoundError:
            print(f"skip  {name_of(document)}: no schema for {document['apiVersion']}")
        except kubernetes_validate.ValidationError as error:
            report.check(
                False, f"{name_of(document)} matches the Kubernetes {MINIMUM_KUBERNETES_VERSION} schema", error.message
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--without-kubectl", action="store_true", help="read the listed files even when kubectl is installed"
    )
    arguments = parser.parse_args()
    report = Report()
    if shutil.which("kubectl") and not arguments.without_kubectl:
        print("rendering with kubectl kustomize deploy/k8s")
        documents = render_with_kubectl()
    else:
        print("kubectl not used: reading the files kustomization.yaml lists")
        documents = read_listed_files()
    check_schemas(documents, report)
    check_manifests(documents, report)
    print(f"{'FAILED' if report.failures else 'passed'}: {report.failures} failed check(s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
