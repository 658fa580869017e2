#!/usr/bin/env bash
# Renders deploy/nginx/nginx.conf.template to stdout: nginx on one public port in front of the given gateway ports.
# Only fills in placeholders; starting and stopping nginx is deploy/run-local.sh's job.
#
# Usage: render-nginx-conf.sh --prefix DIR --log-dir DIR --public-port PORT --gateway-ports "8081 8082"
#            [--listen-host 127.0.0.1] [--gateway-max-body-bytes 262144] [--streams 20000]
# --streams: how many streams the gateways behind it may hold together (gateways x limits.max_open_streams); the
# workers' connection and open-file limits are sized for it. NGINX_WORKER_PROCESSES and NGINX_WORKER_CONNECTIONS
# override the computed values.
set -euo pipefail

template="$(dirname "${BASH_SOURCE[0]}")/nginx.conf.template"
prefix=""
log_dir=""
public_port=""
gateway_ports=""
listen_host="127.0.0.1"
# The gateway's default gateway.max_body_bytes (256 KiB); pass the configured value when it differs.
gateway_max_body_bytes=262144
streams=""

while (($# > 0)); do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --log-dir) log_dir="$2"; shift 2 ;;
        --public-port) public_port="$2"; shift 2 ;;
        --gateway-ports) gateway_ports="$2"; shift 2 ;;
        --listen-host) listen_host="$2"; shift 2 ;;
        --gateway-max-body-bytes) gateway_max_body_bytes="$2"; shift 2 ;;
        --streams) streams="$2"; shift 2 ;;
        *) echo "render-nginx-conf.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

fail() { echo "render-nginx-conf.sh: $*" >&2; exit 2; }
[[ -n "$prefix" && "$prefix" == /* ]] || fail "--prefix must be an absolute directory"
[[ -n "$log_dir" && "$log_dir" == /* ]] || fail "--log-dir must be an absolute directory"
[[ "$public_port" =~ ^[0-9]+$ ]] || fail "--public-port must be a port number"
[[ "$gateway_max_body_bytes" =~ ^[0-9]+$ ]] || fail "--gateway-max-body-bytes must be a number of bytes"
read -r -a ports <<<"$gateway_ports"
((${#ports[@]} > 0)) || fail "--gateway-ports needs at least one port"
# limits.max_open_streams' default for every gateway when not told.
streams="${streams:-$((10000 * ${#ports[@]}))}"
[[ "$streams" =~ ^[0-9]+$ ]] || fail "--streams must be a number of streams"

upstream_servers=""
for port in "${ports[@]}"; do
    [[ "$port" =~ ^[0-9]+$ ]] || fail "gateway port '$port' is not a number"
    # Never out of rotation (max_fails=0): a refused connection just moves the request to the next gateway
    # (proxy_next_upstream), at the cost of one refused connect on loopback. With max_fails, a restarted gateway
    # comes back only when a request to it completes, which a long event stream does not do for seconds; so a
    # second gateway dying meanwhile left no live upstream and reconnecting EventSource clients got a 502, on
    # which they stop for good (tests/chaos/scenario_gateways.py).
    upstream_servers+="        server ${listen_host}:${port} max_fails=0;"$'\n'
done
upstream_servers="${upstream_servers%$'\n'}"

# The master keeps root only to bind and open logs; see the template's comment on `user`.
user_directive="# (not root: workers run as the invoking user)"
if [[ "$(id -u)" == 0 ]]; then
    user_directive="user root;"
fi

# Each proxied stream holds two connections in one worker (the client's and the gateway's), and every connection
# is a file descriptor. The listen socket uses reuseport, so the kernel spreads new connections evenly over the
# workers: each worker gets room for its share of the streams plus a quarter (the spread is not exact), plus spare
# connections for requests in passing and idle keep-alive connections to the gateways. Its open-file limit is that
# plus a few descriptors of its own (logs, listen sockets), within the hard limit a normal user may raise to.
worker_processes="${NGINX_WORKER_PROCESSES:-auto}"
worker_count="$worker_processes"
[[ "$worker_count" == auto ]] && worker_count="$(nproc 2>/dev/null || echo 1)"
[[ "$worker_count" =~ ^[1-9][0-9]*$ ]] || fail "NGINX_WORKER_PROCESSES must be auto or a positive number"
spare_connections=512
own_open_files=64
streams_per_worker=$(((streams + worker_count - 1) / worker_count))
worker_connections="${NGINX_WORKER_CONNECTIONS:-$((2 * (streams_per_worker + streams_per_worker / 4) + spare_connections))}"
open_files_limit="$(ulimit -Hn)"
[[ "$open_files_limit" =~ ^[0-9]+$ ]] || open_files_limit=$((worker_connections + own_open_files))
if ((worker_connections + own_open_files > open_files_limit)); then
    worker_connections=$((open_files_limit - own_open_files))
fi
worker_open_files=$((worker_connections + own_open_files))
if ((worker_count * (worker_connections - spare_connections) / 2 < streams)); then
    echo "render-nginx-conf.sh: nginx holds about $((worker_count * (worker_connections - spare_connections) / 2)) streams ($worker_count workers of $worker_connections connections, open-files hard limit $open_files_limit), fewer than the $streams the gateways may hold" >&2
fi

# 64 KiB of headroom over the gateway's limit, so the gateway, not nginx, judges bodies near the limit.
client_max_body_bytes=$((gateway_max_body_bytes + 65536))

# Bash 5.2 would otherwise expand & in replacement strings to the matched placeholder.
shopt -u patsub_replacement 2>/dev/null || true
config="$(<"$template")"
config="${config//@@USER_DIRECTIVE@@/$user_directive}"
config="${config//@@WORKER_PROCESSES@@/$worker_processes}"
config="${config//@@WORKER_CONNECTIONS@@/$worker_connections}"
config="${config//@@WORKER_OPEN_FILES@@/$worker_open_files}"
config="${config//@@PREFIX@@/$prefix}"
config="${config//@@LOG_DIR@@/$log_dir}"
config="${config//@@UPSTREAM_SERVERS@@/$upstream_servers}"
config="${config//@@LISTEN_HOST@@/$listen_host}"
config="${config//@@PUBLIC_PORT@@/$public_port}"
config="${config//@@GATEWAY_MAX_BODY_BYTES@@/$gateway_max_body_bytes}"
config="${config//@@CLIENT_MAX_BODY_BYTES@@/$client_max_body_bytes}"
config="${config//@@NEXT_UPSTREAM_TRIES@@/${#ports[@]}}"

if [[ "$config" == *"@@"* ]]; then
    fail "the template has a placeholder this script does not fill: $(grep -o '@@[A-Z_]*@@' <<<"$config" | sort -u | tr '\n' ' ')"
fi
printf '%s\n' "$config"
