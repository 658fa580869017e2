"""Fault test: `deploy/rolling-restart.sh --local` restarts every gateway and then every worker, one at a time, under
a steady chat load through nginx: browser-style clients (EventSource-like, resuming with `Last-Event-ID`) and
OpenAI-compatible streaming clients (which cannot resume). No chat may be lost or duplicated, and no client may see
an error: no failed or refused POST, no refused stream reconnect, no error event, every OpenAI stream whole."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
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


@dataclass
class Rounds:
    """What the rounds saw: how many ran, how long each took, the load when each began, SIGKILLs the script sent."""

    done: int = 0
    seconds: list[float] = field(default_factory=list)
    streams_open_at_start: int = 0
    jobs_running_at_start: int = 0
    kills_reported: int = 0


def run(long: bool) -> ScenarioResult:
    result = ScenarioResult("rolling_restart")
    rounds_wanted = LONG_ROUNDS if long else SHORT_ROUNDS
    with start_chaos_stack("rolling_restart", gateways=GATEWAYS, workers=WORKERS, result=result) as chaos:
        restarted = [f"gateway-{index}" for index in range(1, GATEWAYS + 1)]
        restarted += [f"worker-{index}" for index in range(1, WORKERS + 1)]
        chats = LoadUnderFaults(chaos, "rolling", BROWSER_CLIENTS, directive=SLOW_ANSWER).start()
        openai = OpenAiStreamingLoad(chaos.base_url, "rolling", OPENAI_CLIENTS, directive=SLOW_ANSWER).start()
        rounds = Rounds()
        for round_number in range(1, rounds_wanted + 1):
            time.sleep(LOAD_BEFORE_ROUND_S)
            run_one_round(chaos, result, round_number, restarted, rounds)

        openai_outcomes = openai.stop()
        # Redis's count includes the OpenAI clients' chats: compared below, with both kinds of clients.
        outcomes = chats.stop_and_check(result, rounds.done * len(restarted), ledger_reads_must_succeed=True)
        result.figures.update(summarize_openai(openai_outcomes))
        result.figures.update(
            rounds=rounds.done,
            rolling_restart_seconds=rounds.seconds,
            streams_open_when_rounds_began=rounds.streams_open_at_start,
            jobs_running_when_rounds_began=rounds.jobs_running_at_start,
            sigkills_reported=rounds.kills_reported,
            create_failures=sum(1 for outcome in outcomes if outcome.create_status != 202),
            error_events=sum(1 for outcome in outcomes if (outcome.ended or "").startswith("error")),
        )
        evidence = nginx_error_evidence(chaos, result.figures)
        check_no_client_saw_the_restarts(result, outcomes, evidence)
        check_the_rounds_proved_something(result, rounds, rounds_wanted)
    return result


def run_one_round(chaos, result: ScenarioResult, round_number: int, restarted: list[str], rounds: Rounds) -> None:
    """One run of the script: every process in `restarted` must come back as a new pid, launched exactly as
    before (same command line and environment)."""
    pids_before = {name: chaos.pid(name) for name in restarted}
    launches_before = {name: read_launch(pids_before[name]) for name in restarted}
    rounds.streams_open_at_start += sum(chaos.open_streams(f"gateway-{index}") for index in range(1, GATEWAYS + 1))
    status = chaos.admin_status()
    rounds.jobs_running_at_start += status["jobs_running"] if status else 0

    output_path = chaos.run_dir.parent / f"rolling-restart-{round_number}.log"
    started = time.monotonic()
    exit_status = run_rolling_restart(chaos.run_dir, output_path)
    rounds.seconds.append(round(time.monotonic() - started, 1))
    output = output_path.read_text(errors="replace")
    print(indent(output), flush=True)
    rounds.done += 1
    rounds.kills_reported += output.count("sending SIGKILL")

    result.check(exit_status == 0, f"round {round_number}: rolling-restart.sh exited with {exit_status}: "
                                   f"{last_lines(output, 6)}")
    pids_after = chaos.adopt_pid_files()
    for name in restarted:
        new_pid = pids_after.get(name)
        replaced = new_pid is not None and new_pid != pids_before[name] and chaos.alive(name)
        result.check(replaced, f"round {round_number}: {name} was not replaced (pid {pids_before[name]} before, "
                               f"{new_pid} after, alive: {chaos.alive(name)})")
        if replaced:
            command, environment = read_launch(new_pid)
            result.check(command == launches_before[name][0],
                         f"round {round_number}: {name} restarted with another command line: {command}")
            result.check(environment == launches_before[name][1],
                         f"round {round_number}: {name} restarted with another environment (differing: "
                         f"{differing_names(environment, launches_before[name][1])})")


def nginx_error_evidence(chaos, figures: dict) -> str:
    """What nginx answered with an error, and why (its error log names the upstream and what went wrong)."""
    nginx_errors = [line for line in chaos.log("nginx-access").splitlines() if '" 502 ' in line or '" 504 ' in line]
    upstream_failures = [line for line in chaos.log("nginx-error").splitlines()
                         if "prematurely closed" in line or "reset by peer" in line]
    figures.update(nginx_502_or_504=len(nginx_errors), nginx_upstream_closed_or_reset=len(upstream_failures))
    if not nginx_errors:
        return ""
    return f" nginx: {' | '.join(nginx_errors[:3])}; {' | '.join(upstream_failures[:3])}"


def check_no_client_saw_the_restarts(result: ScenarioResult, outcomes, evidence: str) -> None:
    figures = result.figures
    clients_admitted = figures["admitted"] + figures["openai_admitted"]
    result.check(figures["redis_admitted"] == clients_admitted,
                 f"Redis admitted {figures['redis_admitted']} chats, the clients {clients_admitted} "
                 f"({figures['admitted']} browser, {figures['openai_admitted']} OpenAI)")
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


def check_the_rounds_proved_something(result: ScenarioResult, rounds: Rounds, rounds_wanted: int) -> None:
    figures = result.figures
    result.check(rounds.done == rounds_wanted, f"only {rounds.done} of {rounds_wanted} rounds ran")
    result.check(rounds.kills_reported == 0, f"rolling-restart.sh had to SIGKILL {rounds.kills_reported} "
                                             "processes: a drain overran its bound")
    result.check(figures["admitted"] > 0 and figures["openai_complete"] > 0, "no load ran: the test proved nothing")
    result.check(rounds.streams_open_at_start > 0, "no round began with a stream open: the test proved nothing")
    # A stopping gateway ends browser streams at once and their clients resume on another gateway: streams
    # were open, so some clients must have moved.
    result.check(figures["reconnects"] > 0,
                 "no browser client reconnected although gateways stopped with streams open: their streams "
                 "were not moved to another gateway")


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
