#!/usr/bin/env bash
# Renders deploy/nginx/nginx.conf.template to stdout: nginx on one public port in front of the given gateway ports.
# Only fills in placeholders; starting and stopping nginx is deploy/run-local.sh's job.
#
# Usage: render-nginx-conf.sh --prefix DIR --log-dir DIR --public-port PORT --gateway-ports "8081 8082"
#            [--listen-host 127.0.0.1] [--gateway-max-body-bytes 262144]
set -euo pipefail

template="$(dirname "${BASH_SOURCE[0]}")/nginx.conf.template"
prefix=""
log_dir=""
public_port=""
gateway_ports=""
listen_host="127.0.0.1"
# The gateway's default gateway.max_body_bytes (256 KiB); pass the configured value when it differs.
gateway_max_body_bytes=262144

while (($# > 0)); do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --log-dir) log_dir="$2"; shift 2 ;;
        --public-port) public_port="$2"; shift 2 ;;
        --gateway-ports) gateway_ports="$2"; shift 2 ;;
        --listen-host) listen_host="$2"; shift 2 ;;
        --gateway-max-body-bytes) gateway_max_body_bytes="$2"; shift 2 ;;
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

upstream_servers=""
for port in "${ports[@]}"; do
    [[ "$port" =~ ^[0-9]+$ ]] || fail "gateway port '$port' is not a number"
    # One failed connection takes a gateway out of rotation for 5 s; nginx then probes it again.
    upstream_servers+="        server ${listen_host}:${port} max_fails=1 fail_timeout=5s;"$'\n'
done
upstream_servers="${upstream_servers%$'\n'}"

# The master keeps root only to bind and open logs; see the template's comment on `user`.
user_directive="# (not root: workers run as the invoking user)"
if [[ "$(id -u)" == 0 ]]; then
    user_directive="user root;"
fi

# Each worker may open up to twice worker_connections descriptors (client and upstream side); ask for that, within
# the hard limit a normal user may raise its soft limit to, and shrink worker_connections if the hard limit is low.
worker_connections="${NGINX_WORKER_CONNECTIONS:-4096}"
open_files_limit="$(ulimit -Hn)"
[[ "$open_files_limit" =~ ^[0-9]+$ ]] || open_files_limit=$((2 * worker_connections))
worker_open_files=$((2 * worker_connections < open_files_limit ? 2 * worker_connections : open_files_limit))
worker_connections=$((worker_connections < worker_open_files ? worker_connections : worker_open_files))

# 64 KiB of headroom over the gateway's limit, so the gateway, not nginx, judges bodies near the limit.
client_max_body_bytes=$((gateway_max_body_bytes + 65536))

# Bash 5.2 would otherwise expand & in replacement strings to the matched placeholder.
shopt -u patsub_replacement 2>/dev/null || true
config="$(<"$template")"
config="${config//@@USER_DIRECTIVE@@/$user_directive}"
config="${config//@@WORKER_PROCESSES@@/${NGINX_WORKER_PROCESSES:-auto}}"
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
