#!/usr/bin/env bash
# The monitoring beside a local stack (`make run-monitoring`, through the supervisor when MONITORING=1): mtail
# reading nginx's access log, Alertmanager, and Prometheus scraping every service of the stack with the alert rules
# loaded. All on loopback, their data under RUN_DIR/monitoring. It stays in the foreground as their supervisor:
# SIGTERM, SIGINT or SIGHUP stops all three, and so does one of them exiting. The stack is the supervisor's.
#
# Usage: start-monitoring.sh --run-dir DIR --gateway-ports "8081 8082" --worker-ports "9201 9202" --dam-port 9100
# Knobs (environment):
#   PROMETHEUS_PORT=9291  ALERTMANAGER_PORT=9292  MTAIL_PORT=9290   (Debian's own services use 9090, 9093, 3903)
#   DISCORD_WEBHOOK_URL   where alerts go; unset, Alertmanager only shows them (each notification fails, logged)
#   SKIP_DEPS=1           do not install missing packages (prometheus, prometheus-alertmanager, mtail)
# Grafana is not packaged in Debian: the compose deployment runs it from dashboards/grafana.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
log() { printf '[monitoring] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

run_dir=""
gateway_ports=""
worker_ports=""
dam_port=""
while (($# > 0)); do
    case "$1" in
        --run-dir) run_dir="$2"; shift 2 ;;
        --gateway-ports) gateway_ports="$2"; shift 2 ;;
        --worker-ports) worker_ports="$2"; shift 2 ;;
        --dam-port) dam_port="$2"; shift 2 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ "$run_dir" == /* ]] || die "--run-dir must be an absolute directory"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9291}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9292}"
MTAIL_PORT="${MTAIL_PORT:-9290}"
for port in "$PROMETHEUS_PORT" "$ALERTMANAGER_PORT" "$MTAIL_PORT"; do
    [[ "$port" =~ ^[0-9]+$ ]] || die "port '$port' is not a number"
done

if [[ "${SKIP_DEPS:-0}" != 1 ]]; then
    "$ROOT/deploy/install-system-packages.sh" prometheus promtool prometheus-alertmanager amtool mtail
fi
for command_name in prometheus prometheus-alertmanager mtail; do
    command -v "$command_name" >/dev/null 2>&1 || die "$command_name is not installed (run 'make deps')"
done

monitoring_dir="$run_dir/monitoring"
access_log="$run_dir/logs/nginx-access.log"
mkdir -p "$monitoring_dir/prometheus" "$monitoring_dir/alertmanager"

# Alertmanager 0.25 takes Discord's URL only inline, so the webhook goes into this run's copy of the file (readable
# by its owner only). Without one, a local address that refuses connections stands in: nothing leaves the machine,
# alerts still show in Alertmanager's page, and its log says each notification failed.
webhook_url="${DISCORD_WEBHOOK_URL:-http://127.0.0.1:1/set-DISCORD_WEBHOOK_URL}"
shopt -u patsub_replacement 2>/dev/null || true
alertmanager_config="$(<"$ROOT/dashboards/alertmanager/alertmanager.yml")"
placeholder='https://discord.com/api/webhooks/REPLACE_WITH_WEBHOOK_ID/REPLACE_WITH_WEBHOOK_TOKEN'
[[ "$alertmanager_config" == *"$placeholder"* ]] \
    || die "dashboards/alertmanager/alertmanager.yml lost its webhook placeholder"
printf '%s\n' "${alertmanager_config//"$placeholder"/$webhook_url}" >"$monitoring_dir/alertmanager.yml"
chmod 600 "$monitoring_dir/alertmanager.yml"

"$ROOT/deploy/monitoring/render-prometheus-config.sh" --gateway-ports "$gateway_ports" \
    --worker-ports "$worker_ports" --dam-port "$dam_port" --mtail-port "$MTAIL_PORT" \
    --alertmanager-port "$ALERTMANAGER_PORT" --rules-file "$ROOT/dashboards/prometheus/alert-rules.yml" \
    >"$monitoring_dir/prometheus.yml"

children=()
stop_children() {
    trap '' INT TERM HUP
    ((${#children[@]} > 0)) || return 0
    kill -TERM "${children[@]}" 2>/dev/null || true
    # Prometheus flushes its head block on the way out; a few seconds is plenty for a local run's data.
    local deadline=$((SECONDS + 10)) pid
    for pid in "${children[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    done
    kill -KILL "${children[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap 'stop_children; exit 0' INT TERM HUP
trap 'stop_children' EXIT

# Each child logs to its own file beside the stack's logs.
start_child() {
    local name="$1"; shift
    "$@" </dev/null >>"$run_dir/logs/$name.log" 2>&1 &
    children+=("$!")
}

# Bounded: the whole stack waits on this.
wait_for_http() {
    local name="$1" url="$2" deadline=$((SECONDS + 30))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        ((SECONDS < deadline)) || die "$name did not answer $url within 30s (log: $run_dir/logs/$name.log)"
        for pid in "${children[@]}"; do
            kill -0 "$pid" 2>/dev/null || die "$name exited (log: $run_dir/logs/$name.log)"
        done
        sleep 0.2
    done
}

# --emit_prog_label=false: the labels are exactly the catalog's (status, layer). nginx creates the access log when
# it starts, which the supervisor did before this; mtail reads it from its end on, as it grows.
start_child mtail mtail --progs "$ROOT/dashboards/mtail" --logs "$access_log" --address 127.0.0.1 \
    --port "$MTAIL_PORT" --emit_prog_label=false --logtostderr
wait_for_http mtail "http://127.0.0.1:$MTAIL_PORT/metrics"

# An empty --cluster.listen-address turns off the gossip port (9094) a lone Alertmanager does not need.
start_child alertmanager prometheus-alertmanager --config.file "$monitoring_dir/alertmanager.yml" \
    --storage.path "$monitoring_dir/alertmanager" --web.listen-address "127.0.0.1:$ALERTMANAGER_PORT" \
    --cluster.listen-address=
wait_for_http alertmanager "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready"

# Written before Prometheus starts, so it is there once Prometheus answers (the supervisor prints it then).
discord="alerts go to Discord"
[[ -n "${DISCORD_WEBHOOK_URL:-}" ]] || discord="set DISCORD_WEBHOOK_URL to send alerts to Discord"
cat >"$monitoring_dir/banner.txt" <<BANNER
  Monitoring:
    Prometheus   http://127.0.0.1:$PROMETHEUS_PORT/  (/alerts, /targets: jobs gateway, worker, dam, edge)
    Alertmanager http://127.0.0.1:$ALERTMANAGER_PORT/  ($discord)
    mtail (edge) http://127.0.0.1:$MTAIL_PORT/metrics  reading $access_log
    Grafana is not packaged in Debian: the compose deployment runs it from dashboards/grafana (dashboards/README.md).
    data: $monitoring_dir/

BANNER
start_child prometheus prometheus --config.file "$monitoring_dir/prometheus.yml" \
    --storage.tsdb.path "$monitoring_dir/prometheus" --storage.tsdb.retention.time 2d \
    --web.listen-address "127.0.0.1:$PROMETHEUS_PORT"
wait_for_http prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"

log "ready: Prometheus on 127.0.0.1:$PROMETHEUS_PORT"

# Serve until a signal, or until one child exits (then the others stop with it and the supervisor reports it).
status=0
wait -n "${children[@]}" || status=$?
log "a monitoring process exited (status $status); stopping the others"
exit 1
