#!/usr/bin/env bash
# The edge container's entrypoint (the Dockerfile's `edge` target, run by compose and Kubernetes): renders the one
# nginx template (deploy/nginx/nginx.conf.template) for a container, runs nginx, and keeps following the gateways'
# DNS name. Docker's DNS (127.0.0.11, the container's resolver) answers a compose service name with every
# replica's address, a Kubernetes headless Service with every ready pod's: whenever that set changes (a replica
# added, removed or restarted elsewhere), the config is rendered again and nginx reloads gracefully, so new
# replicas receive traffic within EDGE_RESOLVE_INTERVAL_S while least_conn and keep-alive keep working (an nginx
# `resolve` upstream would need nginx 1.27.3, and the template must also pass `nginx -t` on Debian's 1.22).
#
# Environment (all optional):
#   EDGE_GATEWAYS="gateway:8080"     the gateways' DNS name(s) and port, space-separated host:port
#   EDGE_LISTEN_PORT=8080            the public port inside the container
#   EDGE_RATE_PER_SECOND=50  EDGE_BURST=200  EDGE_CONNECTIONS_PER_ADDRESS=500   the per-address limits
#   EDGE_STREAMS=20000               streams the gateways behind it may hold together (sizes worker_connections)
#   EDGE_GATEWAY_MAX_BODY_BYTES=262144   the gateways' gateway.max_body_bytes
#   EDGE_RESOLVE_INTERVAL_S=2        how often the gateways' name is resolved again
#   EDGE_START_TIMEOUT_S=300         how long to wait for the name to resolve at start before giving up
#   EDGE_PREFIX=/tmp/dam-edge        where the rendered config, pid and temp files go (the only writable path)
#   EDGE_STATIC_DIR=/opt/dam/static  the chat page's files
#   EDGE_NGINX_CONF_RENDERER, NGINX_BIN   the renderer and nginx to use (defaults: beside this script, `nginx`)
# shellcheck disable=SC2317 # stop_nginx runs from a trap, which shellcheck cannot follow
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gateways="${EDGE_GATEWAYS:-gateway:8080}"
listen_port="${EDGE_LISTEN_PORT:-8080}"
streams="${EDGE_STREAMS:-20000}"
gateway_max_body_bytes="${EDGE_GATEWAY_MAX_BODY_BYTES:-262144}"
resolve_interval_s="${EDGE_RESOLVE_INTERVAL_S:-2}"
start_timeout_s="${EDGE_START_TIMEOUT_S:-300}"
prefix="${EDGE_PREFIX:-/tmp/dam-edge}"
static_dir="${EDGE_STATIC_DIR:-/opt/dam/static}"
renderer="${EDGE_NGINX_CONF_RENDERER:-$script_dir/render-nginx-conf.sh}"
nginx_bin="${NGINX_BIN:-nginx}"

log() { printf '[edge] %s\n' "$*" >&2; }

for number in "$listen_port" "$streams" "$gateway_max_body_bytes" "$resolve_interval_s" "$start_timeout_s"; do
    [[ "$number" =~ ^[0-9]+$ ]] || { log "error: '$number' is not a whole number (EDGE_* settings)"; exit 2; }
done
read -r -a gateway_names <<<"$gateways"
((${#gateway_names[@]} > 0)) || { log "error: EDGE_GATEWAYS names no gateway"; exit 2; }
for name in "${gateway_names[@]}"; do
    [[ "$name" =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] || { log "error: EDGE_GATEWAYS entry '$name' is not host:port"; exit 2; }
done

# Every IPv4 address the gateways' names resolve to now, as sorted unique address:port words (empty: none yet).
resolve_gateways() {
    local name host port
    for name in "${gateway_names[@]}"; do
        host="${name%:*}" port="${name##*:}"
        getent ahostsv4 "$host" 2>/dev/null | awk -v port="$port" '{print $1 ":" port}' || true
    done | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# Renders the config for `addresses` and checks it with nginx; the live config changes only if both succeed.
render_config() {
    local addresses="$1"
    "$renderer" --mode container --prefix "$prefix" --public-port "$listen_port" --listen-host 0.0.0.0 \
        --gateway-addresses "$addresses" --static-dir "$static_dir" --streams "$streams" \
        --gateway-max-body-bytes "$gateway_max_body_bytes" >"$prefix/nginx.conf.next" || return 1
    "$nginx_bin" -t -q -p "$prefix/" -c "$prefix/nginx.conf.next" -e /dev/stderr || return 1
    mv "$prefix/nginx.conf.next" "$prefix/nginx.conf"
}

mkdir -p "$prefix/temp"

addresses="$(resolve_gateways)"
waited_s=0
while [[ -z "$addresses" ]]; do
    if ((waited_s >= start_timeout_s)); then
        log "error: '$gateways' resolved to no address within ${start_timeout_s}s"
        exit 1
    fi
    ((waited_s % 10 == 0)) && log "waiting for '$gateways' to resolve (no gateway is up yet)"
    sleep 1
    waited_s=$((waited_s + 1))
done
render_config "$addresses" || { log "error: the rendered config was refused (see above)"; exit 1; }
log "gateways: $addresses"

"$nginx_bin" -p "$prefix/" -c "$prefix/nginx.conf" -e /dev/stderr &
nginx_pid=$!

# SIGTERM (compose, Kubernetes) and SIGQUIT (nginx's own stop signal) both stop nginx gracefully: it finishes the
# requests under way, open event streams included, within the platform's grace period.
stopping=0
stop_nginx() {
    log "stopping nginx gracefully"
    stopping=1
    kill -QUIT "$nginx_pid" 2>/dev/null || true
}
trap stop_nginx TERM QUIT INT

while ((stopping == 0)) && kill -0 "$nginx_pid" 2>/dev/null; do
    # A background sleep and `wait`, so a signal is handled at once rather than after the sleep.
    sleep "$resolve_interval_s" &
    wait $! 2>/dev/null || true
    if ((stopping)) || ! kill -0 "$nginx_pid" 2>/dev/null; then break; fi
    current="$(resolve_gateways)"
    # No address at all is a DNS hiccup or every gateway restarting at once: keep the last known ones.
    if [[ -n "$current" && "$current" != "$addresses" ]]; then
        if render_config "$current"; then
            log "gateways changed: $addresses -> $current; reloading"
            addresses="$current"
            kill -HUP "$nginx_pid" 2>/dev/null || true
        else
            log "error: the config for $current was refused; still serving $addresses"
        fi
    fi
done
# `wait` returns early when a further signal arrives: wait again until nginx is gone.
status=0
while kill -0 "$nginx_pid" 2>/dev/null; do
    status=0
    wait "$nginx_pid" || status=$?
done
log "nginx exited with status $status"
exit "$status"
