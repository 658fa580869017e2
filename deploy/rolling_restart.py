"""Restarts every gateway and then every worker, one at a time, so that the stack keeps serving throughout: for
`make run`'s processes (--local, deploy/rolling_restart_local.py) or for the compose services `gateway` and `worker`
(--compose, deploy/rolling_restart_compose.py, UNTESTED against Docker: see its header). Run with --help; `make
rolling-restart` runs it through deploy/rolling-restart.sh. This file holds the arguments and the exit statuses."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from captured_process import is_whole_number  # noqa: E402 - the modules beside this one
from restart_progress import CurrentStep, RollingRestartError, print_error  # noqa: E402
from rolling_restart_compose import ComposeRollingRestart  # noqa: E402
from rolling_restart_local import LocalRollingRestart  # noqa: E402

USAGE = """\
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
                           UNTESTED: see the header of deploy/rolling_restart_compose.py)
  -f, --file FILE          a compose file (repeatable; default deploy/compose.yaml)
  --project-directory DIR  compose's project directory
  -p, --project-name NAME  compose's project name
  --ready-timeout S        longest wait for a restarted process (or new container) to be ready (default 120)
  --stop-margin S          added to the drain setting to bound the wait for an exit (default 10); past it: SIGKILL
  --settle S               compose only: seconds to wait after a gateway change, so the edge, which re-resolves
                           the gateways' DNS name, sees it (default 5)
  -h, --help               this text

The stop bound of a gateway is gateway.shutdown_drain_s plus the margin, of a worker worker.drain_timeout_s
(make run sets 5) plus the margin. --local reads them, and each process's address, with `dam settings` run in
the process's own environment and directory; --compose reads the drain settings from each container's
environment, else their defaults (10 and 30).

Exit status: 0 when every process came back ready; 1 when one did not (the message says which, and the rest
are left as they were)."""

DEFAULT_RUN_DIR = ".run"
# The options that take a value, and the field each one sets.
VALUE_OPTIONS = {
    "--run-dir": "run_dir", "-f": "compose_files", "--file": "compose_files",
    "--project-directory": "project_directory", "-p": "project_name", "--project-name": "project_name",
    "--ready-timeout": "ready_timeout_s", "--stop-margin": "stop_margin_s", "--settle": "settle_s",
}
# The options that take seconds, in the order they are checked.
SECONDS_OPTIONS = (("--ready-timeout", "ready_timeout_s"), ("--stop-margin", "stop_margin_s"),
                   ("--settle", "settle_s"))


class HelpWanted(Exception):
    """--help was given: print the usage and exit with 0."""


@dataclass
class Options:
    mode: str = ""
    run_dir: str = DEFAULT_RUN_DIR
    compose_files: list[str] = field(default_factory=list)
    project_directory: str = ""
    project_name: str = ""
    ready_timeout_s: str = "120"
    stop_margin_s: str = "10"
    settle_s: str = "5"

    def choose_mode(self, mode: str) -> None:
        if self.mode not in ("", mode):
            raise RollingRestartError("--local and --compose exclude each other")
        self.mode = mode


def parse_arguments(arguments: list[str]) -> Options:
    """The options, checked; RollingRestartError when they do not make sense, HelpWanted on -h or --help."""
    options = Options()
    remaining = list(arguments)
    while remaining:
        argument = remaining.pop(0)
        if argument in ("--local", "--compose"):
            options.choose_mode(argument.removeprefix("--"))
        elif argument in ("-h", "--help"):
            raise HelpWanted()
        elif argument in VALUE_OPTIONS:
            if not remaining:
                raise RollingRestartError(f"{argument} needs a value (see --help)")
            name, value = VALUE_OPTIONS[argument], remaining.pop(0)
            if name == "compose_files":
                options.compose_files.append(value)
            else:
                setattr(options, name, value)
        else:
            raise RollingRestartError(f"unknown argument '{argument}' (see --help)")
    if not options.mode:
        raise RollingRestartError("say --local or --compose (see --help)")
    for option, name in SECONDS_OPTIONS:
        if not is_whole_number(getattr(options, name)):
            raise RollingRestartError(f"{option} must be a whole number of seconds, got '{getattr(options, name)}'")
    if options.mode == "local" and (options.compose_files or options.project_directory or options.project_name):
        raise RollingRestartError("-f, --project-directory and -p go with --compose")
    if options.mode == "compose" and options.run_dir != DEFAULT_RUN_DIR:
        raise RollingRestartError("--run-dir goes with --local")
    return options


def main(arguments: list[str]) -> int:
    # Until the restarts begin, Ctrl-C ends the script at once, as for any command; from then on it names the step.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    steps = CurrentStep()
    try:
        options = parse_arguments(arguments)
        if options.mode == "local":
            LocalRollingRestart(options.run_dir, int(options.ready_timeout_s), int(options.stop_margin_s),
                                steps).run()
        else:
            ComposeRollingRestart(options.compose_files, options.project_directory, options.project_name,
                                  int(options.ready_timeout_s), int(options.stop_margin_s), int(options.settle_s),
                                  steps).run()
    except HelpWanted:
        print(USAGE, flush=True)
    except RollingRestartError as error:
        print_error(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
