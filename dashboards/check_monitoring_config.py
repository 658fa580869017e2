#!/usr/bin/env python3
"""`make test-monitoring-config`: the monitoring files are valid and agree with each other, in a few seconds.
promtool checks and unit-tests the alert rules and checks a rendered scrape configuration, amtool checks the
Alertmanager configuration, mtail compiles the edge program and counts a sample log as expected, and the Grafana
dashboards are up to date with their generator, name only the provisioned datasource, have a query in every panel
and use only metric names from the catalog (docs/observability.md). Whether the services export those names is the
end-to-end test's business (tests/e2e/check_metric_coverage.py).

Prints one PASS/FAIL line per check; the last line is `N passed, N failed`; the exit status is non-zero on a failure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metric_names import (  # noqa: E402 - the shared module lives beside this file
    ALERT_RULES,
    CATALOG,
    DASHBOARD_DIR,
    ROOT,
    catalog_names,
    metric_names_used,
    panels_of,
)

DASHBOARDS = ROOT / "dashboards"
RULE_TESTS = DASHBOARDS / "prometheus" / "alert-rules.test.yml"
ALERTMANAGER = DASHBOARDS / "alertmanager" / "alertmanager.yml"
MTAIL_PROGRAMS = DASHBOARDS / "mtail"
MTAIL_SAMPLE = MTAIL_PROGRAMS / "testdata" / "access-log.sample"
MTAIL_EXPECTED = MTAIL_PROGRAMS / "testdata" / "access-log.expected"
DATASOURCE_PROVISIONING = DASHBOARDS / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
GENERATOR = DASHBOARDS / "grafana" / "generate_dashboards.py"
RENDER_PROMETHEUS_CONFIG = ROOT / "deploy" / "monitoring" / "render-prometheus-config.sh"
# Each tool answers in well under a second; the bound only keeps a wedged tool from hanging `make test`.
TOOL_TIMEOUT_S = 60


def run(command: list[str]) -> str:
    """Runs a tool; its failure is the check's failure, with the tool's own words."""
    tool = shutil.which(command[0])
    assert tool, f"{command[0]} is not installed (make deps)"
    result = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, cwd=ROOT)
    assert result.returncode == 0, \
        f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


def check_rules() -> None:
    run(["promtool", "check", "rules", str(ALERT_RULES)])


def check_rule_unit_tests() -> None:
    run(["promtool", "test", "rules", str(RULE_TESTS)])


def check_rendered_scrape_config() -> None:
    rendered = run(["bash", str(RENDER_PROMETHEUS_CONFIG), "--gateway-ports", "8081 8082", "--worker-ports",
                    "9201 9202", "--dam-port", "9100", "--mtail-port", "9290", "--alertmanager-port", "9292",
                    "--rules-file", str(ALERT_RULES)])
    jobs = re.findall(r"job_name:\s*(\S+)", rendered)
    assert jobs == ["gateway", "worker", "dam", "edge"], f"scrape jobs {jobs}; the compose deployment uses these four"
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as config:
        config.write(rendered)
        config.flush()
        run(["promtool", "check", "config", config.name])


def check_alertmanager_config() -> None:
    run(["amtool", "check-config", str(ALERTMANAGER)])


def check_mtail_program() -> None:
    run(["mtail", "--compile_only", "--progs", str(MTAIL_PROGRAMS)])
    output = run(["mtail", "--one_shot", "--one_shot_format", "prometheus", "--emit_prog_label=false",
                  "--progs", str(MTAIL_PROGRAMS), "--logs", str(MTAIL_SAMPLE)])
    counted = sorted(line for line in output.splitlines() if line.startswith("dam_"))
    expected = MTAIL_EXPECTED.read_text().splitlines()
    assert counted == expected, "mtail counted the sample log as\n  " + "\n  ".join(counted) + \
        "\nexpected\n  " + "\n  ".join(expected)


def check_dashboards_generated() -> None:
    run([sys.executable, str(GENERATOR), "--check"])


def check_dashboards() -> None:
    uid = re.search(r"^\s*uid:\s*(\S+)", DATASOURCE_PROVISIONING.read_text(), flags=re.MULTILINE)
    assert uid, f"no datasource uid in {DATASOURCE_PROVISIONING}"
    provisioned = uid.group(1)
    paths = sorted(DASHBOARD_DIR.glob("*.json"))
    assert {path.stem for path in paths} >= {"overview", "gateway", "worker", "dam-redis", "edge"}, \
        f"dashboards: {[path.name for path in paths]}"
    problems, uids = [], set()
    for path in paths:
        dashboard = json.loads(path.read_text())
        if dashboard.get("uid") in uids:
            problems.append(f"{path.name}: uid {dashboard.get('uid')} is used twice")
        uids.add(dashboard.get("uid"))
        variables = {variable["name"]: variable for variable in dashboard.get("templating", {}).get("list", [])}
        source = variables.get("datasource")
        if not source or source.get("type") != "datasource" or source["current"].get("value") != provisioned:
            problems.append(f"{path.name}: the `datasource` variable must default to the provisioned {provisioned}")
        cells: dict[tuple[int, int], str] = {}
        for panel in panels_of(dashboard):
            title = f"{path.name}: {panel.get('title', '?')!r}"
            grid = panel.get("gridPos", {})
            if grid.get("x", 0) + grid.get("w", 0) > 24:
                problems.append(f"{title} is wider than the dashboard's 24 columns")
            for x in range(grid.get("x", 0), grid.get("x", 0) + grid.get("w", 0)):
                for y in range(grid.get("y", 0), grid.get("y", 0) + grid.get("h", 0)):
                    if (x, y) in cells:
                        problems.append(f"{title} overlaps {cells[(x, y)]}")
                    cells[(x, y)] = title
            if panel.get("type") == "row":
                continue
            targets = panel.get("targets", [])
            if not targets or not all(target.get("expr", "").strip() for target in targets):
                problems.append(f"{title} has a panel without a query")
            for holder in [panel, *targets]:
                if holder.get("datasource", {}).get("uid") != "${datasource}":
                    problems.append(f"{title} names datasource {holder.get('datasource')}, not ${{datasource}}")
    assert not problems, "\n".join(dict.fromkeys(problems))


def check_names_in_catalog() -> None:
    catalog = catalog_names()
    unknown = {name: places for name, places in metric_names_used().items() if name not in catalog}
    assert not unknown, f"names used but not in {CATALOG.relative_to(ROOT)}:\n" + "\n".join(
        f"  {name} (in {'; '.join(places)})" for name, places in unknown.items())


CHECKS = [
    ("promtool check rules", check_rules),
    ("promtool test rules (alert-rules.test.yml)", check_rule_unit_tests),
    ("promtool check config on a rendered scrape configuration", check_rendered_scrape_config),
    ("amtool check-config", check_alertmanager_config),
    ("mtail compiles edge.mtail and counts the sample log as expected", check_mtail_program),
    ("the dashboards' JSON is what generate_dashboards.py writes", check_dashboards_generated),
    ("every panel has a query on the provisioned datasource, and none overlaps another", check_dashboards),
    ("every metric name the dashboards and rules use is in the catalog", check_names_in_catalog),
]


def main() -> int:
    passed = failed = 0
    for name, check in CHECKS:
        try:
            check()
        except (AssertionError, subprocess.TimeoutExpired, OSError) as error:
            failed += 1
            print(f"FAIL {name}: {error}", flush=True)
            continue
        passed += 1
        print(f"PASS {name}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
