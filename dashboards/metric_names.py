"""The `dam_*` metric names the dashboards and the alert rules use, and the ones the catalog (docs/observability.md)
defines. Shared by check_monitoring_config.py (every name used is in the catalog) and by the end-to-end coverage
check (every name used is exported by some running service). Only reading files belongs here, no checking.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "dashboards" / "grafana" / "dashboards"
ALERT_RULES = ROOT / "dashboards" / "prometheus" / "alert-rules.yml"
CATALOG = ROOT / "docs" / "observability.md"

METRIC_NAME = re.compile(r"\bdam_[a-z0-9_]*[a-z0-9]")
# A histogram is exported as these three series; the catalog and /metrics' `# TYPE` line name the histogram.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def names_in_text(text: str) -> set[str]:
    return {base_name(name) for name in METRIC_NAME.findall(text)}


def panels_of(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_uses() -> dict[str, set[str]]:
    """name -> where: `overview.json: <panel title>` for each panel whose queries use it."""
    uses: dict[str, set[str]] = {}
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in panels_of(dashboard):
            for target in panel.get("targets", []):
                for name in names_in_text(target.get("expr", "")):
                    uses.setdefault(name, set()).add(f"{path.name}: {panel.get('title', '?')}")
    return uses


def alert_rule_uses() -> dict[str, set[str]]:
    """name -> where: `alert-rules.yml: <alert>` for each rule whose expression or annotations name it."""
    uses: dict[str, set[str]] = {}
    current = "(before the first rule)"
    for line in ALERT_RULES.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        rule = re.match(r"\s*- alert:\s*(\S+)", line)
        if rule:
            current = rule.group(1)
        for name in names_in_text(line):
            uses.setdefault(name, set()).add(f"{ALERT_RULES.name}: {current}")
    return uses


def metric_names_used() -> dict[str, list[str]]:
    """Every `dam_*` name the dashboards and alert rules use (histogram suffixes stripped) -> where, sorted."""
    merged: dict[str, set[str]] = {}
    for uses in (dashboard_uses(), alert_rule_uses()):
        for name, places in uses.items():
            merged.setdefault(name, set()).update(places)
    return {name: sorted(places) for name, places in sorted(merged.items())}


def catalog_names() -> set[str]:
    """The names in the catalog's tables (a row starting with a backquoted name)."""
    return set(re.findall(r"^\|\s*`(dam_[a-z0-9_]+)`", CATALOG.read_text(), flags=re.MULTILINE))


def catalog_owners() -> dict[str, str]:
    """name -> the catalog section that defines it (`Gateway`, `Worker`, `Edge (nginx, through mtail)`, ...): which
    service should export it."""
    owners, section = {}, "?"
    for line in CATALOG.read_text().splitlines():
        heading = re.match(r"^###\s+(.*)", line)
        if heading:
            section = heading.group(1).strip()
        row = re.match(r"^\|\s*`(dam_[a-z0-9_]+)`", line)
        if row:
            owners[row.group(1)] = section
    return owners
