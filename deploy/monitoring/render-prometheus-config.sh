#!/usr/bin/env bash
# Renders Prometheus's configuration for a local stack (`make run-monitoring`) to stdout: one scrape job per kind of
# service, named as in the compose deployment (gateway, worker, dam, edge), the alert rules and the Alertmanager.
# Only writes the configuration; starting Prometheus is start-monitoring.sh's job.
#
# Usage: render-prometheus-config.sh --gateway-ports "8081 8082" --worker-ports "9201 9202" --dam-port 9100
#            --mtail-port 9290 --alertmanager-port 9093 --rules-file /abs/alert-rules.yml [--host 127.0.0.1]
#            [--scrape-interval 5s]
set -euo pipefail

gateway_ports=""
worker_ports=""
dam_port=""
mtail_port=""
alertmanager_port=""
rules_file=""
host="127.0.0.1"
# Short, for a developer watching a flood they just started; compose uses the usual 15 s.
scrape_interval="5s"

while (($# > 0)); do
    case "$1" in
        --gateway-ports) gateway_ports="$2"; shift 2 ;;
        --worker-ports) worker_ports="$2"; shift 2 ;;
        --dam-port) dam_port="$2"; shift 2 ;;
        --mtail-port) mtail_port="$2"; shift 2 ;;
        --alertmanager-port) alertmanager_port="$2"; shift 2 ;;
        --rules-file) rules_file="$2"; shift 2 ;;
        --host) host="$2"; shift 2 ;;
        --scrape-interval) scrape_interval="$2"; shift 2 ;;
        *) echo "render-prometheus-config.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

fail() { echo "render-prometheus-config.sh: $*" >&2; exit 2; }
[[ -n "$rules_file" && "$rules_file" == /* ]] || fail "--rules-file must be an absolute path"
[[ "$scrape_interval" =~ ^[0-9]+[smh]$ ]] || fail "--scrape-interval must be a duration such as 5s"

# A YAML list of host:port targets from a space-separated list of ports; an empty list stays valid YAML.
targets() {
    local what="$1" ports="$2" port list=()
    for port in $ports; do
        [[ "$port" =~ ^[0-9]+$ ]] || fail "$what port '$port' is not a number"
        list+=("'$host:$port'")
    done
    local IFS=,
    echo "[${list[*]}]"
}
[[ -n "$gateway_ports" ]] || fail "--gateway-ports needs at least one port"
[[ "$dam_port" =~ ^[0-9]+$ ]] || fail "--dam-port must be a port number"
[[ "$mtail_port" =~ ^[0-9]+$ ]] || fail "--mtail-port must be a port number"
[[ "$alertmanager_port" =~ ^[0-9]+$ ]] || fail "--alertmanager-port must be a port number"

cat <<YAML
# Rendered by deploy/monitoring/render-prometheus-config.sh for one local run; edit the script, not this file.
global:
  scrape_interval: $scrape_interval
  evaluation_interval: $scrape_interval
  # Alerts say which stack they come from when several feed one Alertmanager.
  external_labels:
    stack: local

rule_files:
  - '$rules_file'

alerting:
  alertmanagers:
    - static_configs:
        - targets: ['$host:$alertmanager_port']

scrape_configs:
  - job_name: gateway
    static_configs:
      - targets: $(targets gateway "$gateway_ports")
  - job_name: worker
    static_configs:
      - targets: $(targets worker "$worker_ports")
  - job_name: dam
    static_configs:
      - targets: $(targets dam "$dam_port")
  # mtail, counting nginx's access log (dashboards/mtail/edge.mtail).
  - job_name: edge
    static_configs:
      - targets: $(targets edge "$mtail_port")
YAML
