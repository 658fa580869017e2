#!/usr/bin/env bash
# Installs the Debian packages a local Traffic Dam stack and its tests need (redis-server, nginx, curl, python3 for
# the supervisor, deploy/supervisor.py, with a TOML reader), and only
# the missing ones: a machine that has them is left untouched and no network is used. Called by `make deps`,
# deploy/run-local.sh and .ci/run. Python packages for the end-to-end test are .ci/run's and `make deps`' business.
# `make deps` and deploy/monitoring/start-monitoring.sh also ask for the monitoring tools by command name
# (prometheus promtool prometheus-alertmanager amtool mtail): only their binaries are used, so the system services
# Debian starts with them (Prometheus on :9090, which `make run` gives mock-llm) are stopped and disabled again.
set -euo pipefail

log() { echo "[deps] $*" >&2; }

# Debian puts nginx in /usr/sbin, which is not on a normal user's PATH.
have_command() {
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]
}

# command -> Debian package. Arguments name more commands to ensure (each from the package of its name), e.g. wrk.
declare -A package_of=([redis-server]=redis-server [redis-cli]=redis-tools [nginx]=nginx [curl]=curl
    [prometheus]=prometheus [promtool]=prometheus [prometheus-alertmanager]=prometheus-alertmanager
    [amtool]=prometheus-alertmanager [mtail]=mtail [chromium]=chromium [chromedriver]=chromium-driver)
# Packages whose system service this script turns off again when it installed them (see the top).
service_packages=(prometheus prometheus-alertmanager mtail)
wanted=(redis-server redis-cli nginx curl python3 "$@")
missing=()
for command_name in "${wanted[@]}"; do
    if ! have_command "$command_name"; then
        package="${package_of[$command_name]:-$command_name}"
        [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
    fi
done
# Python 3.10 and older have no tomllib: the supervisor then reads deploy/topology.toml with tomli.
if have_command python3 && ! python3 -c 'import tomllib' 2>/dev/null && ! python3 -c 'import tomli' 2>/dev/null; then
    missing+=(python3-tomli)
fi
if ((${#missing[@]} == 0)); then
    log "installed already: ${wanted[*]}"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "missing: ${missing[*]}; this script installs with apt-get (Debian/Ubuntu). Install them yourself, then retry."
    exit 1
fi
as_root=()
if [[ "$(id -u)" != 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        log "missing: ${missing[*]}; not root and no sudo. Run as root: apt-get install -y ${missing[*]}"
        exit 1
    fi
    as_root=(sudo)
fi

log "installing: ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

for command_name in "${wanted[@]}"; do
    have_command "$command_name" || { log "$command_name is still missing after apt-get install"; exit 1; }
done
for package in "${service_packages[@]}"; do
    if [[ " ${missing[*]} " == *" $package "* ]] && command -v systemctl >/dev/null 2>&1 \
        && systemctl list-unit-files "$package.service" >/dev/null 2>&1; then
        log "stopping and disabling the $package system service Debian started (only its binary is used)"
        "${as_root[@]}" systemctl disable --now "$package.service" >/dev/null 2>&1 || true
    fi
done
log "installed: ${missing[*]}"
