#!/usr/bin/env bash
# Restarts every gateway and then every worker, one at a time, so that the stack keeps serving throughout: for
# `make run`'s processes (--local) or for the compose services `gateway` and `worker` (--compose). Run with --help.
#
# --local: for each RUN_DIR/pids/gateway-N.pid, then each worker-N.pid: read the process's command line,
# environment, working directory and open-files limit from /proc; send SIGTERM (a gateway stops accepting and
# drains its streams, a worker finishes or hands back its jobs); wait for it to exit, bounded by its drain setting
# plus a margin, SIGKILL only past that bound; start it again exactly as it ran, in a session of its own, its output
# appended to RUN_DIR/logs/NAME.log; write the new pid to the pid file (the supervisor then stops that process on
# Ctrl-C); wait until its /readyz answers 200. The next process is stopped only once the previous one is ready
# again, so with two or more gateways one always serves. Tested by tests/chaos/scenario_rolling_restart.py.
#
# --compose: for each running container of the service, scale the service up by one without recreating the others,
# wait until the new container is healthy, then `docker stop` the old one (SIGTERM: it drains within the grace)
# and remove it. The number of containers ends where it began. Works with `docker compose` (v2) and
# `docker-compose` (v1).
# THE --compose PATH IS UNTESTED against Docker: it was written on a machine without a Docker engine, where it was
# only checked by `bash -n`, by shellcheck, and by walking its steps with a stand-in docker CLI that keeps containers
# as files (which shows the control flow, not Docker's behaviour). Try it on a staging deployment before relying on
# it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<'EOF'
Usage:
  deploy/rolling-restart.sh --local [--run-dir DIR] [OPTIONS]
  deploy/rolling-restart.sh --compose [-f FILE]... [--project-directory DIR] [-p NAME] [OPTIONS]
  deploy/rolling-restart.sh --help

Restarts every gateway, then every worker, one at a time, with no downtime: each one is stopped with SIGTERM
(it drains), started again, and the next one is stopped only once the previous one is ready again.

  --local                  the processes of `make run` (deploy/supervisor.py), found through RUN_DIR/pids/
  --run-dir DIR            make run's run directory (default .run; a relative path is taken from the repository
                           root, as make run does)
  --compose                the compose services `gateway` and `worker` (docker compose v2 or docker-compose v1;
                           UNTESTED: see the header of this script)
  -f, --file FILE          a compose file (repeatable; default deploy/compose.yaml)
  --project-directory DIR  compose's project directory
  -p, --project-name NAME  compose's project name
  --ready-timeout S        longest wait for a restarted process (or new container) to be ready (default 120)
  --stop-margin S          added to the drain setting to bound the wait for an exit (default 10); past it: SIGKILL
  --settle S               compose only: seconds to wait after a gateway change, so the edge, which re-resolves
                           the gateways' DNS name, sees it (default 5)
  -h, --help               this text

The stop bound of a gateway is gateway.shutdown_drain_s (default 10) plus the margin, of a worker
worker.drain_timeout_s (default 30; make run sets 5) plus the margin, read from the process's DAM_* environment,
else its config files, else the default.

Exit status: 0 when every process came back ready; 1 when one did not (the message says which, and the rest
are left as they were).
EOF
}

# One line per step, stamped with the UTC time of day, to match with the services' logs.
say() { printf '[rolling-restart %s] %s\n' "$(date -u '+%H:%M:%S')" "$*"; }
die() {
    printf '[rolling-restart] error: %s\n' "$*" >&2
    exit 1
}
is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }
now() { echo "${EPOCHREALTIME/,/.}"; }
# Seconds (one decimal) from a `now` reading until now.
seconds_since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }'; }
# Deadlines in microseconds (bash's SECONDS counts whole seconds, so a bound of 3 s could end after 2.1 s).
microseconds_now() { echo "${EPOCHREALTIME/[.,]/}"; }
deadline_after() { echo $(($(microseconds_now) + $1 * 1000000)); }
before() { (($(microseconds_now) < $1)); }

# ---------------------------------------------------------------------------------------------------------------
# Arguments

MODE=""
RUN_DIR=".run"
COMPOSE_FILES=()
PROJECT_DIRECTORY=""
PROJECT_NAME=""
READY_TIMEOUT_S=120
STOP_MARGIN_S=10
SETTLE_S=5

require_value() { (($# >= 2)) || die "$1 needs a value (see --help)"; }
choose_mode() {
    [[ -z "$MODE" || "$MODE" == "$1" ]] || die "--local and --compose exclude each other"
    MODE="$1"
}
while (($# > 0)); do
    case "$1" in
        --local) choose_mode local ;;
        --compose) choose_mode compose ;;
        --run-dir) require_value "$@"; RUN_DIR="$2"; shift ;;
        -f | --file) require_value "$@"; COMPOSE_FILES+=("$2"); shift ;;
        --project-directory) require_value "$@"; PROJECT_DIRECTORY="$2"; shift ;;
        -p | --project-name) require_value "$@"; PROJECT_NAME="$2"; shift ;;
        --ready-timeout) require_value "$@"; READY_TIMEOUT_S="$2"; shift ;;
        --stop-margin) require_value "$@"; STOP_MARGIN_S="$2"; shift ;;
        --settle) require_value "$@"; SETTLE_S="$2"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ -n "$MODE" ]] || die "say --local or --compose (see --help)"
for knob in READY_TIMEOUT_S STOP_MARGIN_S SETTLE_S; do
    is_number "${!knob}" || die "--$(echo "${knob%_S}" | tr '[:upper:]_' '[:lower:]-') must be a whole number of seconds, got '${!knob}'"
done
if [[ "$MODE" == local ]]; then
    if ((${#COMPOSE_FILES[@]} > 0)) || [[ -n "$PROJECT_DIRECTORY$PROJECT_NAME" ]]; then
        die "-f, --project-directory and -p go with --compose"
    fi
else
    [[ "$RUN_DIR" == .run ]] || die "--run-dir goes with --local"
fi

# ---------------------------------------------------------------------------------------------------------------
# --local: the processes of deploy/supervisor.py (`make run`)

# Alive and not a zombie (a process that exited but whose parent, the supervisor, has not reaped it yet is gone).
is_alive() {
    local pid="$1" stat
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    # The state letter follows the command name, which is in parentheses and may itself hold spaces.
    stat="${stat##*) }"
    [[ -n "$stat" && "${stat%% *}" != Z ]]
}

# Whether pid is a process of this run directory (the supervisor's own test: it runs binaries through
# RUN_DIR/bin/NAME, so their command lines name the run directory; this guards against a recycled pid).
belongs_to_run_dir() {
    local pid="$1"
    [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$RUN_DIR/"
}

# How one process was started, read from /proc (NUL-separated, so any byte but NUL survives, empty arguments
# too): CAPTURED_COMMAND, CAPTURED_ENVIRONMENT (NAME=value entries), CAPTURED_DIRECTORY, CAPTURED_OPEN_FILES.
CAPTURED_COMMAND=()
CAPTURED_ENVIRONMENT=()
CAPTURED_DIRECTORY=""
CAPTURED_OPEN_FILES=""
capture_process() {
    local pid="$1"
    mapfile -d '' -t CAPTURED_COMMAND <"/proc/$pid/cmdline" || return 1
    mapfile -d '' -t CAPTURED_ENVIRONMENT <"/proc/$pid/environ" || return 1
    CAPTURED_DIRECTORY="$(readlink "/proc/$pid/cwd")" || return 1
    CAPTURED_OPEN_FILES="$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits" 2>/dev/null || true)"
    ((${#CAPTURED_COMMAND[@]} > 0)) || return 1
}

# The value of NAME in the captured environment (the first entry wins, as getenv does); fails when it is absent.
captured_variable() {
    local entry
    for entry in "${CAPTURED_ENVIRONMENT[@]}"; do
        if [[ "$entry" == "$1="* ]]; then
            printf '%s' "${entry#*=}"
            return 0
        fi
    done
    return 1
}

# `key` of `[section]` in the captured process's config files, the way the settings loader layers them:
# $DAM_CONFIG_DIR (else config/ in its working directory), *.toml in name order, the last file that sets it wins.
# Plain `key = value` lines only; empty when no file sets it.
config_file_value() {
    local section="$1" key="$2" directory file found value=""
    directory="$(captured_variable DAM_CONFIG_DIR)" || directory="config"
    [[ "$directory" == /* ]] || directory="$CAPTURED_DIRECTORY/$directory"
    for file in "$directory"/*.toml; do
        [[ -f "$file" ]] || continue
        found="$(awk -v section="[$section]" -v key="$key" '
            /^[[:space:]]*\[/ { line = $0; sub(/#.*/, "", line); gsub(/[[:space:]]/, "", line); in_section = (line == section) }
            in_section && $0 ~ ("^[[:space:]]*" key "[[:space:]]*=") {
                sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*#.*$/, ""); gsub(/^"|"$/, ""); print }' "$file" \
            | tail -n 1)"
        [[ -n "$found" ]] && value="$found"
    done
    printf '%s' "$value"
}

# A setting of the captured process: its DAM_SECTION__KEY variable, else its config files, else the default.
captured_setting() {
    local section="$1" key="$2" default="$3" value variable
    variable="DAM_$(echo "$section" | tr '[:lower:]' '[:upper:]')__$(echo "$key" | tr '[:lower:]' '[:upper:]')"
    if value="$(captured_variable "$variable")" && [[ -n "$value" ]]; then
        printf '%s' "$value"
        return
    fi
    value="$(config_file_value "$section" "$key")"
    printf '%s' "${value:-$default}"
}

# The captured process's /readyz URL: section `gateway` or `worker`, their host and port settings. A wildcard
# listen address is reached on loopback.
captured_ready_url() {
    local section="$1" default_port="$2" host port
    host="$(captured_setting "$section" host 127.0.0.1)"
    port="$(captured_setting "$section" port "$default_port")"
    is_number "$port" && ((port > 0 && port <= 65535)) || return 1
    case "$host" in
        0.0.0.0 | "") host=127.0.0.1 ;;
        :: | "[::]") host="[::1]" ;;
        *:*) [[ "$host" == \[* ]] || host="[$host]" ;;
    esac
    printf 'http://%s:%s/readyz' "$host" "$port"
}

# 200 from the URL within 2 s (proxies bypassed: the address is local).
answers_ready() {
    [[ "$(curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true)" == 200 ]]
}

# Names bash itself sets, changes or keeps read-only: they reach the restarted process as arguments of `env`, not
# as variables exported by the shell that starts it.
variable_bash_cannot_carry() {
    local name="$1"
    [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || return 0
    case "$name" in
        BASH* | SHELLOPTS | SHLVL | _ | RANDOM | SRANDOM | SECONDS | LINENO | EPOCHSECONDS | EPOCHREALTIME | \
            HISTCMD | FUNCNAME | GROUPS | UID | EUID | PPID | PWD | OLDPWD | DIRSTACK | PIPESTATUS | COPROC* | \
            POSIXLY_CORRECT | IFS) return 0 ;;
    esac
    return 1
}

SETSID_BIN="$(command -v setsid || true)"
ENV_BIN="$(command -v env || true)"

# Starts the captured process again: same working directory, open-files limit, environment and command line, in
# a session of its own (as the supervisor starts it), output appended to its log. Sets STARTED_PID.
# The environment is rebuilt in the subshell that becomes the process rather than passed as `env -i NAME=value`
# arguments, because a command line is readable by every local user and the environment holds secrets (the
# worker's DAM_LLM__API_KEY, a password in DAM_REDIS__URL); only names bash cannot carry go as arguments.
STARTED_PID=""
start_captured_process() {
    local log_file="$1"
    printf '\n---- restarted by deploy/rolling-restart.sh at %s ----\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" \
        >>"$log_file"
    (
        cd -- "$CAPTURED_DIRECTORY"
        if is_number "${CAPTURED_OPEN_FILES:-}"; then ulimit -S -n "$CAPTURED_OPEN_FILES" 2>/dev/null || true; fi
        while IFS= read -r variable; do unset "$variable" 2>/dev/null || true; done < <(compgen -e)
        as_arguments=()
        for entry in "${CAPTURED_ENVIRONMENT[@]}"; do
            if variable_bash_cannot_carry "${entry%%=*}"; then
                as_arguments+=("$entry")
            else
                export "${entry?}"
            fi
        done
        # bash adds SHLVL (and may add _) to what it executes: drop them, then set the captured ones, if any.
        exec "$SETSID_BIN" "$ENV_BIN" -u SHLVL -u _ -- "${as_arguments[@]}" "${CAPTURED_COMMAND[@]}"
    ) </dev/null >>"$log_file" 2>&1 &
    STARTED_PID=$!
}

# Replaces the pid file in one rename, so the supervisor never reads a half-written one.
write_pid_file() {
    local pid_file="$1" pid="$2"
    printf '%s\n' "$pid" >"$pid_file.new"
    mv -f -- "$pid_file.new" "$pid_file"
}

# Which /proc entries of the restarted process differ from the captured ones (names only: values may be secrets).
describe_launch_differences() {
    local pid="$1" differences=() current_command=() current_environment=()
    mapfile -d '' -t current_command <"/proc/$pid/cmdline" 2>/dev/null || true
    mapfile -d '' -t current_environment <"/proc/$pid/environ" 2>/dev/null || true
    [[ "${current_command[*]}" == "${CAPTURED_COMMAND[*]}" && ${#current_command[@]} == "${#CAPTURED_COMMAND[@]}" ]] \
        || differences+=("command line")
    local changed
    changed="$(LC_ALL=C comm -3 <(printf '%s\n' "${CAPTURED_ENVIRONMENT[@]//$'\n'/ }" | LC_ALL=C sort) \
        <(printf '%s\n' "${current_environment[@]//$'\n'/ }" | LC_ALL=C sort) | sed 's/^\t//; s/=.*//' | sort -u \
        | tr '\n' ' ')"
    [[ -z "${changed// /}" ]] || differences+=("environment: ${changed% }")
    ((${#differences[@]} == 0)) || printf '%s' "${differences[*]}"
}

# Where the script is, for the message of an interruption.
CURRENT_STEP=""
on_interrupt() {
    trap - INT TERM
    if [[ -n "$CURRENT_STEP" ]]; then
        printf '[rolling-restart] interrupted while %s; check the pid files and /readyz before going on\n' \
            "$CURRENT_STEP" >&2
    fi
    exit 130
}

# Stops one process of the run directory and starts it again; returns 1 (after saying why) when it did not come
# back ready. kind: gateway or worker.
restart_local_process() {
    local name="$1" kind="$2"
    local pid_file="$PID_DIR/$name.pid" log_file="$LOG_DIR/$name.log"
    local old_pid new_pid ready_url drain_s bound_s step_started stop_started ready_started how=SIGTERM
    old_pid="$(<"$pid_file")"
    if ! is_number "$old_pid" || ! is_alive "$old_pid" || ! belongs_to_run_dir "$old_pid"; then
        say "$name: pid file $pid_file names no running process of $RUN_DIR ('$old_pid')"
        return 1
    fi
    capture_process "$old_pid" || { say "$name: cannot read pid $old_pid's command line and environment"; return 1; }
    # env would take a first word holding `=` for one more variable.
    [[ "${CAPTURED_COMMAND[0]}" != *=* ]] || { say "$name: its program path holds '=': not restartable here"; return 1; }
    if [[ "$kind" == gateway ]]; then
        drain_s="$(captured_setting gateway shutdown_drain_s 10)"
        ready_url="$(captured_ready_url gateway 8080)" || { say "$name: no usable gateway port"; return 1; }
    else
        drain_s="$(captured_setting worker drain_timeout_s 30)"
        ready_url="$(captured_ready_url worker 9200)" || { say "$name: no usable worker port"; return 1; }
    fi
    is_number "$drain_s" || drain_s=30
    bound_s=$((drain_s + STOP_MARGIN_S))

    step_started="$(now)"
    stop_started="$step_started"
    CURRENT_STEP="stopping $name (pid $old_pid)"
    # Tells the supervisor, which sees its child exit, that this is a restart and not a crash (removed once the new
    # process's pid is written).
    : >"$PID_DIR/$name.restarting"
    kill -TERM "$old_pid" 2>/dev/null || true
    local deadline
    deadline="$(deadline_after "$bound_s")"
    while is_alive "$old_pid" && before "$deadline"; do sleep 0.1; done
    if is_alive "$old_pid"; then
        say "$name: pid $old_pid still running ${bound_s}s after SIGTERM (drain ${drain_s}s + margin ${STOP_MARGIN_S}s): sending SIGKILL"
        how=SIGKILL
        kill -KILL "$old_pid" 2>/dev/null || true
        deadline="$(deadline_after 10)"
        while is_alive "$old_pid" && before "$deadline"; do sleep 0.1; done
        if is_alive "$old_pid"; then
            say "$name: pid $old_pid survived SIGKILL for 10s; not starting a second copy"
            rm -f -- "$PID_DIR/$name.restarting"
            return 1
        fi
    fi
    say "$name: pid $old_pid exited $(seconds_since "$stop_started")s after SIGTERM$([[ $how == SIGKILL ]] && echo ' (killed)')"

    CURRENT_STEP="starting $name again (pid $old_pid has exited)"
    start_captured_process "$log_file"
    new_pid="$STARTED_PID"
    write_pid_file "$pid_file" "$new_pid" || { say "$name: cannot write $pid_file (new pid $new_pid)"; return 1; }
    rm -f -- "$PID_DIR/$name.restarting"
    CURRENT_STEP="waiting for $name (new pid $new_pid) to be ready"
    ready_started="$(now)"
    deadline="$(deadline_after "$READY_TIMEOUT_S")"
    while ! answers_ready "$ready_url"; do
        if ! is_alive "$new_pid"; then
            say "$name: new pid $new_pid exited during startup; last lines of $log_file:"
            tail -n 20 "$log_file" | sed 's/^/    /'
            return 1
        fi
        if ! before "$deadline"; then
            say "$name: new pid $new_pid is not ready ${READY_TIMEOUT_S}s after its start ($ready_url); it is left running"
            return 1
        fi
        sleep 0.1
    done
    # The supervisor removes the pid file of a process that exited, unless it already names another one; should it
    # have read the file just before the write above, it removed the new one: write it again.
    [[ "$(cat "$pid_file" 2>/dev/null || true)" == "$new_pid" ]] || write_pid_file "$pid_file" "$new_pid"
    local differences
    differences="$(describe_launch_differences "$new_pid")"
    [[ -z "$differences" ]] || say "$name: warning: pid $new_pid does not run exactly as pid $old_pid did ($differences)"
    say "$name: pid $new_pid ready $(seconds_since "$ready_started")s after its start; $name restarted in $(seconds_since "$step_started")s"
    CURRENT_STEP=""
}

# The pid files of one kind (gateway or worker), in number order.
pid_files_of() {
    local kind="$1"
    find "$PID_DIR" -maxdepth 1 -name "$kind-*.pid" -printf '%f\n' 2>/dev/null \
        | grep -E "^$kind-[0-9]+\.pid$" | sort -t- -k2 -n || true
}

rolling_restart_local() {
    [[ "$RUN_DIR" == /* ]] || RUN_DIR="$ROOT/$RUN_DIR"
    RUN_DIR="${RUN_DIR%/}"
    PID_DIR="$RUN_DIR/pids"
    LOG_DIR="$RUN_DIR/logs"
    [[ -d "$PID_DIR" ]] || die "$PID_DIR does not exist: is the stack running (make run) with --run-dir $RUN_DIR?"
    [[ -x "$SETSID_BIN" && -x "$ENV_BIN" ]] || die "setsid and env are needed (util-linux, coreutils)"
    command -v curl >/dev/null 2>&1 || die "curl is needed (make deps)"

    local names=() file
    while IFS= read -r file; do [[ -n "$file" ]] && names+=("${file%.pid}"); done < <(pid_files_of gateway)
    local gateway_count=${#names[@]}
    while IFS= read -r file; do [[ -n "$file" ]] && names+=("${file%.pid}"); done < <(pid_files_of worker)
    ((gateway_count > 0)) || die "no gateway pid files in $PID_DIR: is the stack running?"

    # Everything must be up and ready before anything is stopped: a rolling restart of a stack that already
    # lacks a gateway would leave none.
    local name pid url problems=()
    for name in "${names[@]}"; do
        pid="$(cat "$PID_DIR/$name.pid" 2>/dev/null || true)"
        if ! is_number "$pid" || ! is_alive "$pid" || ! belongs_to_run_dir "$pid"; then
            problems+=("$name is not running (pid file: '$pid')")
            continue
        fi
        if ! capture_process "$pid"; then
            problems+=("$name (pid $pid): cannot read its command line and environment")
            continue
        fi
        if [[ "$name" == gateway-* ]]; then url="$(captured_ready_url gateway 8080 || true)"; else url="$(captured_ready_url worker 9200 || true)"; fi
        if [[ -z "$url" ]] || ! answers_ready "$url"; then problems+=("$name (pid $pid) is not ready (${url:-no port})"); fi
    done
    if ((${#problems[@]} > 0)); then
        for problem in "${problems[@]}"; do say "$problem"; done
        die "nothing was restarted: the stack must be whole and ready first"
    fi
    ((gateway_count > 1)) || say "warning: only one gateway: nginx has none to send requests to while it restarts"

    trap on_interrupt INT TERM
    local started
    started="$(now)"
    say "restarting $gateway_count gateways, then $((${#names[@]} - gateway_count)) workers, of $RUN_DIR"
    for name in "${names[@]}"; do
        restart_local_process "$name" "${name%%-*}" \
            || die "$name did not come back ready; the processes after it were not restarted"
    done
    say "done: ${#names[@]} processes restarted one at a time in $(seconds_since "$started")s"
}

# ---------------------------------------------------------------------------------------------------------------
# --compose: the services `gateway` and `worker` (UNTESTED here: no Docker engine where this was written)

COMPOSE=()
COMPOSE_VERSION=""
choose_compose_command() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
        COMPOSE_VERSION=2
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
        COMPOSE_VERSION=1
    else
        die "neither 'docker compose' nor 'docker-compose' is available"
    fi
    ((${#COMPOSE_FILES[@]} > 0)) || COMPOSE_FILES=("$ROOT/deploy/compose.yaml")
    local file
    for file in "${COMPOSE_FILES[@]}"; do
        [[ -f "$file" ]] || die "compose file $file does not exist"
        COMPOSE+=(-f "$file")
    done
    [[ -z "$PROJECT_DIRECTORY" ]] || COMPOSE+=(--project-directory "$PROJECT_DIRECTORY")
    [[ -z "$PROJECT_NAME" ]] || COMPOSE+=(-p "$PROJECT_NAME")
}

# Ids of the service's containers, stopped ones included (v2 lists only running ones without --all).
service_container_ids() {
    if [[ "$COMPOSE_VERSION" == 2 ]]; then
        "${COMPOSE[@]}" ps --all -q "$1"
    else
        "${COMPOSE[@]}" ps -q "$1"
    fi
}

container_running() { [[ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null || true)" == true ]]; }
# healthy, starting, unhealthy; or `no-healthcheck:<state>` when the container has no health check.
container_health() {
    docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck:{{.State.Status}}{{end}}' \
        "$1" 2>/dev/null || echo gone
}
short_id() { printf '%s' "${1:0:12}"; }

# The container's stop grace: its drain setting (from its environment, else the default) plus the margin.
container_grace_s() {
    local container="$1" variable="$2" default="$3" value
    value="$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$container" 2>/dev/null \
        | sed -n "s/^$variable=//p" | head -n 1)"
    is_number "${value:-}" || value="$default"
    echo $((value + STOP_MARGIN_S))
}

remove_container() {
    local container="$1" grace_s="$2"
    docker stop -t "$grace_s" "$container" >/dev/null && docker rm "$container" >/dev/null
}

# Replaces each running container of the service, one at a time; returns 1 (after saying why) on a failure.
rolling_restart_compose_service() {
    local service="$1" drain_variable="$2" drain_default="$3"
    local all=() running=() id listed
    listed="$(service_container_ids "$service")" || { say "$service: '${COMPOSE[*]} ps' failed"; return 1; }
    mapfile -t all <<<"$listed"
    for id in "${all[@]}"; do
        [[ -n "$id" ]] || continue
        if container_running "$id"; then running+=("$id"); else
            say "$service: container $(short_id "$id") is not running; remove it first ('${COMPOSE[*]} rm -f $service')"
            return 1
        fi
    done
    local count=${#running[@]}
    if ((count == 0)); then
        say "$service: no running containers; nothing to restart"
        return 0
    fi
    ((count > 1)) || [[ "$service" != gateway ]] || say "warning: one gateway: the edge relies on the new one before the old one stops"
    say "$service: replacing $count containers one at a time"
    local old step_started before=() after=() new="" health deadline grace_s exit_code
    for old in "${running[@]}"; do
        step_started="$(now)"
        listed="$(service_container_ids "$service")" || { say "$service: '${COMPOSE[*]} ps' failed"; return 1; }
        mapfile -t before <<<"$listed"
        CURRENT_STEP="adding a $service container to replace $(short_id "$old")"
        "${COMPOSE[@]}" up -d --no-deps --no-recreate --scale "$service=$((count + 1))" "$service" \
            || { say "$service: scaling up to $((count + 1)) failed"; return 1; }
        listed="$(service_container_ids "$service")" || { say "$service: '${COMPOSE[*]} ps' failed"; return 1; }
        mapfile -t after <<<"$listed"
        new="$(comm -13 <(printf '%s\n' "${before[@]}" | sort) <(printf '%s\n' "${after[@]}" | sort) | head -n 1)"
        [[ -n "$new" ]] || { say "$service: scaling up created no new container"; return 1; }
        say "$service: started $(short_id "$new") to replace $(short_id "$old")"

        CURRENT_STEP="waiting for $service container $(short_id "$new") to be healthy"
        deadline="$(deadline_after "$READY_TIMEOUT_S")"
        while true; do
            health="$(container_health "$new")"
            [[ "$health" == healthy ]] && break
            if [[ "$health" == unhealthy || "$health" == gone || "$health" == no-healthcheck:* ]] \
                || ! before "$deadline"; then
                say "$service: new container $(short_id "$new") is '$health' (waited at most ${READY_TIMEOUT_S}s); removing it, $(short_id "$old") keeps running"
                [[ "$health" != no-healthcheck:* ]] || say "$service: the service needs a health check (the images' HEALTHCHECK)"
                docker logs --tail 20 "$new" 2>&1 | sed 's/^/    /' || true
                remove_container "$new" "$(container_grace_s "$new" "$drain_variable" "$drain_default")" || true
                return 1
            fi
            sleep 1
        done
        say "$service: $(short_id "$new") healthy after $(seconds_since "$step_started")s"
        # The edge finds gateways by DNS, re-resolved now and then: let it see the new one before the old goes.
        if [[ "$service" == gateway ]] && ((SETTLE_S > 0)); then sleep "$SETTLE_S"; fi

        CURRENT_STEP="stopping $service container $(short_id "$old") (it drains)"
        grace_s="$(container_grace_s "$old" "$drain_variable" "$drain_default")"
        local stop_started
        stop_started="$(now)"
        docker stop -t "$grace_s" "$old" >/dev/null || { say "$service: docker stop $(short_id "$old") failed"; return 1; }
        exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$old" 2>/dev/null || echo '?')"
        if [[ "$exit_code" == 137 ]]; then
            say "$service: $(short_id "$old") did not exit within ${grace_s}s of SIGTERM and was killed (exit 137)"
        else
            say "$service: $(short_id "$old") exited (status $exit_code) $(seconds_since "$stop_started")s after SIGTERM"
        fi
        docker rm "$old" >/dev/null || { say "$service: docker rm $(short_id "$old") failed"; return 1; }
        # Likewise, let the edge forget the removed gateway's address before the next one changes.
        if [[ "$service" == gateway ]] && ((SETTLE_S > 0)); then sleep "$SETTLE_S"; fi
        say "$service: replaced $(short_id "$old") with $(short_id "$new") in $(seconds_since "$step_started")s"
        CURRENT_STEP=""
    done
}

rolling_restart_compose() {
    command -v docker >/dev/null 2>&1 || die "docker is not installed"
    choose_compose_command
    trap on_interrupt INT TERM
    local started
    started="$(now)"
    say "using '${COMPOSE[*]}' (compose v$COMPOSE_VERSION)"
    rolling_restart_compose_service gateway DAM_GATEWAY__SHUTDOWN_DRAIN_S 10 \
        || die "the gateways' rolling restart stopped; the workers were not restarted"
    rolling_restart_compose_service worker DAM_WORKER__DRAIN_TIMEOUT_S 30 \
        || die "the workers' rolling restart stopped"
    say "done in $(seconds_since "$started")s"
}

if [[ "$MODE" == local ]]; then
    rolling_restart_local
else
    rolling_restart_compose
fi
