#!/usr/bin/env bash
# `make run`: installs the system packages the local stack needs (unless SKIP_DEPS=1), then hands over to
# deploy/supervisor.py, which runs the topology of deploy/topology.toml in the foreground until Ctrl-C. Its knobs
# (SCALE_GATEWAY, PUBLIC_PORT, PROFILE, ...) are environment variables, listed with their defaults in
# deploy/topology.toml. `deploy/run-local.sh --clean` stops what a killed run left behind and removes RUN_DIR.
# A real LLM: DAM_LLM__BASE_URL=https://openrouter.ai/api/v1 DAM_LLM__API_KEY=sk-... make run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${SKIP_DEPS:-0}" != 1 && "${1:-}" != --clean ]]; then
    "$ROOT/deploy/install-system-packages.sh"
fi
exec python3 "$ROOT/deploy/supervisor.py" "$@"
