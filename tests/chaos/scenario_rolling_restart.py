"""Fault test: `deploy/rolling-restart.sh --local` restarts every gateway and then every worker, one at a time, under
a steady chat load through nginx: browser-style clients (EventSource-like, resuming with `Last-Event-ID`) and
OpenAI-compatible streaming clients (which cannot resume). No chat may be lost or duplicated, and no client may see
an error: no failed or refused POST, no refused stream reconnect, no error event, every OpenAI stream whole."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from chaos_stack import ROOT, ScenarioResult, start_chaos_stack
from chat_clients import SLOW_ANSWER, LoadUnderFaults
from openai_stream_clients import OpenAiStreamingLoad, summarize_openai

DESCRIPTION = "deploy/rolling-restart.sh --local under steady load: every gateway and worker replaced, no client error"
ROLLING_RESTART_SCRIPT = ROOT / "deploy" / "rolling-restart.sh"
GATEWAYS = 2
WORKERS = 2
BROWSER_CLIENTS = 12
OPENAI_CLIENTS = 4
SHORT_ROUNDS = 1
LONG_ROUNDS = 3
# Load before the first round and between rounds, so every restart finds streams mid-answer (SLOW_ANSWER: ~3 s).
LOAD_BEFORE_ROUND_S = 3.0
# One round stops four processes, each within its drain setting plus the script's margin (gateways 10 + 10 s,
# workers 5 + 10 s under make run's settings) and waits for each to be ready again (debug build): far below this.
ROUND_TIMEOUT_S = 240


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("rolling_restart")
    rounds_wanted = LONG_ROUNDS if long else SHORT_ROUNDS
    with start_chaos_stack("rolling_restart", gateways=GATEWAYS, workers=WORKERS, result=result) as chaos:
        restarted = [f"gateway-{index}" for index in range(1, GATEWAYS + 1)]
        restarted += [f"worker-{index}" for index in range(1, WORKERS + 1)]
        chats = LoadUnderFaults(chaos, "rolling", BROWSER_CLIENTS, directive=SLOW_ANSWER).start()
        openai = OpenAiStreamingLoad(chaos.base_url, "rolling", OPENAI_CLIENTS, directive=SLOW_ANSWER).start()
        round_seconds, streams_open_at_start, jobs_running_at_start, kills_reported = [], 0, 0, 0
        rounds = 0
        for round_number in range(1, rounds_wanted + 1):
            time.sleep(LOAD_BEFORE_ROUND_S)
            pids_before = {name: chaos.pid(name) for name in restarted}
            launches_before = {name: read_launch(pids_before[name]) for name in restarted}
            streams_open_at_start += sum(chaos.open_streams(f"gateway-{index}")
                                         for index in range(1, GATEWAYS + 1))
            status = chaos.admin_status()
            jobs_running_at_start += status["jobs_running"] if status else 0

            output_path = chaos.run_dir.parent / f"rolling-restart-{round_number}.log"
            started = time.monotonic()
            exit_status = run_rolling_restart(chaos.run_dir, output_path)
            round_seconds.append(round(time.monotonic() - started, 1))
            output = output_path.read_text(errors="replace")
            print(indent(output), flush=True)
            rounds += 1
            kills_reported += output.count("sending SIGKILL")

            result.check(exit_status == 0, f"round {round_number}: rolling-restart.sh exited with {exit_status}: "
                                           f"{last_lines(output, 6)}")
            pids_after = chaos.adopt_pid_files()
            for name in restarted:
                new_pid = pids_after.get(name)
                result.check(new_pid is not None and new_pid != pids_before[name] and chaos.alive(name),
                             f"round {round_number}: {name} was not replaced (pid {pids_before[name]} before, "
                             f"{new_pid} after, alive: {chaos.alive(name)})")
                if new_pid is not None and new_pid != pids_before[name] and chaos.alive(name):
                    command, environment = read_launch(new_pid)
                    result.check(command == launches_before[name][0],
                                 f"round {round_number}: {name} restarted with another command line: {command}")
                    result.check(environment == launches_before[name][1],
                                 f"round {round_number}: {name} restarted with another environment (differing: "
                                 f"{differing_names(environment, launches_before[name][1])})")

        openai_outcomes = openai.stop()
        # Redis's count includes the OpenAI clients' chats: compared below, with both kinds of clients.
        outcomes = chats.stop_and_check(result, rounds * len(restarted), ledger_reads_must_succeed=True)

        figures = result.figures
        figures.update(summarize_openai(openai_outcomes))
        figures.update(
            rounds=rounds,
            rolling_restart_seconds=round_seconds,
            streams_open_when_rounds_began=streams_open_at_start,
            jobs_running_when_rounds_began=jobs_running_at_start,
            sigkills_reported=kills_reported,
            create_failures=sum(1 for outcome in outcomes if outcome.create_status != 202),
            error_events=sum(1 for outcome in outcomes if (outcome.ended or "").startswith("error")),
        )
        # What nginx answered with an error, and why (its error log names the upstream and what went wrong).
        nginx_errors = [line for line in chaos.log("nginx-access").splitlines() if '" 502 ' in line or '" 504 ' in line]
        upstream_failures = [line for line in chaos.log("nginx-error").splitlines()
                             if "prematurely closed" in line or "reset by peer" in line]
        figures.update(nginx_502_or_504=len(nginx_errors), nginx_upstream_closed_or_reset=len(upstream_failures))
        evidence = ""
        if nginx_errors:
            evidence = f" nginx: {' | '.join(nginx_errors[:3])}; {' | '.join(upstream_failures[:3])}"
        clients_admitted = figures["admitted"] + figures["openai_admitted"]
        result.check(figures["redis_admitted"] == clients_admitted,
                     f"Redis admitted {figures['redis_admitted']} chats, the clients {clients_admitted} "
                     f"({figures['admitted']} browser, {figures['openai_admitted']} OpenAI)")
        result.check(rounds == rounds_wanted, f"only {rounds} of {rounds_wanted} rounds ran")
        result.check(kills_reported == 0, f"rolling-restart.sh had to SIGKILL {kills_reported} processes: a drain "
                                          f"overran its bound")
        result.check(figures["create_failures"] == 0,
                     f"{figures['create_failures']} chat creations failed or were refused: {figures['refused']}; "
                     f"{describe_create_failures(outcomes)}.{evidence}")
        result.check(figures["stream_requests_refused"] == 0,
                     f"{figures['stream_requests_refused']} stream reconnects were answered with an error status "
                     f"({figures['chats_an_eventsource_would_lose']} chats a browser would lose); reasons "
                     f"{figures['reconnect_reasons']}")
        result.check(figures["error_events"] == 0, f"{figures['error_events']} chats ended with an error event: "
                                                    f"{figures['ended']}")
        result.check(figures["openai_incomplete"] == 0,
                     f"{figures['openai_incomplete']} of {figures['openai_streams']} OpenAI streams were not whole: "
                     f"{figures['openai_problems']}.{evidence}")
        result.check(figures["admitted"] > 0 and figures["openai_complete"] > 0, "no load ran: the test proved nothing")
        result.check(streams_open_at_start > 0, "no round began with a stream open: the test proved nothing")
        # A stopping gateway ends browser streams at once and their clients resume on another gateway: streams
        # were open, so some clients must have moved.
        result.check(figures["reconnects"] > 0,
                     "no browser client reconnected although gateways stopped with streams open: their streams "
                     "were not moved to another gateway")
    return result


def run_rolling_restart(run_dir: Path, output_path: Path) -> int | str:
    """Runs the script (output to a file: the processes it starts must not hold a pipe of this test open);
    returns its exit status, or `timeout`."""
    with open(output_path, "wb") as output:
        try:
            done = subprocess.run(["bash", str(ROLLING_RESTART_SCRIPT), "--local", "--run-dir", str(run_dir)],
                                  cwd=ROOT, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  timeout=ROUND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "timeout"
    return done.returncode


def read_launch(pid: int) -> tuple[list[bytes], list[bytes]]:
    """A process's command line (in order) and environment (sorted: its order is not part of it), from /proc."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes().removesuffix(b"\0").split(b"\0")
    environment = sorted(entry for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if entry)
    return command, environment


def differing_names(first: list[bytes], second: list[bytes]) -> list[str]:
    """Names of the variables that differ (not their values, which may be secrets)."""
    return sorted({entry.split(b"=", 1)[0].decode("utf-8", "replace") for entry in set(first) ^ set(second)})


def describe_create_failures(outcomes, limit: int = 5) -> str:
    """The first failed creations: when the POST was sent (UTC, to match with the logs), status, seconds taken,
    body."""
    failed = [outcome for outcome in outcomes if outcome.create_status != 202]
    described = [f"at {wall_clock(outcome.created_at)} {outcome.create_status} after "
                 f"{outcome.create_seconds or 0:.2f}s: {one_line(outcome.create_body)}" for outcome in failed[:limit]]
    return "; ".join(described) or "none"


def one_line(body: object, limit: int = 160) -> str:
    """A response body on one line (nginx's 502 page is HTML), cut to `limit` characters."""
    return " ".join(str(body).split())[:limit]


def wall_clock(monotonic_time: float) -> str:
    """A time.monotonic() reading as UTC time of day."""
    wall = time.time() - (time.monotonic() - monotonic_time)
    return time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def last_lines(text: str, count: int) -> str:
    return " | ".join(text.strip().splitlines()[-count:])


if __name__ == "__main__":
    import sys

    from chaos_stack import run_scenario_alone

    sys.exit(run_scenario_alone(run))
