"""The plan of one local stack: deploy/topology.toml with the knobs read from the environment, turned into the
processes to start (name, command line, settings, port, readiness check, start wave, stop phase). Reads and
checks only; starting them is deploy/supervisor.py's job."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 and older: the same parser, as a package (make deps installs it)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY_PATH = ROOT / "deploy" / "topology.toml"
# Knobs that hold whole numbers, and the ranges of the two counts.
NUMBER_KNOBS = ("SCALE_GATEWAY", "SCALE_WORKER", "PUBLIC_PORT", "GATEWAY_PORT_BASE", "WORKER_PORT_BASE",
                "REDIS_PORT", "MOCK_LLM_PORT", "ADMIN_PORT", "PROMETHEUS_PORT", "READY_TIMEOUT_S", "STOP_TIMEOUT_S")
OPTIONAL_NUMBER_KNOBS = ("EDGE_RATE_PER_SECOND", "EDGE_BURST", "EDGE_CONNECTIONS_PER_ADDRESS")
COUNT_RANGES = {"SCALE_GATEWAY": (1, 32), "SCALE_WORKER": (0, 64)}
PLACEHOLDER = re.compile(r"\{([A-Za-z_:-]+)\}")


class PlanError(Exception):
    """A knob or setting the stack cannot run with; the message says which and why."""


@dataclass
class PlannedProcess:
    name: str  # the instance's name: redis, gateway-2, worker-1, ...
    kind: str  # the topology entry it comes from: redis, gateway, worker, ...
    command: list[str]
    environment: dict[str, str]  # settings for this instance only, over the stack's environment
    port: int
    ready: str  # "redis-ping", or the HTTP path answering 2xx once it is ready
    stop_phase: int
    wave: int  # start order: every process of a wave starts together, once the ones before are ready
    sees_llm_api_key: bool = False
    binary: str | None = None  # the cargo binary it runs, if any (RUN_DIR/bin/NAME links to it)

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.ready}"


@dataclass
class Plan:
    knobs: dict[str, str]
    run_dir: Path
    processes: list[PlannedProcess]
    environment: dict[str, str]  # what every process gets: the caller's environment with the stack's settings
    use_mock_llm: bool
    served_model: str
    # Every cargo binary of the topology, built together whichever of them run (so `make build-release` then
    # `make run` compiles nothing twice, with mock-llm or a real LLM).
    binaries: list[str] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pid_dir(self) -> Path:
        return self.run_dir / "pids"

    @property
    def bin_dir(self) -> Path:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
        return (target if target.is_absolute() else ROOT / target) / self.knobs["PROFILE"]

    def ports_of(self, kind: str) -> list[int]:
        return [process.port for process in self.processes if process.kind == kind]

    def of_kind(self, kind: str) -> list[PlannedProcess]:
        return [process for process in self.processes if process.kind == kind]

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.knobs['PUBLIC_PORT']}"


def load_topology(path: Path = TOPOLOGY_PATH) -> dict:
    with open(path, "rb") as topology_file:
        return tomllib.load(topology_file)


def read_knobs(topology: dict, environ: dict[str, str]) -> dict[str, str]:
    """Each knob from the environment, else its default; checked before anything starts."""
    knobs = {name: str(environ.get(name, default)) for name, default in topology["knobs"].items()}
    if "PUBLIC_PORT" not in environ and environ.get("DAM_PUBLIC_PORT"):
        knobs["PUBLIC_PORT"] = environ["DAM_PUBLIC_PORT"]
    for name in NUMBER_KNOBS:
        if not knobs[name].isdigit():
            raise PlanError(f"{name} must be a whole number, got '{knobs[name]}'")
    for name in OPTIONAL_NUMBER_KNOBS:
        if knobs[name] and not knobs[name].isdigit():
            raise PlanError(f"{name} must be a whole number or empty (the default), got '{knobs[name]}'")
    for name, (lowest, highest) in COUNT_RANGES.items():
        if not lowest <= int(knobs[name]) <= highest:
            raise PlanError(f"{name} must be {lowest}..{highest}, got {knobs[name]}")
    if knobs["PROFILE"] not in ("release", "debug"):
        raise PlanError(f"PROFILE must be release or debug, got '{knobs['PROFILE']}'")
    if not all(port.isdigit() for port in knobs["WORKER_PORTS"].split()):
        raise PlanError(f"WORKER_PORTS must be whole numbers separated by spaces, got '{knobs['WORKER_PORTS']}'")
    return knobs


def stack_environment(topology: dict, knobs: dict[str, str], environ: dict[str, str]) -> tuple[dict, bool, str]:
    """The caller's environment with the stack's settings, whether mock-llm runs, and the model served."""
    environment = {name: value for name, value in environ.items() if name not in ("DAM_PUBLIC_PORT",)}
    # Not a setting (it would be refused as unknown): taken as the model knob.
    model = environment.pop("DAM_LLM__MODEL_NAME", None) or knobs["TRAFFIC_DAM_MODEL"]
    use_mock_llm = not environment.get("DAM_LLM__BASE_URL")
    if use_mock_llm:
        environment["DAM_LLM__BASE_URL"] = f"http://127.0.0.1:{knobs['MOCK_LLM_PORT']}/v1"
    else:
        # A real provider replaces mock-llm, and the served model defaults to one it knows.
        environment.setdefault("DAM_CHAT__DEFAULT_MODEL", model)
        environment.setdefault("DAM_CHAT__ALLOWED_MODELS", model)
    for name, value in topology.get("environment_defaults", {}).items():
        environment.setdefault(name, value)
    cores = os.cpu_count() or 1
    environment.setdefault("DAM_GATEWAY__RUNTIME_THREADS", str(max(1, cores // int(knobs["SCALE_GATEWAY"]))))
    return environment, use_mock_llm, environment.get("DAM_CHAT__DEFAULT_MODEL", "mock-1")


def instance_ports(entry: dict, knobs: dict[str, str], count: int) -> list[int]:
    listed = knobs.get(entry.get("ports_list", ""), "").split()
    if listed:
        if len(listed) < count:
            raise PlanError(f"{entry['ports_list']} names {len(listed)} ports for {count} {entry['name']}s")
        return [int(port) for port in listed[:count]]
    base = int(knobs[entry["port"]])
    return [base + index for index in range(count)]


def start_waves(entries: list[dict]) -> dict[str, int]:
    """Wave of each entry: one more than the latest wave among what it needs (needs not run are met)."""
    names = {entry["name"] for entry in entries}
    waves: dict[str, int] = {}
    for _round in range(len(entries) + 1):
        for entry in entries:
            needed = [waves.get(name) for name in entry.get("needs", []) if name in names]
            if entry["name"] not in waves and None not in needed:
                waves[entry["name"]] = 1 + max(needed, default=0)
    missing = names - waves.keys()
    if missing:
        raise PlanError(f"deploy/topology.toml: a cycle in `needs` among {sorted(missing)}")
    return waves


def fill(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        if match.group(1) not in values:
            raise PlanError(f"deploy/topology.toml: unknown placeholder {match.group(0)} in '{text}'")
        return values[match.group(1)]

    return PLACEHOLDER.sub(replace, text)


def make_plan(environ: dict[str, str] | None = None, topology: dict | None = None) -> Plan:
    environ = dict(os.environ if environ is None else environ)
    topology = topology or load_topology()
    knobs = read_knobs(topology, environ)
    run_dir = Path(knobs["RUN_DIR"])
    run_dir = run_dir if run_dir.is_absolute() else ROOT / run_dir
    environment, use_mock_llm, served_model = stack_environment(topology, knobs, environ)
    switches = {"mock_llm": use_mock_llm, "MONITORING": knobs["MONITORING"] == "1"}
    entries = [entry for entry in topology["process"] if switches.get(entry.get("only_with"), True)]
    waves = start_waves(entries)
    counts = {entry["name"]: int(knobs[entry["instances"]]) if "instances" in entry else 1 for entry in entries}
    ports = {entry["name"]: instance_ports(entry, knobs, counts[entry["name"]]) for entry in entries}
    values = {**knobs, "run_dir": str(run_dir), "log_dir": str(run_dir / "logs"), "root": str(ROOT)}
    values.update({f"ports:{name}": " ".join(map(str, entry_ports)) for name, entry_ports in ports.items()})
    for name, value in topology.get("environment", {}).items():
        environment[name] = fill(value, values)
    processes = []
    for entry in entries:
        for index, port in enumerate(ports[entry["name"]]):
            instance = f"{entry['name']}-{index + 1}" if "instances" in entry else entry["name"]
            own = {**values, "port": str(port), "instance": instance}
            if "binary" in entry:
                # Run through a link in RUN_DIR/bin, so each command line names the run directory.
                command = [str(run_dir / "bin" / instance)]
                own_environment = {"DAM_TELEMETRY__INSTANCE": instance}
            else:
                command = [fill(entry["program"], own)]
                own_environment = {}
            command += [fill(argument, own) for argument in entry.get("arguments", [])]
            own_environment.update({key: fill(value, own) for key, value in entry.get("environment", {}).items()})
            processes.append(PlannedProcess(
                name=instance, kind=entry["name"], command=command, environment=own_environment, port=port,
                ready=entry["ready"], stop_phase=entry["stop_phase"], wave=waves[entry["name"]],
                sees_llm_api_key=entry.get("sees_llm_api_key", False), binary=entry.get("binary")))
    binaries = sorted({entry["binary"] for entry in topology["process"] if "binary" in entry})
    plan = Plan(knobs, run_dir, processes, environment, use_mock_llm, served_model, binaries)
    check_ports_distinct(plan)
    return plan


def check_ports_distinct(plan: Plan) -> None:
    owner: dict[int, str] = {}
    for process in plan.processes:
        if not 1 <= process.port <= 65535:
            raise PlanError(f"{process.name}: port {process.port} is out of range")
        if process.port in owner:
            raise PlanError(f"port {process.port} is set for both {owner[process.port]} and {process.name}; "
                            "change one of the *_PORT knobs")
        owner[process.port] = process.name
