"""bench-flood: legitimate users chatting through nginx, first alone (the baseline), then under a flood from a few
source addresses (k6, loadtest/k6/flood.js) with the edge's and the gate's limits at their `make run` defaults:
what the users lose, which layer refused the flood, and what reached the LLM. Run through `make bench-flood`.

Knobs (environment): BENCH_FLOOD_USERS (50), BENCH_FLOOD_DURATION_S (measured seconds per phase, 30),
BENCH_FLOOD_WARM_UP_S (3), FLOOD_RATE (flood requests/s, 5000), BENCH_FLOOD_LOCAL_IPS (the flood's source
addresses, 127.0.0.250-127.0.0.254), BENCH_FLOOD_TTFT_MS (1000), BENCH_FLOOD_INTER_TOKEN_MS (25),
BENCH_FLOOD_TOKENS (100); SKIP_BUILD=1, CARGO_TARGET_DIR and BENCH_DAM_LOAD as for every bench.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import plots
from bench_report import write_results
from bench_stack import RESULTS, ROOT, Stack, all_work_finished, log, mock_stats, start_stack, wait_until
from load_generators import K6, dam_load_binary, metric, run_dam_load, summarize_load_report

# The targets for legitimate users under the flood.
LEGIT_ERROR_TARGET_PERCENT = 0.0
LEGIT_TTFT_P95_RATIO_TARGET = 1.2
# nginx's per-address limits at their defaults (deploy/nginx/render-nginx-conf.sh's, which an empty knob keeps),
# named here so the Stack does not lift them.
EDGE_DEFAULTS = {"EDGE_RATE_PER_SECOND": "", "EDGE_BURST": "", "EDGE_CONNECTIONS_PER_ADDRESS": ""}
# k6 needs a moment to start its VUs before the flood runs at its rate; the users' load starts after it.
FLOOD_LEAD_S = 2.0
# nginx writes its access log at the latest a second after a line is logged (`flush=1s`).
ACCESS_LOG_FLUSH_S = 1.5
# dam-load's pools bind 127.0.0.1 .. 127.0.0.N, with N at most this.
DAM_LOAD_MAX_SOURCE_ADDRESSES = 254


def bench_flood() -> None:
    users = int(os.environ.get("BENCH_FLOOD_USERS", "50"))
    duration_s = float(os.environ.get("BENCH_FLOOD_DURATION_S", "30"))
    warm_up_s = float(os.environ.get("BENCH_FLOOD_WARM_UP_S", "3"))
    flood_rate = int(os.environ.get("FLOOD_RATE", "5000"))
    flood_ips = os.environ.get("BENCH_FLOOD_LOCAL_IPS", "127.0.0.250-127.0.0.254")
    answer = {
        "time_to_first_token_ms": int(os.environ.get("BENCH_FLOOD_TTFT_MS", "1000")),
        "inter_token_delay_ms": int(os.environ.get("BENCH_FLOOD_INTER_TOKEN_MS", "25")),
        "tokens_per_answer": int(os.environ.get("BENCH_FLOOD_TOKENS", "100")),
    }
    # One address per user, as real users have, so each is one caller at the gate with the anonymous tier's
    # limits; past dam-load's most addresses, users share them (and a caller's limits).
    user_addresses = min(users, DAM_LOAD_MAX_SOURCE_ADDRESSES)
    legit_set = {ipaddress.IPv4Address("127.0.0.1") + index for index in range(user_addresses)}
    flood_set = address_range(flood_ips)
    if legit_set & flood_set:
        raise RuntimeError(f"the users' addresses (127.0.0.1-127.0.0.{user_addresses}) and the flood's ({flood_ips}) "
                           "overlap: lower BENCH_FLOOD_USERS or move BENCH_FLOOD_LOCAL_IPS")
    binary = dam_load_binary()
    settings = {
        **EDGE_DEFAULTS,
        # Only nginx may name a client in X-Forwarded-For: every caller is its source address.
        "DAM_AUTH__TRUSTED_PROXIES": "127.0.0.1/32",
        "DAM_MOCK_LLM__TIME_TO_FIRST_TOKEN_MS": str(answer["time_to_first_token_ms"]),
        "DAM_MOCK_LLM__INTER_TOKEN_DELAY_MS": str(answer["inter_token_delay_ms"]),
        "DAM_MOCK_LLM__TOKENS_PER_ANSWER": str(answer["tokens_per_answer"]),
    }
    stack = start_stack("flood", gateways=2, workers=2, settings=settings)
    access_log = stack.run_dir / "logs" / "nginx-access.log"
    try:
        common = dict(stack=stack, binary=binary, users=users, user_addresses=user_addresses, warm_up_s=warm_up_s,
                      duration_s=duration_s, access_log=access_log, flood_set=flood_set)
        baseline = run_phase("baseline", flood=None, **common)
        flood = run_phase("flood", flood={"rate": flood_rate, "local_ips": flood_ips}, **common)
    finally:
        stack.stop()
    figures = {
        "settings": {"users": users, "user_addresses": f"127.0.0.1-127.0.0.{user_addresses}",
                     "flood_addresses": flood_ips, "flood_rate_per_s": flood_rate, "duration_s": duration_s,
                     "warm_up_s": warm_up_s, "answer": answer, "stack_settings": settings,
                     "topology": "2 gateways, 2 workers (make run's)"},
        "baseline": baseline,
        "flood": flood,
    }
    figures["comparison"] = compare(baseline, flood)
    write_flood_charts(figures)
    write_results("bench-flood", figures, flood_markdown(figures))


def address_range(text: str) -> set[ipaddress.IPv4Address]:
    """`a.b.c.d-a.b.c.e` (k6's --local-ips form) or one address, as a set of addresses."""
    first, _, last = text.partition("-")
    start, end = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address((last or first).strip())
    if end < start:
        raise ValueError(f"{text}: the range ends before it starts")
    return {start + offset for offset in range(int(end) - int(start) + 1)}


def run_phase(name: str, flood: dict | None, stack: Stack, binary: Path, users: int, user_addresses: int,
              warm_up_s: float, duration_s: float, access_log: Path, flood_set: set) -> dict:
    """One phase: the users' closed loop (and the flood around it, if any); mock-llm's counts and nginx's access
    log are read before and after, once every admitted chat has ended."""
    wait_until("the stack is idle", 120, lambda: all_work_finished(stack))
    time.sleep(ACCESS_LOG_FLUSH_S)
    log_offset = access_log.stat().st_size if access_log.exists() else 0
    upstream_before = mock_stats(stack)
    started = time.monotonic()
    k6 = None
    summary_path = RESULTS / "bench-flood.k6.json"
    k6_duration = ""
    if flood:
        k6, k6_duration = start_flood(flood, stack.base_url, warm_up_s, duration_s, summary_path)
        time.sleep(FLOOD_LEAD_S)
    try:
        log(f"{name}: {users} users from 127.0.0.1-127.0.0.{user_addresses} through nginx")
        report, _cpu = run_dam_load(
            binary, ["closed-loop", "--url", stack.base_url, "--streams", str(users), "--source-addresses",
                     str(user_addresses), "--warm-up-s", str(warm_up_s), "--duration-s", str(duration_s),
                     "--label", f"flood-{name}"],
            RESULTS / f"bench-flood-{name}.dam-load.json", warm_up_s + duration_s + 180)
        if k6:
            k6.wait(timeout=FLOOD_LEAD_S + warm_up_s + duration_s + 120)
    finally:
        if k6 and k6.poll() is None:
            k6.kill()
            k6.wait(timeout=10)
    if k6 and k6.returncode not in (0, 99):
        # 99: thresholds crossed, which a flood's summary may well report; any other status is a failed run.
        raise RuntimeError(f"k6 exited with {k6.returncode}")
    wait_until("every admitted chat reached its end upstream", 180, lambda: all_work_finished(stack))
    elapsed_s = time.monotonic() - started
    upstream_after = mock_stats(stack)
    time.sleep(ACCESS_LOG_FLUSH_S)
    run = summarize_load_report(report)
    first_token = run["histograms"]["first_token"]
    ended = run["chats_ended"]
    upstream_requests = upstream_after["requests"] - upstream_before["requests"]
    phase = {
        "users": {
            "chats_per_s": run["chats_per_s"],
            "chats_done": run["chats_done"],
            "chats_ended": ended,
            "errors_percent": 100.0 * (ended - run["chats_done"]) / ended if ended else 100.0,
            "outcomes": run["outcomes"],
            "outcome_examples": run["outcome_examples"],
            "ttft_ms": {stat: first_token.get(f"{stat}_ms") for stat in ("p50", "p90", "p95", "p99", "max")},
            "lifetime_chats": report["lifetime"]["done"] + report["lifetime"]["failed"],
        },
        "upstream": {
            "requests": upstream_requests,
            "seconds": elapsed_s,
            "requests_per_s": upstream_requests / elapsed_s,
            "most_starts_in_one_second": upstream_after.get("max_starts_in_one_second"),
        },
        "access_log": read_access_log(access_log, log_offset, flood_set),
    }
    # What reached the LLM beyond the users' own chats (warm-up and drain included): none in the baseline, at most
    # the flood's admitted chats under it.
    phase["upstream"]["beyond_users"] = upstream_requests - phase["users"]["lifetime_chats"]
    if flood:
        phase["flood"] = flood_figures(flood, json.loads(summary_path.read_text()), k6_duration)
    log(f"{name}: users {phase['users']['chats_done']} done, {phase['users']['errors_percent']:.2f}% errors, "
        f"ttft p50/p95 {first_token['p50_ms']:.0f}/{first_token.get('p95_ms', float('nan')):.0f} ms; upstream "
        f"{phase['upstream']['requests_per_s']:.1f} requests/s"
        + (f"; flood sent {phase['flood']['sent']:.0f}: edge {phase['flood']['flood_refused_edge']:.0f}, gate "
           f"{phase['flood']['flood_refused_gate']:.0f}, admitted {phase['flood']['flood_admitted']:.0f}, other "
           f"{phase['flood']['flood_other']:.0f}" if flood else ""))
    return phase


def start_flood(flood: dict, base_url: str, warm_up_s: float, duration_s: float,
                summary_path: Path) -> tuple[subprocess.Popen, str]:
    """k6's flood.js in the background, for long enough to surround the users' run; the process and the DURATION
    it was given."""
    summary_path.unlink(missing_ok=True)
    k6_duration_s = FLOOD_LEAD_S + warm_up_s + duration_s + 2
    environment = dict(os.environ, BASE_URL=base_url, FLOOD_RATE=str(flood["rate"]),
                       DURATION=f"{k6_duration_s:.0f}s", LEGIT_VUS="0", SUMMARY_PATH=str(summary_path))
    command = [K6, "run", "--quiet", "--no-color", "--local-ips", flood["local_ips"],
               str(ROOT / "loadtest" / "k6" / "flood.js")]
    log(f"flood: k6 at {flood['rate']} requests/s from {flood['local_ips']} for {k6_duration_s:.0f} s")
    return subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL), environment["DURATION"]


def flood_figures(flood: dict, summary: dict, duration: str) -> dict:
    """The flood's requests by the layer that answered them, from k6's summary."""
    counts = {counter: metric(summary, counter) for counter in
              ("flood_admitted", "flood_refused_edge", "flood_refused_gate", "flood_other")}
    sent = sum(counts.values())
    seconds = float(re.sub(r"s$", "", duration))
    return {
        "asked_per_s": flood["rate"],
        "sent": sent,
        "sent_per_s": sent / seconds,
        "dropped_iterations": metric(summary, "dropped_iterations"),
        **counts,
        "refused_edge_share": counts["flood_refused_edge"] / sent if sent else 0.0,
        "refused_gate_share": counts["flood_refused_gate"] / sent if sent else 0.0,
        "admitted_share": counts["flood_admitted"] / sent if sent else 0.0,
    }


ACCESS_LINE = re.compile(
    r'^(?P<address>\S+) \[(?P<time>[^\]]+)\] "[^"]*" (?P<status>\d{3}) .* instance=(?P<instance>\S*)$')


def read_access_log(access_log: Path, offset: int, flood_set: set) -> dict:
    """nginx's lines since `offset`: counts by sender (flood or users) and outcome (admitted, refused by the edge,
    i.e. nginx answered with no gateway, refused by the gate, other), in all and per second."""
    if not access_log.exists():
        return {"available": False}
    with open(access_log, "rb") as log_file:
        log_file.seek(offset)
        text = log_file.read().decode(errors="replace")
    totals: Counter = Counter()
    per_second: dict[int, Counter] = {}
    for line in text.splitlines():
        found = ACCESS_LINE.match(line)
        if not found:
            continue
        sender = "flood" if ipaddress.ip_address(found["address"]) in flood_set else "users"
        outcome = access_outcome(int(found["status"]), found["instance"])
        key = f"{sender}_{outcome}"
        totals[key] += 1
        second = int(datetime.strptime(found["time"], "%d/%b/%Y:%H:%M:%S %z").timestamp())
        per_second.setdefault(second, Counter())[key] += 1
    first = min(per_second, default=0)
    return {"available": True, "totals": dict(totals),
            "per_second": [{"t_s": second - first, **counts} for second, counts in sorted(per_second.items())]}


def access_outcome(status: int, instance: str) -> str:
    if status < 400:
        return "admitted"
    # Every gateway answer names its instance; nginx's own answers (the edge's refusals among them) have `-`.
    if instance in ("", "-"):
        return "refused_edge" if status == 429 else "other"
    return "refused_gate" if status in (429, 503, 403) else "other"


def compare(baseline: dict, flood: dict) -> dict:
    base_p95, flood_p95 = baseline["users"]["ttft_ms"]["p95"], flood["users"]["ttft_ms"]["p95"]
    ratio = flood_p95 / base_p95 if base_p95 else None
    errors = flood["users"]["errors_percent"]
    return {
        "ttft_p95_ratio": ratio,
        "ttft_p50_ratio": (flood["users"]["ttft_ms"]["p50"] / baseline["users"]["ttft_ms"]["p50"]
                           if baseline["users"]["ttft_ms"]["p50"] else None),
        "errors_met": errors <= LEGIT_ERROR_TARGET_PERCENT,
        "ttft_p95_met": ratio is not None and ratio <= LEGIT_TTFT_P95_RATIO_TARGET,
    }


def write_flood_charts(figures: dict) -> None:
    percentiles = [("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)]
    machine = f"{os.cpu_count()} CPUs shared by the stack, the users' load generator and k6"
    charts = {
        "bench-flood-ttft.svg": {
            "title": "Legitimate users' time to first token: baseline and under the flood",
            "x_label": "percentile", "y_label": "TTFT (ms)",
            "series": [{"name": phase, "points": [[at, figures[phase]["users"]["ttft_ms"][stat]]
                                                  for stat, at in percentiles]}
                       for phase in ("baseline", "flood")],
            "note": machine,
        },
    }
    flood_log = figures["flood"]["access_log"]
    if flood_log.get("available") and flood_log["per_second"]:
        outcomes = ["flood_refused_edge", "flood_refused_gate", "flood_admitted", "flood_other", "users_admitted",
                    "users_refused_edge", "users_refused_gate", "users_other"]
        series = [{"name": outcome.replace("_", " "),
                   "points": [[row["t_s"], row.get(outcome, 0)] for row in flood_log["per_second"]]}
                  for outcome in outcomes
                  if any(row.get(outcome, 0) for row in flood_log["per_second"])]
        charts["bench-flood-outcomes.svg"] = {
            "title": "Requests per second at nginx by sender and outcome, flood phase",
            "x_label": "seconds since the phase's first request", "y_label": "requests per second",
            "series": series,
            "note": f"from nginx's access log; flood asked {figures['settings']['flood_rate_per_s']} requests/s",
        }
    for file_name, spec in charts.items():
        plots.write_chart(spec, RESULTS / file_name)
    figures["charts"] = sorted(charts)


def flood_markdown(figures: dict) -> str:
    settings, baseline, flood, comparison = (figures["settings"], figures["baseline"], figures["flood"],
                                             figures["comparison"])
    flood_counts = flood["flood"]
    ratio = comparison["ttft_p95_ratio"]
    log_totals = flood["access_log"].get("totals", {})
    log_check = ", ".join(f"{key.replace('_', ' ')} {count}" for key, count in sorted(log_totals.items())) or "-"
    sent = flood_counts["sent"] or 1
    reach_verdict = llm_reach_verdict(flood)
    return f"""# bench-flood ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})

{settings['users']} legitimate users (`dam-load closed-loop`, one source address each: \
{settings['user_addresses']}) chat through nginx for {settings['warm_up_s']:g} s unmeasured then \
{settings['duration_s']:g} s measured, first alone (baseline), then while k6 (`loadtest/k6/flood.js`, flood only) \
sends {settings['flood_rate_per_s']} requests/s from {settings['flood_addresses']}. The stack is `make run`'s \
(2 gateways, 2 workers) with nginx's per-address limits at their defaults (50 requests/s, burst 200, 500 in \
progress), the gate's per-caller limits at their defaults, and the gateways trusting only nginx \
(`auth.trusted_proxies = 127.0.0.1/32`), so every caller is its source address. mock-llm answers \
{settings['answer']['tokens_per_answer']} tokens, the first after {settings['answer']['time_to_first_token_ms']} ms, \
then {settings['answer']['inter_token_delay_ms']} ms apart. Machine: {os.cpu_count()} CPUs shared by all of it.

## Targets

| target | figure | |
|---|---|---|
| users' errors under the flood: {LEGIT_ERROR_TARGET_PERCENT:g}% | {flood['users']['errors_percent']:.2f}% \
(baseline {baseline['users']['errors_percent']:.2f}%) | {'met' if comparison['errors_met'] else '**not met**'} |
| users' TTFT p95 under the flood ≤ {LEGIT_TTFT_P95_RATIO_TARGET}× the baseline's | \
{'-' if ratio is None else f'{ratio:.2f}×'} ({flood['users']['ttft_ms']['p95']:.0f} / \
{baseline['users']['ttft_ms']['p95']:.0f} ms) | {'met' if comparison['ttft_p95_met'] else '**not met**'} |

## Legitimate users

| phase | chats done | failed | errors | TTFT p50 / p95 / p99 (ms) | chats/s | upstream requests/s (mock-llm) |
|---|---|---|---|---|---|---|
{users_table_row('baseline', baseline)}
{users_table_row('flood', flood)}

Outcomes under the flood: {flood['users']['outcomes']}.

## The flood, by the layer that answered (k6's counters)

| sent | per second (asked {settings['flood_rate_per_s']}) | refused by the edge (nginx) | refused by the gate | admitted | other | k6 dropped iterations |
|---|---|---|---|---|---|---|
| {flood_counts['sent']:.0f} | {flood_counts['sent_per_s']:.0f} | {flood_counts['flood_refused_edge']:.0f} \
({100 * flood_counts['flood_refused_edge'] / sent:.1f}%) | {flood_counts['flood_refused_gate']:.0f} \
({100 * flood_counts['flood_refused_gate'] / sent:.1f}%) | {flood_counts['flood_admitted']:.0f} \
({100 * flood_counts['flood_admitted'] / sent:.2f}%) | {flood_counts['flood_other']:.0f} | \
{flood_counts['dropped_iterations']:.0f} |

Cross-check from nginx's access log over the flood phase (edge = nginx answered 429 itself, no gateway named): \
{log_check}.

## What reached the LLM

mock-llm counted {baseline['upstream']['requests']} requests in the baseline phase \
({baseline['upstream']['requests_per_s']:.1f}/s) and {flood['upstream']['requests']} under the flood \
({flood['upstream']['requests_per_s']:.1f}/s), each phase from its start until every admitted chat had ended. \
Beyond the users' own chats (warm-up and drain included: {baseline['users']['lifetime_chats']} and \
{flood['users']['lifetime_chats']}), {baseline['upstream']['beyond_users']} requests reached it in the baseline and \
{flood['upstream']['beyond_users']} under the flood, against {flood_counts['flood_admitted']:.0f} flood chats the gate admitted (within the \
anonymous tier's limits of each flooding address): {reach_verdict}

## Charts

![Users' TTFT percentiles, baseline and flood](bench-flood-ttft.svg)

![Requests per second by outcome under the flood](bench-flood-outcomes.svg)
"""


def users_table_row(name: str, phase: dict) -> str:
    users = phase["users"]
    ttft = users["ttft_ms"]
    return (f"| {name} | {users['chats_done']} | {users['chats_ended'] - users['chats_done']} | "
            f"{users['errors_percent']:.2f}% | {ttft['p50']:.0f} / {ttft['p95']:.0f} / {ttft['p99']:.0f} | "
            f"{users['chats_per_s']:.1f} | {phase['upstream']['requests_per_s']:.1f} |")


def llm_reach_verdict(flood: dict) -> str:
    """Whether anything beyond the admitted flood chats reached mock-llm under the flood."""
    flood_counts = flood["flood"]
    refused = flood_counts["sent"] - flood_counts["flood_admitted"]
    if flood["upstream"]["beyond_users"] <= flood_counts["flood_admitted"]:
        return f"none of the {refused:.0f} refused flood requests reached it."
    return ("**more than the admitted flood chats reached it**: something other than the users and "
            "the admitted flood chats called the LLM in this phase.")
