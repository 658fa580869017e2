"""What the compose tests read: deploy/compose.yaml and the files beside it, the Dockerfile's stages, and the
deployment's shared contract (each image's target, port and user). Only reading and parsing here; the rules
themselves are the tests in test_compose_*.py and test_ci_workflow.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
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
        raise ValueError(f"cannot read the memory size {text!r}")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2) or "_"))


def duration_seconds(text: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    if not parts or "".join(number + unit for number, unit in parts) != str(text):
        raise ValueError(f"cannot read the duration {text!r}")
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
                raise ValueError(f"Dockerfile: cannot read `FROM {arguments}`")
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


def installed_tool(name: str, install_hint: str = "") -> str:
    """The path of an optional checker (hadolint, promtool, ...); the test that wants it is skipped without it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed" + (f" ({install_hint})" if install_hint else ""))
    return path


def output_of(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).strip()


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and run_command(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed (Debian: apt-get install docker-compose)")


def clean_environment() -> dict[str, str]:
    """The caller's DAM_* or compose variables must not change what the file means, so compose sees none of them."""
    return {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG", "LC_ALL")}

