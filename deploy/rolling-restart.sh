#!/usr/bin/env bash
# `make rolling-restart`: restarts every gateway, then every worker, one at a time, with no downtime, for `make run`'s
# processes (--local) or the compose services (--compose, untested against Docker). The work is done by
# deploy/rolling_restart.py (run with --help for the options and exit statuses).
set -euo pipefail

exec python3 "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/rolling_restart.py" "$@"
