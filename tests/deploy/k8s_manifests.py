"""The Kubernetes manifests in deploy/k8s as the tests read them: rendered with `kubectl kustomize` when kubectl is
installed (otherwise the files kustomization.yaml lists, generators included; set K8S_WITHOUT_KUBECTL=1 to read
them so even with kubectl), the objects walked (pods, containers, their settings), and what the code says they must
match (routes, settings, lane list names). Only reading here; the rules are the tests in test_k8s_*.py."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_DIRECTORY = ROOT / "deploy" / "k8s"
KUSTOMIZE_TIMEOUT_S = 60

# The deployment's shared contract: the images built from the one Dockerfile, and each one's process.
CONTRACT_IMAGES = {
    "traffic-dam/gateway",
    "traffic-dam/llm-worker",
    "traffic-dam/dam",
    "traffic-dam/mock-llm",
    "traffic-dam/edge",
}
EDGE_IMAGE = "traffic-dam/edge"
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
# The replaced system's memory limits: 512 MB for the gateways and Redis.
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
        raise RuntimeError(f"kubectl kustomize deploy/k8s: {completed.stderr.strip()}")
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
        raise RuntimeError("could not read SECRET_SETTINGS in crates/protocol/src/settings/secrets.rs")
    for dotted, _variable in secrets:
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
        raise RuntimeError("could not read lane_queue in keys.rs or the lanes in job.rs")
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


# ---------------------------------------------------------------- the rendered manifests, indexed


@dataclass(frozen=True)
class PlacedContainer:
    """One container with the workload that runs it: what most per-container rules need."""

    workload: dict
    container: dict

    @property
    def where(self) -> str:
        return f"{name_of(self.workload)} container {self.container['name']}"

    @property
    def test_id(self) -> str:
        return f"{name_of(self.workload)}/{self.container['name']}"

    @property
    def base_image(self) -> str:
        return image_name(self.container["image"])


class Manifests:
    """Every rendered object, indexed by kind and name, with the settings and Secrets they are checked against."""

    def __init__(self, documents: list[dict]):
        self.documents = documents
        self.by_kind: dict[str, dict[str, dict]] = {}
        for document in documents:
            self.by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
        self.workloads = [document for document in documents if document["kind"] in WORKLOAD_KINDS]
        self.services = self.of_kind("Service")
        self.config_maps = self.of_kind("ConfigMap")
        self.secrets = self.of_kind("Secret")
        self.defaults = default_settings()
        self.setting_variables = {variable_of(dotted) for dotted in self.defaults} | NON_SETTING_DAM_VARIABLES
        self.hand_made_secrets = documented_hand_made_secrets()

    def of_kind(self, kind: str) -> dict[str, dict]:
        return self.by_kind.get(kind, {})

    def placed_containers(self) -> list[PlacedContainer]:
        return [PlacedContainer(workload, container) for workload in self.workloads
                for container in containers_of(workload)]

    def workloads_selected_by(self, selector: dict) -> list[dict]:
        return [
            workload
            for workload in self.workloads
            if selects(selector, workload["spec"]["template"]["metadata"].get("labels", {}))
        ]

    def workload_by_image(self, image: str) -> tuple[dict, dict]:
        for workload in self.workloads:
            for container in containers_of(workload):
                if image_name(container["image"]) == image:
                    return workload, container
        raise LookupError(f"no workload runs {image}")

    def settings_of(self, container: dict) -> dict[str, str]:
        return effective_settings(container, self.config_maps, self.defaults)


@functools.cache
def load_manifests() -> Manifests:
    """Rendered once per test run: kubectl takes a second or two, and every test reads the same objects."""
    if shutil.which("kubectl") and os.environ.get("K8S_WITHOUT_KUBECTL") != "1":
        return Manifests(render_with_kubectl())
    return Manifests(read_listed_files())
