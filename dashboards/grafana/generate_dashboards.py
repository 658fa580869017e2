#!/usr/bin/env python3
"""Writes Traffic Dam's Grafana dashboards (dashboards/grafana/dashboards/*.json) from the panel lists below: the
overview that tells a flood's story row by row, and one dashboard per service. The committed JSON is what Grafana
reads; edit this file and run it again (`--check` fails when the JSON is out of date). Checking the dashboards
against the metric catalog is check_monitoring_config.py's job, not this file's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUTPUT_DIR = Path(__file__).resolve().parent / "dashboards"
# The uid of the datasource in provisioning/datasources/prometheus.yaml; panels name it through the `datasource`
# variable, so a Grafana with another Prometheus can pick it without editing every panel.
DATASOURCE_UID = "dam-prometheus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"
# Every refusal at the gate: anything the gate decided but to admit a chat or join it to a running one.
REFUSED = 'decision!~"admitted|joined"'
# The catalog's objective for the time to first token (alert DamTimeToFirstTokenSlow).
TTFT_OBJECTIVE_S = 3


def target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def quantiles(histogram: str, by: str = "", matchers: str = "", levels=(0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    """histogram_quantile at each level over the named histogram, one series per `by` label value."""
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (f"histogram_quantile({level}, sum by ({group}) (rate({histogram}_bucket{matchers}{RATE})))",
         f"p{round(level * 100)}{suffix}")
        for level in levels
    ]


class Dashboard:
    """Panels laid out left to right in rows of 24 columns, each row under a collapsible title."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str]):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.panels: list[dict] = []
        self.x = self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_height
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "id": len(self.panels) + 1, "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}})
        self.x, self.y, self.row_height = 0, self.y + 1, 0

    def panel(self, title: str, description: str, queries: list[tuple[str, str]], unit: str = "short",
              kind: str = "timeseries", width: int = 8, height: int = 8, stack: bool = False,
              threshold: float | None = None, mappings: list | None = None) -> None:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + self.row_height
            self.row_height = 0
        refs = "ABCDEFGHIJ"
        field_config: dict = {"defaults": {"unit": unit}, "overrides": []}
        if kind == "timeseries":
            field_config["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                                  "showPoints": "never",
                                                  "stacking": {"mode": "normal" if stack else "none"}}
        steps = [{"color": "green", "value": None}]
        if threshold is not None:
            steps.append({"color": "red", "value": threshold})
            if kind == "timeseries":
                field_config["defaults"]["custom"]["thresholdsStyle"] = {"mode": "line"}
        field_config["defaults"]["thresholds"] = {"mode": "absolute", "steps": steps}
        if mappings:
            field_config["defaults"]["mappings"] = mappings
        options: dict = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                         "tooltip": {"mode": "multi", "sort": "desc"}}
        if kind == "stat":
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "colorMode": "background", "graphMode": "none", "textMode": "auto"}
        self.panels.append({
            "type": kind, "title": title, "description": description, "id": len(self.panels) + 1,
            "datasource": DATASOURCE, "gridPos": {"x": self.x, "y": self.y, "w": width, "h": height},
            "targets": [target(expr, legend, refs[index]) for index, (expr, legend) in enumerate(queries)],
            "fieldConfig": field_config, "options": options,
        })
        self.x += width
        self.row_height = max(self.row_height, height)

    def to_json(self) -> dict:
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": self.tags,
            "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1, "timezone": "",
            "refresh": "10s", "time": {"from": "now-30m", "to": "now"}, "fiscalYearStartMonth": 0,
            "liveNow": False, "weekStart": "", "annotations": {"list": []}, "links": [
                {"title": "Traffic Dam", "type": "dashboards", "tags": ["traffic-dam"], "asDropdown": True}],
            "templating": {"list": [{
                "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                "current": {"selected": False, "text": "Traffic Dam Prometheus", "value": DATASOURCE_UID},
                "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False, "multi": False}]},
            "panels": self.panels,
        }


def redis_panels(board: Dashboard, job_matcher: str) -> None:
    board.panel("Redis script latency p99, by script", "One Lua script's round trip to Redis "
                "(dam_redis_script_duration_seconds).",
                quantiles("dam_redis_script_duration_seconds", "script", job_matcher, levels=(0.99,)), unit="s")
    board.panel("Redis script errors, by script and kind", "timeout/connection: Redis slow or away; server: "
                "Redis refused (maxmemory under noeviction). Alert: DamRedisErrors.",
                [(f"sum by (script, kind) (rate(dam_redis_script_errors_total{job_matcher}{RATE}))",
                  "{{script}} {{kind}}")], unit="ops")


def overview() -> Dashboard:
    board = Dashboard("dam-overview", "Traffic Dam: overview",
                      "The story of a flood, top to bottom: what came in, what was refused where and why, who waits "
                      "and how long, what the LLM did, and whether every instance is up.", ["traffic-dam"])
    overview_traffic_in(board)
    overview_refusals(board)
    overview_queue(board)
    overview_time_to_first_token(board)
    overview_llm(board)
    overview_instance_health(board)
    return board


def overview_traffic_in(board: Dashboard) -> None:
    board.row("Traffic in")
    board.panel("Requests at the edge, by status", "Every request nginx saw (dam_edge_requests_total, from its "
                "access log through mtail).",
                [(f"sum by (status) (rate(dam_edge_requests_total{RATE}))", "{{status}}")], unit="reqps", stack=True)
    board.panel("Requests the gateways answered, by route", "dam_gateway_http_requests_total by route template.",
                [(f"sum by (route) (rate(dam_gateway_http_requests_total{RATE}))", "{{route}}")], unit="reqps",
                stack=True)
    board.panel("Chats asked for, by flow", "Every chat request that reached the gate: browser (/api/chats) or "
                "openai (/v1/chat/completions).",
                [(f"sum by (flow) (rate(dam_gateway_admission_decisions_total{RATE}))", "{{flow}}")], unit="reqps",
                stack=True)


def overview_refusals(board: Dashboard) -> None:
    board.row("Admitted vs rejected, by layer and reason")
    board.panel("Refused share, by layer", "edge: answers nginx made itself with an error status; gate: the "
                "gate's refusals among its decisions. Alert: DamRejectionRatioSpike (gate over 25%).",
                [(f'sum(rate(dam_edge_requests_total{{layer="edge", status=~"4..|5.."}}{RATE})) '
                  f"/ sum(rate(dam_edge_requests_total{RATE}))", "edge"),
                 (f"sum(rate(dam_gateway_admission_decisions_total{{{REFUSED}}}{RATE})) "
                  f"/ sum(rate(dam_gateway_admission_decisions_total{RATE}))", "gate")],
                unit="percentunit", threshold=0.25)
    board.panel("Gate decisions", "admitted, joined (a duplicate joined to its running chat), rejected, "
                "too_many_connections, ...",
                [(f"sum by (decision) (rate(dam_gateway_admission_decisions_total{RATE}))", "{{decision}}")],
                unit="reqps", stack=True)
    board.panel("Gate refusals, by reason", "The refusal's code as the client saw it: rate_limited, "
                "too_many_active_chats, queue_full, upstream_unavailable, blocked, budget_exhausted, maintenance.",
                [(f"sum by (reason) (rate(dam_gateway_admission_decisions_total{{{REFUSED}}}{RATE}))",
                  "{{reason}}")], unit="reqps", stack=True)
    board.panel("Answered by nginx itself, by status", "The edge's own answers (layer=edge): bad requests, "
                "bodies far too large, 502/504 when no gateway could be reached, and its rate-limit refusals.",
                [(f'sum by (status) (rate(dam_edge_requests_total{{layer="edge"}}{RATE}))', "{{status}}")],
                unit="reqps", stack=True, width=12)
    board.panel("Gateway error answers, by code", "dam_gateway_errors_total: every error answer a gateway made, "
                "refusals included, by machine-readable code.",
                [(f"sum by (code) (rate(dam_gateway_errors_total{RATE}))", "{{code}}")], unit="reqps", stack=True,
                width=12)


def overview_queue(board: Dashboard) -> None:
    board.row("Queue: depth and wait, per lane")
    board.panel("Chats waiting, by lane", "dam_queue_depth, fleet-wide. Alert: DamQueueBacklogGrowing.",
                [("max by (lane) (dam_queue_depth)", "{{lane}}")])
    board.panel("Oldest waiting chat, by lane", "How long the chat at the head of each line has waited.",
                [("max by (lane) (dam_queue_oldest_wait_seconds)", "{{lane}}")], unit="s")
    board.panel("Queue wait p50/p95, by lane", "Admission to a worker's claim, first attempts only "
                "(dam_worker_queue_wait_seconds).",
                quantiles("dam_worker_queue_wait_seconds", "lane", levels=(0.5, 0.95)), unit="s")


def overview_time_to_first_token(board: Dashboard) -> None:
    board.row("Time to first token")
    board.panel("Time to first token p50/p95/p99", "A chat's creation to its first token leaving the gateway "
                f"(dam_gateway_time_to_first_token_seconds). The red line is the {TTFT_OBJECTIVE_S} s objective "
                "of alert DamTimeToFirstTokenSlow.",
                quantiles("dam_gateway_time_to_first_token_seconds"), unit="s", threshold=TTFT_OBJECTIVE_S,
                width=12)
    board.panel("The dam's own time p99, by stage", "What the dam adds: the gateway's admission and relay, the "
                "worker's start and writes (dam_gateway_added_latency_seconds, dam_worker_added_latency_seconds).",
                [(f"histogram_quantile(0.99, sum by (le, stage) "
                  f"(rate(dam_gateway_added_latency_seconds_bucket{RATE})))", "gateway {{stage}}"),
                 (f"histogram_quantile(0.99, sum by (le, stage) "
                  f"(rate(dam_worker_added_latency_seconds_bucket{RATE})))", "worker {{stage}}")],
                unit="s", width=12)


def overview_llm(board: Dashboard) -> None:
    board.row("LLM: throughput, errors, breaker")
    board.panel("LLM requests, by outcome", "Upstream requests: ok, error, throttled, timeout, cancelled "
                "(dam_worker_llm_requests_total).",
                [(f"sum by (outcome) (rate(dam_worker_llm_requests_total{RATE}))", "{{outcome}}")], unit="reqps",
                stack=True)
    board.panel("LLM tokens, in and out", "Tokens the upstream counted: in (prompt), out (completion).",
                [(f"sum by (direction) (rate(dam_worker_llm_tokens_total{RATE}))", "{{direction}}")], unit="short")
    board.panel("Upstream permit wait p95", "A claimed job's wait for an upstream start slot "
                "(dam_worker_permit_wait_seconds): the upstream's start rate is the limit when it grows.",
                quantiles("dam_worker_permit_wait_seconds", levels=(0.95,)), unit="s")
    board.panel("Circuit breaker", "1 while the upstream breaker is open: the LLM is not called. "
                "Alert: DamCircuitBreakerOpen.",
                [("max(dam_circuit_breaker_open)", "open")], kind="stat", width=6, height=5, threshold=1,
                mappings=[{"type": "value", "options": {"0": {"text": "closed"}, "1": {"text": "OPEN"}}}])
    board.panel("Jobs running", "Across all workers (dam_jobs_running).", [("max(dam_jobs_running)", "running")],
                kind="stat", width=6, height=5)
    board.panel("Dead letters", "Chats that failed for good. Alert: DamDeadLettersGrowing.",
                [("max(dam_dead_letters)", "dead letters")], kind="stat", width=6, height=5, threshold=1)
    board.panel("Worker jobs ended, by outcome", "dam_worker_jobs_total.",
                [(f"sum by (outcome) (rate(dam_worker_jobs_total{RATE}))", "{{outcome}}")], unit="ops", width=6,
                height=5, stack=True)


def overview_instance_health(board: Dashboard) -> None:
    board.row("Instance health")
    board.panel("Scrape targets up, by job", "up per job: 1 each. Alert: DamInstanceDown.",
                [('sum by (job) (up{job=~"gateway|worker|dam|edge"})', "{{job}} up"),
                 ('count by (job) (up{job=~"gateway|worker|dam|edge"})', "{{job}} configured")])
    board.panel("Workers alive", "Workers with a live heartbeat in Redis, and those whose heartbeat expired. "
                "Alert: DamNoWorkerAlive.",
                [("max(dam_workers_alive)", "alive"), ("max(dam_workers_presumed_dead)", "presumed dead")])
    board.panel("Open event streams, by gateway", "dam_gateway_open_streams.",
                [("sum by (instance) (dam_gateway_open_streams)", "{{instance}}")], stack=True)
    redis_panels(board, "")
    board.panel("Fleet signals", "Gateways' pub/sub connections (1 each), the dam's gauges fresh (1), intake "
                "paused (0 normally).",
                [("sum(dam_gateway_pubsub_connected)", "pub/sub connected"),
                 ("min(dam_fleet_gauges_fresh)", "fleet gauges fresh"),
                 ("max(dam_intake_paused)", "intake paused")])


def gateway() -> Dashboard:
    board = Dashboard("dam-gateway", "Traffic Dam: gateway", "Each gateway: requests, the gate, streams, the "
                      "gateway's own time, Redis.", ["traffic-dam", "gateway"])
    job = '{job="gateway"}'
    board.row("Requests")
    board.panel("Requests, by route and status", "dam_gateway_http_requests_total.",
                [(f"sum by (route, status) (rate(dam_gateway_http_requests_total{RATE}))", "{{route}} {{status}}")],
                unit="reqps", width=12)
    board.panel("Error answers, by code", "dam_gateway_errors_total.",
                [(f"sum by (code) (rate(dam_gateway_errors_total{RATE}))", "{{code}}")], unit="reqps", width=12)
    board.row("The gate")
    board.panel("Decisions, by decision and flow", "dam_gateway_admission_decisions_total.",
                [(f"sum by (decision, flow) (rate(dam_gateway_admission_decisions_total{RATE}))",
                  "{{decision}} {{flow}}")], unit="reqps")
    board.panel("Refusals, by reason", "The gate's refusals by code.",
                [(f"sum by (reason) (rate(dam_gateway_admission_decisions_total{{{REFUSED}}}{RATE}))",
                  "{{reason}}")], unit="reqps", stack=True)
    board.panel("Admission round trip p50/p99", "One admission's round trip to Redis (dam_gateway_admission_seconds).",
                quantiles("dam_gateway_admission_seconds", levels=(0.5, 0.99)), unit="s")
    board.row("Streams and time")
    board.panel("Open event streams, by instance", "dam_gateway_open_streams.",
                [("sum by (instance) (dam_gateway_open_streams)", "{{instance}}")])
    board.panel("Time to first token p95, by flow", "dam_gateway_time_to_first_token_seconds.",
                quantiles("dam_gateway_time_to_first_token_seconds", "flow", levels=(0.95,)), unit="s",
                threshold=TTFT_OBJECTIVE_S)
    board.panel("Gateway's own time p99, by stage", "admission: request read to answer head; relay: a stream "
                "message received to written (dam_gateway_added_latency_seconds).",
                quantiles("dam_gateway_added_latency_seconds", "stage", levels=(0.99,)), unit="s")
    board.panel("Cancellations and dropped streams", "Chats cancelled through the gateway; streams cut because "
                "their client fell behind.",
                [(f"sum(rate(dam_gateway_cancellations_total{RATE}))", "cancellations"),
                 (f"sum(rate(dam_gateway_lagging_streams_dropped_total{RATE}))", "lagging streams dropped")],
                unit="ops", width=12)
    board.panel("Pub/sub connected, by instance", "1 while the gateway's pub/sub connection to Redis is up. "
                "Alert: DamGatewayPubSubDisconnected.",
                [("min by (instance) (dam_gateway_pubsub_connected)", "{{instance}}")], width=12)
    board.row("Redis")
    redis_panels(board, job)
    return board


def worker() -> Dashboard:
    board = Dashboard("dam-worker", "Traffic Dam: llm-worker", "Each worker: jobs, waits, the upstream, Redis.",
                      ["traffic-dam", "worker"])
    job = '{job="worker"}'
    board.row("Jobs")
    board.panel("Jobs running, by instance", "dam_worker_jobs_running.",
                [("sum by (instance) (dam_worker_jobs_running)", "{{instance}}")], stack=True)
    board.panel("Jobs ended, by outcome", "dam_worker_jobs_total.",
                [(f"sum by (outcome) (rate(dam_worker_jobs_total{RATE}))", "{{outcome}}")], unit="ops", stack=True)
    board.panel("Jobs handed back or recovered, by outcome", "dam_worker_jobs_recovered_total; dead letters "
                "dropped past the cap (dam_dead_letters_dropped_total).",
                [(f"sum by (outcome) (rate(dam_worker_jobs_recovered_total{RATE}))", "{{outcome}}"),
                 (f"sum(rate(dam_dead_letters_dropped_total{RATE}))", "dead letters dropped")], unit="ops")
    board.row("Waits and the worker's own time")
    board.panel("Queue wait p50/p95, by lane", "Admission to the claim, first attempts only.",
                quantiles("dam_worker_queue_wait_seconds", "lane", levels=(0.5, 0.95)), unit="s")
    board.panel("Permit wait p50/p95", "A claimed job's wait for an upstream start slot.",
                quantiles("dam_worker_permit_wait_seconds", levels=(0.5, 0.95)), unit="s")
    board.panel("Worker's own time p99, by stage", "start: claim to upstream request, less the permit wait; "
                "write: a batch's write to Redis (dam_worker_added_latency_seconds).",
                quantiles("dam_worker_added_latency_seconds", "stage", levels=(0.99,)), unit="s")
    board.row("The upstream LLM")
    board.panel("LLM requests, by outcome", "dam_worker_llm_requests_total.",
                [(f"sum by (outcome) (rate(dam_worker_llm_requests_total{RATE}))", "{{outcome}}")], unit="reqps",
                stack=True)
    board.panel("LLM tokens, by direction", "dam_worker_llm_tokens_total.",
                [(f"sum by (direction) (rate(dam_worker_llm_tokens_total{RATE}))", "{{direction}}")])
    board.panel("Upstream retries", "Upstream attempts retried (dam_worker_upstream_retries_total).",
                [(f"sum(rate(dam_worker_upstream_retries_total{RATE}))", "retries")], unit="ops")
    board.row("Redis")
    redis_panels(board, job)
    return board


def dam_and_redis() -> Dashboard:
    board = Dashboard("dam-fleet", "Traffic Dam: dam and Redis", "The fleet as Redis holds it (the dam reads it "
                      "every few seconds), and every service's Redis scripts.", ["traffic-dam", "dam", "redis"])
    board.row("Queue")
    board.panel("Chats waiting, by lane", "dam_queue_depth.", [("max by (lane) (dam_queue_depth)", "{{lane}}")])
    board.panel("Oldest waiting chat, by lane", "dam_queue_oldest_wait_seconds.",
                [("max by (lane) (dam_queue_oldest_wait_seconds)", "{{lane}}")], unit="s")
    board.panel("Jobs running", "dam_jobs_running.", [("max(dam_jobs_running)", "running")])
    board.row("Fleet")
    board.panel("Workers", "Live heartbeats; expired heartbeats.",
                [("max(dam_workers_alive)", "alive"), ("max(dam_workers_presumed_dead)", "presumed dead")])
    board.panel("Dead letters", "dam_dead_letters.", [("max(dam_dead_letters)", "dead letters")], threshold=1)
    board.panel("Breaker, intake, freshness", "Breaker open (1), intake paused (1), gauges fresh (1 normally).",
                [("max(dam_circuit_breaker_open)", "breaker open"), ("max(dam_intake_paused)", "intake paused"),
                 ("min(dam_fleet_gauges_fresh)", "gauges fresh")])
    board.row("Redis scripts, every service")
    board.panel("Script latency p99, by job and script", "dam_redis_script_duration_seconds.",
                [(f"histogram_quantile(0.99, sum by (le, job, script) "
                  f"(rate(dam_redis_script_duration_seconds_bucket{RATE})))", "{{job}} {{script}}")],
                unit="s", width=12)
    board.panel("Script errors, by job, script and kind", "dam_redis_script_errors_total. Alert: DamRedisErrors.",
                [(f"sum by (job, script, kind) (rate(dam_redis_script_errors_total{RATE}))",
                  "{{job}} {{script}} {{kind}}")], unit="ops", width=12)
    return board


def edge() -> Dashboard:
    board = Dashboard("dam-edge", "Traffic Dam: edge (nginx)", "nginx in front of the gateways, counted from its "
                      "access log by mtail (dashboards/mtail/edge.mtail).", ["traffic-dam", "edge"])
    board.row("Requests")
    board.panel("Requests, by layer", "gate: a gateway answered; edge: nginx answered itself.",
                [(f"sum by (layer) (rate(dam_edge_requests_total{RATE}))", "{{layer}}")], unit="reqps", stack=True,
                width=12)
    board.panel("Requests, by status", "dam_edge_requests_total.",
                [(f"sum by (status) (rate(dam_edge_requests_total{RATE}))", "{{status}}")], unit="reqps", stack=True,
                width=12)
    board.row("Refusals")
    board.panel("Answered by nginx itself, by status", "400/431 bad requests, 413 bodies far too large, 404 "
                "internal paths, 502/504 no gateway reachable, 429/503 its rate limits.",
                [(f'sum by (status) (rate(dam_edge_requests_total{{layer="edge"}}{RATE}))', "{{status}}")],
                unit="reqps", stack=True, width=12)
    board.panel("429s, by layer", "Which layer says no: nginx (edge) or the gate.",
                [(f'sum by (layer) (rate(dam_edge_requests_total{{status="429"}}{RATE}))', "{{layer}}")],
                unit="reqps", width=12)
    board.row("mtail")
    board.panel("mtail up", "Prometheus reaches mtail (job edge). Alert: DamInstanceDown.",
                [('max(up{job="edge"})', "up")], kind="stat", width=6, height=5, threshold=None)
    return board


DASHBOARDS = {"overview": overview, "gateway": gateway, "worker": worker, "dam-redis": dam_and_redis, "edge": edge}


def rendered() -> dict[str, str]:
    return {f"{name}.json": json.dumps(build().to_json(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    files = rendered()
    if sys.argv[1:] == ["--check"]:
        stale = [name for name, text in files.items()
                 if not (OUTPUT_DIR / name).exists() or (OUTPUT_DIR / name).read_text() != text]
        if stale:
            print(f"dashboards out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT_DIR.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUTPUT_DIR / name).write_text(text)
    print(f"wrote {len(files)} dashboards to {OUTPUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
