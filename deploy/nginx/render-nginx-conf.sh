#!/usr/bin/env bash
# Renders deploy/nginx/nginx.conf.template to stdout: the edge on one public port in front of the given gateways.
# Only fills in placeholders; starting and stopping nginx is deploy/supervisor.py's job (or, in a container,
# deploy/nginx/edge-entrypoint.sh's).
#
# Usage: render-nginx-conf.sh --prefix DIR [--mode local|container] [--log-dir DIR] --public-port PORT
#            (--gateway-ports "8081 8082" | --gateway-addresses "10.0.0.5:8080 10.0.0.6:8080")
#            [--listen-host 127.0.0.1] [--static-dir DIR] [--gateway-max-body-bytes 262144] [--streams 20000]
#            [--edge-rate-per-second 50] [--edge-burst 200] [--edge-connections-per-address 500]
# --mode local (default): logs in --log-dir, workers as the invoking user (root's own if started as root).
#   container: access log to stdout, errors to stderr, no `user` directive (the image runs nginx unprivileged).
# --gateway-ports: gateways on --listen-host; --gateway-addresses: gateways anywhere, as IPv4 address:port.
# --streams: how many streams the gateways behind it may hold together (gateways x limits.max_open_streams); the
# workers' connection and open-file limits are sized for it. NGINX_WORKER_PROCESSES and NGINX_WORKER_CONNECTIONS
# override the computed values.
# The edge's per-address limits default to EDGE_RATE_PER_SECOND, EDGE_BURST and EDGE_CONNECTIONS_PER_ADDRESS from
# the environment, else 50 requests/s with a burst of 200, and 500 requests in progress.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
template="$script_dir/nginx.conf.template"
mode="local"
prefix=""
log_dir=""
public_port=""
gateway_ports=""
gateway_addresses=""
listen_host="127.0.0.1"
static_dir="$(cd "$script_dir/../.." && pwd)/crates/gateway/static"
# The gateway's default gateway.max_body_bytes (256 KiB); pass the configured value when it differs.
gateway_max_body_bytes=262144
streams=""
edge_rate_per_second="${EDGE_RATE_PER_SECOND:-50}"
edge_burst="${EDGE_BURST:-200}"
edge_connections_per_address="${EDGE_CONNECTIONS_PER_ADDRESS:-500}"

while (($# > 0)); do
    case "$1" in
        --mode) mode="$2"; shift 2 ;;
        --prefix) prefix="$2"; shift 2 ;;
        --log-dir) log_dir="$2"; shift 2 ;;
        --public-port) public_port="$2"; shift 2 ;;
        --gateway-ports) gateway_ports="$2"; shift 2 ;;
        --gateway-addresses) gateway_addresses="$2"; shift 2 ;;
        --listen-host) listen_host="$2"; shift 2 ;;
        --static-dir) static_dir="$2"; shift 2 ;;
        --gateway-max-body-bytes) gateway_max_body_bytes="$2"; shift 2 ;;
        --streams) streams="$2"; shift 2 ;;
        --edge-rate-per-second) edge_rate_per_second="$2"; shift 2 ;;
        --edge-burst) edge_burst="$2"; shift 2 ;;
        --edge-connections-per-address) edge_connections_per_address="$2"; shift 2 ;;
        *) echo "render-nginx-conf.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

fail() { echo "render-nginx-conf.sh: $*" >&2; exit 2; }
[[ "$mode" == local || "$mode" == container ]] || fail "--mode must be local or container"
[[ -n "$prefix" && "$prefix" == /* ]] || fail "--prefix must be an absolute directory"
if [[ "$mode" == local ]]; then
    [[ -n "$log_dir" && "$log_dir" == /* ]] || fail "--log-dir must be an absolute directory"
    access_log="$log_dir/nginx-access.log"
    error_log="$log_dir/nginx-error.log"
else
    access_log="/dev/stdout"
    error_log="/dev/stderr"
fi
[[ "$static_dir" == /* ]] || fail "--static-dir must be an absolute directory"
[[ "$public_port" =~ ^[0-9]+$ ]] || fail "--public-port must be a port number"
[[ "$gateway_max_body_bytes" =~ ^[0-9]+$ ]] || fail "--gateway-max-body-bytes must be a number of bytes"
[[ "$edge_rate_per_second" =~ ^[1-9][0-9]*$ ]] || fail "the edge's rate must be a whole number of requests per second"
[[ "$edge_burst" =~ ^[0-9]+$ ]] || fail "the edge's burst must be a whole number of requests"
[[ "$edge_connections_per_address" =~ ^[1-9][0-9]*$ ]] && ((edge_connections_per_address <= 65535)) \
    || fail "the edge's requests in progress per address must be a whole number from 1 to 65535 (nginx's limit)"

# Every gateway as address:port.
gateways=()
read -r -a ports <<<"$gateway_ports"
for port in "${ports[@]}"; do
    [[ "$port" =~ ^[0-9]+$ ]] || fail "gateway port '$port' is not a number"
    gateways+=("$listen_host:$port")
done
read -r -a addresses <<<"$gateway_addresses"
for address in "${addresses[@]}"; do
    [[ "$address" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}:[0-9]+$ ]] || fail "gateway address '$address' is not IPv4-address:port"
    gateways+=("$address")
done
((${#gateways[@]} > 0)) || fail "--gateway-ports or --gateway-addresses needs at least one gateway"
# limits.max_open_streams' default for every gateway when not told.
streams="${streams:-$((10000 * ${#gateways[@]}))}"
[[ "$streams" =~ ^[0-9]+$ ]] || fail "--streams must be a number of streams"

upstream_servers=""
for gateway in "${gateways[@]}"; do
    # Never out of rotation (max_fails=0): a refused connection just moves the request to the next gateway
    # (proxy_next_upstream), at the cost of one refused connect on loopback. With max_fails, a restarted gateway
    # comes back only when a request to it completes, which a long event stream does not do for seconds; so a
    # second gateway dying meanwhile left no live upstream and reconnecting EventSource clients got a 502, on
    # which they stop for good (tests/chaos/scenario_gateways.py).
    upstream_servers+="        server ${gateway} max_fails=0;"$'\n'
done
upstream_servers="${upstream_servers%$'\n'}"

# The master keeps root only to bind and open logs; see the template's comment on `user`.
user_directive="# (not root: workers run as the invoking user)"
if [[ "$mode" == local && "$(id -u)" == 0 ]]; then
    user_directive="user root;"
elif [[ "$mode" == container ]]; then
    user_directive="# (the image runs nginx as an unprivileged user: workers run as that user)"
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
config="${config//@@ACCESS_LOG@@/$access_log}"
config="${config//@@ERROR_LOG@@/$error_log}"
config="${config//@@STATIC_DIR@@/$static_dir}"
config="${config//@@EDGE_RATE_PER_SECOND@@/$edge_rate_per_second}"
config="${config//@@EDGE_BURST@@/$edge_burst}"
config="${config//@@EDGE_CONNECTIONS_PER_ADDRESS@@/$edge_connections_per_address}"
config="${config//@@UPSTREAM_SERVERS@@/$upstream_servers}"
config="${config//@@LISTEN_HOST@@/$listen_host}"
config="${config//@@PUBLIC_PORT@@/$public_port}"
config="${config//@@GATEWAY_MAX_BODY_BYTES@@/$gateway_max_body_bytes}"
config="${config//@@CLIENT_MAX_BODY_BYTES@@/$client_max_body_bytes}"
config="${config//@@NEXT_UPSTREAM_TRIES@@/${#gateways[@]}}"

if [[ "$config" == *"@@"* ]]; then
    fail "the template has a placeholder this script does not fill: $(grep -o '@@[A-Z_]*@@' <<<"$config" | sort -u | tr '\n' ' ')"
fi
printf '%s\n' "$config"
