#!/usr/bin/env bash
# shellcheck disable=SC2317 # the stop functions run from traps, which shellcheck cannot follow
# Runs the whole Traffic Dam stack on loopback for development (`make run`) and for the end-to-end test:
# redis-server, mock-llm (unless a real LLM is configured), dam, N gateways, M workers and nginx in front of the
# gateways. It stays in the foreground; Ctrl-C (SIGINT), SIGTERM or SIGHUP stops everything it started.
#
# Knobs (none starts with DAM_: every DAM_* variable is a service setting, and unknown settings are refused):
#   PROFILE=release|debug     which cargo profile to build and run (default release)
#   SCALE_GATEWAY=2           gateways, on ports GATEWAY_PORT_BASE, GATEWAY_PORT_BASE+1, ...
#   SCALE_WORKER=2            llm-workers (one runtime thread each: one per core of a small machine), each with its
#                             own listener (/metrics, /healthz, /readyz) on WORKER_PORT_BASE, WORKER_PORT_BASE+1, ...
#   WORKER_PORT_BASE=9201     or WORKER_PORTS="p1 p2 ..." (one port per worker, in order) to pick each one
#   PUBLIC_PORT=8080          nginx, the only public entry (DAM_PUBLIC_PORT is accepted as an alias)
#   GATEWAY_PORT_BASE=8081  REDIS_PORT=6390  MOCK_LLM_PORT=9090  ADMIN_PORT=9100 (dam)
#   RUN_DIR=.run              logs, pids, nginx prefix and redis dir (absolute, or relative to the repo root)
#   REDIS_MAXMEMORY=1gb       Redis's memory cap (0: none); when it is full Redis refuses writes (noeviction)
#   READY_TIMEOUT_S=90        longest wait for the whole stack to become ready
#   STOP_TIMEOUT_S=15         longest wait per shutdown phase before SIGKILL
#   SKIP_DEPS=1               do not check/install system packages;  SKIP_BUILD=1: do not run cargo build
#   TRAFFIC_DAM_MODEL         with a real LLM: the model to serve (default openai/gpt-4o-mini)
#   EDGE_RATE_PER_SECOND=50  EDGE_BURST=200  EDGE_CONNECTIONS_PER_ADDRESS=500
#                             nginx's own per-address limits (requests/s, burst, requests in progress), above the
#                             gate's; past them nginx answers 429 with X-Dam-Layer: edge (deploy/nginx/*)
# A real LLM: DAM_LLM__BASE_URL=https://openrouter.ai/api/v1 DAM_LLM__API_KEY=sk-... make run
#
# Redis keeps its data in RUN_DIR/redis (append-only file, fsync every second): a restart of Redis, or of the
# whole stack on the same RUN_DIR, keeps queues, keys, blocks, budgets and dead letters. See "Persistence" in
# docs/operations.md.
#
# `deploy/run-local.sh --clean` stops processes an earlier, killed run left behind and removes RUN_DIR (and so
# Redis's data).
#
# A service killed while the stack runs may be started again by hand (the fault tests and deploy/rolling-restart.sh
# do): writing its new pid to RUN_DIR/pids/NAME.pid makes the stop below stop that process in the old one's place.
set -euo pipefail

# A shell started with SIGINT ignored (`run-local.sh &` from another script, nohup) cannot trap it, so Ctrl-C and
# kill -INT would do nothing: restart once with the default disposition.
sigint_ignored_mask="$(awk '/^SigIgn:/ {print $2}' /proc/$$/status 2>/dev/null || echo 0)"
if (((16#${sigint_ignored_mask:-0} & 2) != 0)) && [[ -z "${RUN_LOCAL_SIGNALS_RESET:-}" ]] \
    && env --default-signal=INT true 2>/dev/null; then
    export RUN_LOCAL_SIGNALS_RESET=1
    exec env --default-signal=INT bash "${BASH_SOURCE[0]}" "$@"
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[run-local] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------------------------
# Knobs
PROFILE="${PROFILE:-release}"
SCALE_GATEWAY="${SCALE_GATEWAY:-2}"
SCALE_WORKER="${SCALE_WORKER:-2}"
PUBLIC_PORT="${PUBLIC_PORT:-${DAM_PUBLIC_PORT:-8080}}"
GATEWAY_PORT_BASE="${GATEWAY_PORT_BASE:-8081}"
WORKER_PORT_BASE="${WORKER_PORT_BASE:-9201}"
WORKER_PORTS="${WORKER_PORTS:-}"
REDIS_PORT="${REDIS_PORT:-6390}"
MOCK_LLM_PORT="${MOCK_LLM_PORT:-9090}"
ADMIN_PORT="${ADMIN_PORT:-9100}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-90}"
STOP_TIMEOUT_S="${STOP_TIMEOUT_S:-15}"
SKIP_DEPS="${SKIP_DEPS:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
REDIS_MAXMEMORY="${REDIS_MAXMEMORY:-1gb}"
RUN_DIR="${RUN_DIR:-.run}"
[[ "$RUN_DIR" == /* ]] || RUN_DIR="$ROOT/$RUN_DIR"
# These two would reach the services as unknown settings (and be refused), so they are read here and removed.
if [[ -n "${DAM_LLM__MODEL_NAME:-}" ]]; then
    log "DAM_LLM__MODEL_NAME is not a setting: taking it as TRAFFIC_DAM_MODEL"
fi
TRAFFIC_DAM_MODEL="${TRAFFIC_DAM_MODEL:-${DAM_LLM__MODEL_NAME:-openai/gpt-4o-mini}}"
unset DAM_PUBLIC_PORT DAM_LLM__MODEL_NAME

LOG_DIR="$RUN_DIR/logs"
PID_DIR="$RUN_DIR/pids"
SCRIPT_PID_FILE="$RUN_DIR/run-local.pid"

# ---------------------------------------------------------------------------------------------------------------
# Processes: liveness, stopping, leftovers

# Alive and not a zombie (an exited child the shell has not reaped yet counts as gone).
is_alive() {
    local pid="$1" stat
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    # The state letter follows the command name, which is in parentheses and may itself hold spaces.
    stat="${stat##*) }"
    [[ -n "$stat" && "${stat%% *}" != Z ]]
}

# Whether pid is a process of this run directory (guards against a recycled pid).
belongs_to_run_dir() {
    local pid="$1"
    [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$RUN_DIR/"
}

# SIGTERM to each pid, wait up to STOP_TIMEOUT_S for all of them, then SIGKILL the rest. Returns 1 if any needed it.
stop_pids() {
    local phase="$1"; shift
    local pids=() pid
    for pid in "$@"; do is_alive "$pid" && pids+=("$pid"); done
    ((${#pids[@]} > 0)) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S)) remaining=("${pids[@]}")
    while ((${#remaining[@]} > 0 && SECONDS < deadline)); do
        sleep 0.1
        local still=()
        for pid in "${remaining[@]}"; do is_alive "$pid" && still+=("$pid"); done
        remaining=("${still[@]+"${still[@]}"}")
    done
    ((${#remaining[@]} == 0)) && return 0
    log "$phase: still running after ${STOP_TIMEOUT_S}s, sending SIGKILL to ${remaining[*]}"
    kill -KILL "${remaining[@]}" 2>/dev/null || true
    local kill_deadline=$((SECONDS + 5))
    for pid in "${remaining[@]}"; do
        while is_alive "$pid" && ((SECONDS < kill_deadline)); do sleep 0.1; done
    done
    return 1
}

# --clean: stop what an earlier run left behind (only processes whose command line names RUN_DIR), remove RUN_DIR.
clean_run_dir() {
    if [[ -f "$SCRIPT_PID_FILE" ]] && is_alive "$(<"$SCRIPT_PID_FILE")" \
        && grep -qa run-local "/proc/$(<"$SCRIPT_PID_FILE")/cmdline" 2>/dev/null; then
        die "a stack is running from $RUN_DIR (run-local.sh pid $(<"$SCRIPT_PID_FILE")); stop it with Ctrl-C or kill -TERM $(<"$SCRIPT_PID_FILE") first"
    fi
    local leftovers=() pid_file pid child
    for pid_file in "$PID_DIR"/*.pid; do
        [[ -f "$pid_file" ]] || continue
        pid="$(<"$pid_file")"
        if is_alive "$pid" && belongs_to_run_dir "$pid"; then
            # nginx workers do not carry the run directory in their title: take them with their master.
            for child in $(pgrep -P "$pid" 2>/dev/null || true); do leftovers+=("$child"); done
            leftovers+=("$pid")
        fi
    done
    if ((${#leftovers[@]} > 0)); then
        log "stopping leftovers of an earlier run: ${leftovers[*]}"
        stop_pids "leftovers" "${leftovers[@]}" || true
    fi
    rm -rf -- "$RUN_DIR"
    log "removed $RUN_DIR"
}

if [[ "${1:-}" == "--clean" ]]; then
    clean_run_dir
    exit 0
elif (($# > 0)); then
    die "unknown argument '$1' (the only argument is --clean; everything else is set by environment variables)"
fi

# ---------------------------------------------------------------------------------------------------------------
# Checks before anything starts

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }
for knob in SCALE_GATEWAY SCALE_WORKER PUBLIC_PORT GATEWAY_PORT_BASE WORKER_PORT_BASE REDIS_PORT MOCK_LLM_PORT \
    ADMIN_PORT READY_TIMEOUT_S STOP_TIMEOUT_S; do
    is_number "${!knob}" || die "$knob must be a whole number, got '${!knob}'"
done
((SCALE_GATEWAY >= 1 && SCALE_GATEWAY <= 32)) || die "SCALE_GATEWAY must be 1..32"
((SCALE_WORKER >= 0 && SCALE_WORKER <= 64)) || die "SCALE_WORKER must be 0..64"
case "$PROFILE" in
    release | debug) ;;
    *) die "PROFILE must be release or debug, got '$PROFILE'" ;;
esac

# A real provider replaces mock-llm, and the served model defaults to one it knows.
if [[ -n "${DAM_LLM__BASE_URL:-}" ]]; then
    USE_MOCK_LLM=0
    export DAM_CHAT__DEFAULT_MODEL="${DAM_CHAT__DEFAULT_MODEL:-$TRAFFIC_DAM_MODEL}"
    export DAM_CHAT__ALLOWED_MODELS="${DAM_CHAT__ALLOWED_MODELS:-$TRAFFIC_DAM_MODEL}"
else
    USE_MOCK_LLM=1
    export DAM_LLM__BASE_URL="http://127.0.0.1:$MOCK_LLM_PORT/v1"
    export DAM_MOCK_LLM__HOST=127.0.0.1 DAM_MOCK_LLM__PORT="$MOCK_LLM_PORT"
fi
SERVED_MODEL="${DAM_CHAT__DEFAULT_MODEL:-mock-1}"

# Every service on loopback, on the ports chosen here, against the Redis started here.
export DAM_REDIS__URL="redis://127.0.0.1:$REDIS_PORT"
export DAM_GATEWAY__HOST=127.0.0.1 DAM_WORKER__HOST=127.0.0.1 DAM_DAM__HOST=127.0.0.1 DAM_DAM__PORT="$ADMIN_PORT"
# Nobody hears a job that finishes after nginx and the gateways are gone: a long drain would only delay Ctrl-C,
# so local workers hand running jobs back to the queue (kept in Redis's append-only file) after 5 s (setting it
# wins).
export DAM_WORKER__DRAIN_TIMEOUT_S="${DAM_WORKER__DRAIN_TIMEOUT_S:-5}"
# Logs go to files: no terminal colour codes in them unless asked for (NO_COLOR= keeps them).
export NO_COLOR="${NO_COLOR-1}"

GATEWAY_PORTS=()
for ((index = 0; index < SCALE_GATEWAY; index++)); do GATEWAY_PORTS+=($((GATEWAY_PORT_BASE + index))); done
# Worker N listens on WORKER_PORTS' N-th port when that list is given, else on WORKER_PORT_BASE+N-1.
WORKER_PORT_LIST=()
if [[ -n "$WORKER_PORTS" ]]; then
    read -r -a WORKER_PORT_LIST <<<"$WORKER_PORTS"
    for port in "${WORKER_PORT_LIST[@]}"; do
        is_number "$port" || die "WORKER_PORTS must be whole numbers separated by spaces, got '$WORKER_PORTS'"
    done
    ((${#WORKER_PORT_LIST[@]} >= SCALE_WORKER)) \
        || die "WORKER_PORTS names ${#WORKER_PORT_LIST[@]} ports for SCALE_WORKER=$SCALE_WORKER workers"
else
    for ((index = 0; index < SCALE_WORKER; index++)); do WORKER_PORT_LIST+=($((WORKER_PORT_BASE + index))); done
fi

# name:port of every listener this run opens; a port taken by anyone (or named twice) stops the run here.
listeners=("nginx:$PUBLIC_PORT" "redis:$REDIS_PORT" "dam:$ADMIN_PORT")
((USE_MOCK_LLM)) && listeners+=("mock-llm:$MOCK_LLM_PORT")
for ((index = 0; index < SCALE_GATEWAY; index++)); do listeners+=("gateway-$((index + 1)):${GATEWAY_PORTS[index]}"); done
for ((index = 0; index < SCALE_WORKER; index++)); do listeners+=("worker-$((index + 1)):${WORKER_PORT_LIST[index]}"); done

port_in_use() {
    local port="$1"
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]] && return 0
    fi
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
}

declare -A port_owner=()
for listener in "${listeners[@]}"; do
    name="${listener%%:*}" port="${listener##*:}"
    ((port >= 1 && port <= 65535)) || die "$name: port $port is out of range"
    [[ -z "${port_owner[$port]:-}" ]] || die "port $port is set for both ${port_owner[$port]} and $name; change one of the *_PORT knobs"
    port_owner[$port]="$name"
done

mkdir -p "$RUN_DIR"
if [[ -f "$SCRIPT_PID_FILE" ]]; then
    previous_pid="$(<"$SCRIPT_PID_FILE")"
    if is_alive "$previous_pid" && grep -qa run-local "/proc/$previous_pid/cmdline" 2>/dev/null; then
        die "a stack is already running from $RUN_DIR (run-local.sh pid $previous_pid); stop it with Ctrl-C, or use another RUN_DIR and ports"
    fi
fi
for pid_file in "$PID_DIR"/*.pid; do
    [[ -f "$pid_file" ]] || continue
    pid="$(<"$pid_file")"
    if is_alive "$pid" && belongs_to_run_dir "$pid"; then
        die "$(basename "$pid_file" .pid) (pid $pid) of an earlier run in $RUN_DIR is still running; run 'make clean-run' (or '$0 --clean') to stop it"
    fi
done
for listener in "${listeners[@]}"; do
    name="${listener%%:*}" port="${listener##*:}"
    if port_in_use "$port"; then
        die "port $port (for $name) is already in use on this machine; stop whatever holds it (ss -ltnp 'sport = :$port') or pick another port with the knobs at the top of $0"
    fi
done

# ---------------------------------------------------------------------------------------------------------------
# Open files: every open stream is one socket in its gateway and two in nginx (the client's and the gateway's)

# limits.max_open_streams as the gateways start with it: the DAM_ variable, else a config file's [limits], else
# the built-in default. (The dam may change it later at runtime; this is only for sizing file limits.)
max_open_streams_setting() {
    if [[ -n "${DAM_LIMITS__MAX_OPEN_STREAMS:-}" ]]; then
        echo "$DAM_LIMITS__MAX_OPEN_STREAMS"
        return
    fi
    local config_dir="${DAM_CONFIG_DIR:-$ROOT/config}" file value setting=10000
    for file in "$config_dir"/*.toml; do
        [[ -f "$file" ]] || continue
        value="$(awk '/^[[:space:]]*\[/ { in_limits = ($0 ~ /^[[:space:]]*\[limits\][[:space:]]*$/) }
            in_limits && /^[[:space:]]*max_open_streams[[:space:]]*=/ { sub(/^[^=]*=[[:space:]]*/, ""); sub(/[^0-9].*$/, ""); print }' \
            "$file" | tail -n 1)"
        [[ -n "$value" ]] && setting="$value"
    done
    echo "$setting"
}
# A gateway needs a descriptor per stream, plus nginx's idle keep-alive connections, Redis, its listener and logs.
GATEWAY_SPARE_OPEN_FILES=1024
MAX_OPEN_STREAMS="$(max_open_streams_setting)"
is_number "$MAX_OPEN_STREAMS" || die "limits.max_open_streams must be a whole number, got '$MAX_OPEN_STREAMS'"
# Raise the soft limit to the hard one: every process started below inherits it (nginx sets its workers' own).
open_files_hard_limit="$(ulimit -Hn)"
if [[ "$open_files_hard_limit" != unlimited ]] && ! ulimit -n "$open_files_hard_limit" 2>/dev/null; then
    log "could not raise the open-files soft limit ($(ulimit -n)) to the hard limit ($open_files_hard_limit)"
fi
OPEN_FILES_LIMIT="$(ulimit -n)"
[[ "$OPEN_FILES_LIMIT" == unlimited ]] && OPEN_FILES_LIMIT=1048576
if ((OPEN_FILES_LIMIT < MAX_OPEN_STREAMS + GATEWAY_SPARE_OPEN_FILES)); then
    log "open files: the limit is $OPEN_FILES_LIMIT per process (hard limit $open_files_hard_limit), below the $((MAX_OPEN_STREAMS + GATEWAY_SPARE_OPEN_FILES)) a gateway needs for limits.max_open_streams=$MAX_OPEN_STREAMS; past about $((OPEN_FILES_LIMIT > GATEWAY_SPARE_OPEN_FILES ? OPEN_FILES_LIMIT - GATEWAY_SPARE_OPEN_FILES : 0)) streams a gateway cannot accept connections. Raise the hard limit (ulimit -Hn as root, LimitNOFILE= in systemd, /etc/security/limits.conf) or lower DAM_LIMITS__MAX_OPEN_STREAMS"
fi

# ---------------------------------------------------------------------------------------------------------------
# System packages and binaries

if [[ "$SKIP_DEPS" != 1 ]]; then
    "$ROOT/deploy/install-system-packages.sh"
fi
NGINX_BIN="$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)"
[[ -x "$NGINX_BIN" ]] || die "nginx is not installed (run 'make deps')"
command -v redis-server >/dev/null 2>&1 || die "redis-server is not installed (run 'make deps')"
command -v curl >/dev/null 2>&1 || die "curl is not installed (run 'make deps')"

BINARIES=(gateway llm-worker dam mock-llm)
if [[ "$SKIP_BUILD" != 1 ]]; then
    cargo_arguments=(build)
    [[ "$PROFILE" == release ]] && cargo_arguments+=(--release)
    for binary in "${BINARIES[@]}"; do cargo_arguments+=(-p "$binary"); done
    log "building: cargo ${cargo_arguments[*]}"
    cargo "${cargo_arguments[@]}" || die "cargo build failed (see above)"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN_DIR="$TARGET_DIR/$PROFILE"
for binary in "${BINARIES[@]}"; do
    [[ -x "$BIN_DIR/$binary" ]] || die "$BIN_DIR/$binary is missing; build it (PROFILE=$PROFILE) or drop SKIP_BUILD"
done

# ---------------------------------------------------------------------------------------------------------------
# Starting and watching

mkdir -p "$LOG_DIR" "$PID_DIR" "$RUN_DIR/bin" "$RUN_DIR/redis" "$RUN_DIR/nginx/temp"
rm -f "$PID_DIR"/*.pid "$PID_DIR"/*.restarting
echo "$$" >"$SCRIPT_PID_FILE"

# Started processes in start order (parallel arrays).
STARTED_NAMES=()
STARTED_PIDS=()
declare -A PID_OF=()
declare -A NAME_OF_PID=()

# Starts one process in its own session (so a terminal's Ctrl-C reaches only this script, which then stops the
# stack in order), with its output in $LOG_DIR/<name>.log. Binaries run through a symlink in $RUN_DIR/bin, so
# each process's command line names the run directory (`pgrep -f $RUN_DIR` finds them all). Only the workers call
# the LLM, so only they get to see DAM_LLM__API_KEY.
start_process() {
    local name="$1"; shift
    local log_file="$LOG_DIR/$name.log" hide_key=(-u DAM_LLM__API_KEY)
    [[ "$name" == worker-* ]] && hide_key=()
    : >"$log_file"
    setsid env "${hide_key[@]}" "$@" </dev/null >>"$log_file" 2>&1 &
    local pid=$!
    STARTED_NAMES+=("$name")
    STARTED_PIDS+=("$pid")
    PID_OF[$name]="$pid"
    NAME_OF_PID[$pid]="$name"
    echo "$pid" >"$PID_DIR/$name.pid"
}

# Starts one of the cargo binaries under its instance name: start_service NAME BINARY [SETTING=value...] [-- ARG...],
# the settings for that instance only.
start_service() {
    local name="$1" binary="$2"; shift 2
    local settings=()
    while (($# > 0)) && [[ "$1" != "--" ]]; do settings+=("$1"); shift; done
    (($# > 0)) && shift
    ln -sfn "$BIN_DIR/$binary" "$RUN_DIR/bin/$name"
    # Each process is named in its logs, traces and (gateways) X-Dam-Instance by its name here: gateway-1, worker-2.
    start_process "$name" "DAM_TELEMETRY__INSTANCE=$name" "${settings[@]}" "$RUN_DIR/bin/$name" "$@"
}

show_log_tail() {
    local name="$1"
    log "last lines of $LOG_DIR/$name.log:"
    tail -n 25 "$LOG_DIR/$name.log" 2>/dev/null | sed 's/^/    /' >&2 || true
}

nginx_worker_pids() {
    local master="${PID_OF[nginx]:-}"
    if [[ -n "$master" ]]; then pgrep -P "$master" 2>/dev/null || true; fi
}

# The pid of the index-th started service now: the one its pid file names when that one is alive and belongs to
# this run (the service was started again by hand after it died), else the pid this script started.
current_pid() {
    local index="$1" name pid
    name="${STARTED_NAMES[index]}"
    pid="$(cat "$PID_DIR/$name.pid" 2>/dev/null || true)"
    if [[ -n "$pid" && "$pid" != "${STARTED_PIDS[index]}" ]] && is_number "$pid" && is_alive "$pid" \
        && belongs_to_run_dir "$pid"; then
        echo "$pid"
    else
        echo "${STARTED_PIDS[index]}"
    fi
}

# Stops everything started, in the order that loses no work: nginx and gateways (no new chats), then workers and
# dam (running jobs finish or go back to the queue while Redis and the LLM are still up), then mock-llm and Redis.
STOPPING=0
stop_everything() {
    ((STOPPING)) && return 0
    STOPPING=1
    trap '' INT TERM HUP
    ((${#STARTED_PIDS[@]} > 0)) || { rm -f "$SCRIPT_PID_FILE"; return 0; }
    log "stopping the stack"
    local clean=1 phase_pids name pid nginx_workers stop_started="${EPOCHREALTIME/,/.}"
    nginx_workers="$(nginx_worker_pids)"
    for phase in "monitoring nginx gateway-" "worker- dam" "mock-llm redis"; do
        phase_pids=()
        for ((index = 0; index < ${#STARTED_NAMES[@]}; index++)); do
            name="${STARTED_NAMES[index]}"
            for prefix in $phase; do
                [[ "$name" == "$prefix"* ]] && phase_pids+=("$(current_pid "$index")")
            done
        done
        ((${#phase_pids[@]} > 0)) || continue
        stop_pids "$phase" "${phase_pids[@]}" || clean=0
    done
    # nginx workers exit with their master; make sure of it.
    for pid in $nginx_workers; do
        if is_alive "$pid"; then stop_pids "nginx workers" "$pid" || clean=0; fi
    done
    local left=()
    for ((index = 0; index < ${#STARTED_NAMES[@]}; index++)); do
        pid="$(current_pid "$index")"
        is_alive "$pid" && left+=("$pid")
    done
    for pid in "${STARTED_PIDS[@]}" $nginx_workers; do is_alive "$pid" && left+=("$pid"); done
    if ((${#left[@]} > 0)); then
        log "error: processes still alive after SIGKILL: ${left[*]}"
        return 1
    fi
    rm -f "$PID_DIR"/*.pid "$SCRIPT_PID_FILE"
    local took
    took="$(awk -v start="$stop_started" -v end="${EPOCHREALTIME/,/.}" 'BEGIN {printf "%.1f", end - start}')"
    if ((clean)); then
        log "stopped: every process exited (${took}s)"
    else
        log "stopped: every process exited, some only to SIGKILL (${took}s)"
    fi
}

on_signal() {
    log "received SIG$1"
    stop_everything || exit 1
    exit 0
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
trap 'stop_everything' EXIT

# Waits until every check named in $@ ("name|kind|target") passes, within what is left of READY_TIMEOUT_S.
# kind: http (curl answers 2xx) or redis (PING answers PONG) or alive (the process lives for a moment).
READY_DEADLINE=0
wait_until_ready() {
    local pending=("$@") check name kind target still
    while ((${#pending[@]} > 0)); do
        still=()
        for check in "${pending[@]}"; do
            IFS='|' read -r name kind target <<<"$check"
            if ! is_alive "${PID_OF[$name]}"; then
                show_log_tail "$name"
                die "$name exited during startup (log: $LOG_DIR/$name.log)"
            fi
            case "$kind" in
                http) curl -fsS -o /dev/null --max-time 2 "$target" 2>/dev/null || still+=("$check") ;;
                redis) [[ "$(redis-cli -h 127.0.0.1 -p "$target" ping 2>/dev/null)" == PONG ]] || still+=("$check") ;;
                alive) ;;
            esac
        done
        pending=("${still[@]+"${still[@]}"}")
        ((${#pending[@]} == 0)) && break
        if ((SECONDS >= READY_DEADLINE)); then
            for check in "${pending[@]}"; do
                IFS='|' read -r name kind target <<<"$check"
                log "$name is not ready: $kind check of $target fails"
                show_log_tail "$name"
            done
            die "the stack was not ready within ${READY_TIMEOUT_S}s"
        fi
        sleep 0.2
    done
}

READY_DEADLINE=$((SECONDS + READY_TIMEOUT_S))
log "starting in $RUN_DIR (profile $PROFILE, $SCALE_GATEWAY gateways, $SCALE_WORKER workers)"

# The dam's state lives only in Redis, so Redis persists it: an append-only file fsynced every second (a crash of
# the machine loses at most about the last second of writes; a crash of Redis alone loses nothing it answered), no
# RDB snapshots. noeviction: a full Redis refuses writes (admission answers 503) rather than silently dropping a
# queue, a job's state or a budget.
start_process redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly yes --appendfsync everysec --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy noeviction \
    --dir "$RUN_DIR/redis" --daemonize no --set-proc-title no --logfile ""
wait_until_ready "redis|redis|$REDIS_PORT"

ready_checks=()
if ((USE_MOCK_LLM)); then
    start_service mock-llm mock-llm
    ready_checks+=("mock-llm|http|http://127.0.0.1:$MOCK_LLM_PORT/healthz")
else
    api_key_state="not set"
    [[ -n "${DAM_LLM__API_KEY:-}" ]] && api_key_state="set"
    log "real LLM at $DAM_LLM__BASE_URL (api key $api_key_state), model $SERVED_MODEL; mock-llm is not started"
fi
start_service dam dam -- serve
ready_checks+=("dam|http|http://127.0.0.1:$ADMIN_PORT/readyz")
# Runtime threads: the gateways share the machine's cores (at least one thread each) rather than each starting one
# thread per core; a worker runs on one thread (worker.runtime_threads). A DAM_ setting wins.
cores="$(nproc 2>/dev/null || echo 1)"
export DAM_GATEWAY__RUNTIME_THREADS="${DAM_GATEWAY__RUNTIME_THREADS:-$(((cores / SCALE_GATEWAY) > 1 ? cores / SCALE_GATEWAY : 1))}"
for ((index = 0; index < SCALE_GATEWAY; index++)); do
    name="gateway-$((index + 1))"
    start_service "$name" gateway "DAM_GATEWAY__PORT=${GATEWAY_PORTS[index]}"
    ready_checks+=("$name|http|http://127.0.0.1:${GATEWAY_PORTS[index]}/readyz")
done
for ((index = 1; index <= SCALE_WORKER; index++)); do
    start_service "worker-$index" llm-worker "DAM_WORKER__PORT=${WORKER_PORT_LIST[index - 1]}"
    ready_checks+=("worker-$index|http|http://127.0.0.1:${WORKER_PORT_LIST[index - 1]}/readyz")
done
wait_until_ready "${ready_checks[@]}"

"$ROOT/deploy/nginx/render-nginx-conf.sh" --prefix "$RUN_DIR/nginx" --log-dir "$LOG_DIR" \
    --public-port "$PUBLIC_PORT" --gateway-ports "${GATEWAY_PORTS[*]}" \
    --gateway-max-body-bytes "${DAM_GATEWAY__MAX_BODY_BYTES:-262144}" \
    --streams "$((SCALE_GATEWAY * MAX_OPEN_STREAMS))" >"$RUN_DIR/nginx/nginx.conf"
"$NGINX_BIN" -t -q -p "$RUN_DIR/nginx/" -c "$RUN_DIR/nginx/nginx.conf" -e "$LOG_DIR/nginx-error.log" \
    || die "nginx refused $RUN_DIR/nginx/nginx.conf (see above)"
start_process nginx "$NGINX_BIN" -p "$RUN_DIR/nginx/" -c "$RUN_DIR/nginx/nginx.conf" -e "$LOG_DIR/nginx-error.log"
# Through nginx to a gateway's readiness: the whole public path answers.
wait_until_ready "nginx|http|http://127.0.0.1:$PUBLIC_PORT/readyz"
# Every service still ready now that nginx is up (none died meanwhile).
wait_until_ready "${ready_checks[@]}"

public_url="http://127.0.0.1:$PUBLIC_PORT"
cat <<EOF

  Traffic Dam is up: open $public_url/

  Browser flow (queue a chat, then stream its events):
    curl -N "$public_url\$(curl -sS $public_url/api/chats -H 'content-type: application/json' \\
      -d '{"message":"Hello"}' | sed -E 's/.*"events_url":"([^"]+)".*/\\1/')"

  OpenAI-compatible API:
    curl -N $public_url/v1/chat/completions -H 'content-type: application/json' \\
      -d '{"model":"$SERVED_MODEL","stream":true,"messages":[{"role":"user","content":"Hello"}]}'

  OpenAI Python SDK (pip install openai):
    from openai import OpenAI
    client = OpenAI(base_url="$public_url/v1", api_key="unused")
    for chunk in client.chat.completions.create(model="$SERVED_MODEL", stream=True,
                                                messages=[{"role": "user", "content": "Hello"}]):
        print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="", flush=True)

  nginx $public_url -> gateways ${GATEWAY_PORTS[*]} (127.0.0.1); $SCALE_WORKER workers; redis 127.0.0.1:$REDIS_PORT
EOF
for ((index = 0; index < SCALE_WORKER; index++)); do
    echo "  worker-$((index + 1)): http://127.0.0.1:${WORKER_PORT_LIST[index]}/metrics (and /healthz, /readyz)"
done
cat <<EOF
  dam admin (loopback only, not behind nginx): http://127.0.0.1:$ADMIN_PORT/readyz
    and its CLI: $BIN_DIR/dam --url http://127.0.0.1:$ADMIN_PORT status
EOF
((USE_MOCK_LLM)) && echo "  mock LLM: http://127.0.0.1:$MOCK_LLM_PORT/v1 (stats: http://127.0.0.1:$MOCK_LLM_PORT/stats)"
cat <<EOF
  logs: $LOG_DIR/   pids: $PID_DIR/
  Ctrl-C stops everything.

EOF

# MONITORING=1 (`make run-monitoring`): mtail, Prometheus and Alertmanager beside the stack, under one supervisor
# stopped first with it. Its knobs (PROMETHEUS_PORT, ...) are at the top of deploy/monitoring/start-monitoring.sh.
if [[ "${MONITORING:-0}" == 1 ]]; then
    start_process monitoring "$ROOT/deploy/monitoring/start-monitoring.sh" --run-dir "$RUN_DIR" \
        --gateway-ports "${GATEWAY_PORTS[*]}" --worker-ports "${WORKER_PORT_LIST[*]}" --dam-port "$ADMIN_PORT"
    READY_DEADLINE=$((SECONDS + READY_TIMEOUT_S))
    wait_until_ready "monitoring|http|http://127.0.0.1:${PROMETHEUS_PORT:-9291}/-/ready"
    cat "$RUN_DIR/monitoring/banner.txt"
fi

# Serve until a signal arrives (the traps stop the stack and exit). A process that ends on its own is reported and
# the rest keep serving, so one gateway can be stopped to watch nginx fail over; when none is left, so is this.
waiting_pids=("${STARTED_PIDS[@]}")
for ((round = 0; round < ${#STARTED_PIDS[@]}; round++)); do
    exited_pid=""
    status=0
    wait -n -p exited_pid "${waiting_pids[@]}" || status=$?
    [[ -n "$exited_pid" ]] || break
    name="${NAME_OF_PID[$exited_pid]:-pid $exited_pid}"
    if [[ -e "$PID_DIR/$name.restarting" ]]; then
        # deploy/rolling-restart.sh stopped it and starts it again (the new pid goes to its pid file).
        log "$name (pid $exited_pid) stopped for a restart by deploy/rolling-restart.sh"
    else
        log "$name exited on its own with status $status; the rest keep running"
        show_log_tail "$name"
    fi
    # Only if the file still names the process that exited: one started again in its place keeps its pid file.
    [[ "$(cat "$PID_DIR/$name.pid" 2>/dev/null || true)" == "$exited_pid" ]] && rm -f "$PID_DIR/$name.pid"
    still_waiting=()
    for pid in "${waiting_pids[@]}"; do [[ "$pid" == "$exited_pid" ]] || still_waiting+=("$pid"); done
    ((${#still_waiting[@]} > 0)) || break
    waiting_pids=("${still_waiting[@]}")
done
# Services started again by hand are not this shell's children: serve on while any of them runs.
while true; do
    running=0
    for ((index = 0; index < ${#STARTED_NAMES[@]}; index++)); do
        is_alive "$(current_pid "$index")" && running=1 && break
    done
    ((running)) || break
    sleep 1
done
log "every process has exited"
exit 1
