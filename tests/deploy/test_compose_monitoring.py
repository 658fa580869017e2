"""Monitoring in compose: Prometheus finds every replica through Docker's DNS and loads the alert rules (promtool,
when installed, accepts its configuration), and Grafana is provisioned with its datasources and dashboards."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compose_files import (
    PROMETHEUS_CONFIG_FILE,
    REPO_ROOT,
    installed_tool,
    load_yaml,
    output_of,
    run_command,
)


def test_prometheus_scrapes_every_replica(services) -> None:
    config = load_yaml(PROMETHEUS_CONFIG_FILE)
    jobs = {job["job_name"]: job for job in config.get("scrape_configs") or []}
    problems = []
    for job_name, service, port in (("gateway", "gateway", 8080), ("worker", "worker", 9200), ("dam", "dam", 9100)):
        job = jobs.get(job_name)
        if job is None:
            problems.append(f"no scrape job {job_name}")
            continue
        discovered = [entry for entry in job.get("dns_sd_configs") or []
                      if entry.get("type") == "A" and service in entry.get("names", []) and entry.get("port") == port]
        if not discovered:
            problems.append(f"job {job_name} does not find {service}'s replicas by DNS (type A, port {port})")
    prometheus = services.get("prometheus", {})
    mounts = {str(volume).split(":")[1]: str(volume).split(":")[0] for volume in prometheus.get("volumes") or []}
    for rule_file in config.get("rule_files") or []:
        if not mounts.get(rule_file, "").endswith("dashboards/prometheus/alert-rules.yml"):
            problems.append(f"rule file {rule_file} is not dashboards/prometheus/alert-rules.yml mounted")
    alertmanagers = str(config.get("alerting"))
    if "alertmanager:9093" not in alertmanagers:
        problems.append("Prometheus does not send to alertmanager:9093")
    assert not problems, "; ".join(problems)


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = installed_tool("promtool")
    config_text = PROMETHEUS_CONFIG_FILE.read_text(encoding="utf-8").replace(
        "/etc/prometheus/rules/alert-rules.yml", str(REPO_ROOT / "dashboards" / "prometheus" / "alert-rules.yml"))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "prometheus.yml"
        path.write_text(config_text, encoding="utf-8")
        result = run_command([promtool, "check", "config", str(path)])
    assert result.returncode == 0, f"promtool check config: {output_of(result)}"


def test_grafana_is_provisioned(services) -> None:
    grafana = services.get("grafana", {})
    mounts = [str(volume) for volume in grafana.get("volumes") or []]
    problems = []
    datasource_file = REPO_ROOT / "dashboards/grafana/provisioning/datasources/prometheus.yaml"
    datasources = load_yaml(datasource_file).get("datasources", [])
    if not any(source.get("uid") == "dam-prometheus" and source.get("url") == "http://prometheus:9090" for source in datasources):
        problems.append(f"{datasource_file.name} has no datasource dam-prometheus at http://prometheus:9090")
    for wanted in ("dashboards/grafana/provisioning/datasources/prometheus.yaml:/etc/grafana/provisioning/datasources/",
                   "dashboards/grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards",
                   "dashboards/grafana/dashboards:/var/lib/grafana/dashboards/traffic-dam",
                   ":/etc/grafana/provisioning/datasources/loki.yaml"):
        if not any(wanted in mount for mount in mounts):
            problems.append(f"grafana does not mount {wanted}")
    for name in ("loki", "log-shipper"):
        if "logs" not in (services.get(name, {}).get("profiles") or []):
            problems.append(f"{name} is not in the logs profile")
    assert not problems, "; ".join(problems)
