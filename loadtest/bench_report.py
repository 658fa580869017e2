"""Where a bench's figures go: loadtest/results/<bench>.json (with when and on what machine it ran) and <bench>.md,
and the wording and ordering the reports share."""

from __future__ import annotations

import json
import os
import time

from bench_stack import RESULTS, log


def write_results(name: str, figures: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    figures["machine"] = {"cpus": os.cpu_count(), "kernel": os.uname().release}
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    log(f"results in {RESULTS / (name + '.md')}")
    print(markdown)


def met(condition: bool) -> str:
    return "met" if condition else "**not met**"


def process_sort_key(name: str) -> tuple:
    order = ["gateway", "worker", "dam", "redis", "nginx"]
    prefix = name.split("-")[0]
    number = name.rsplit("-", 1)[-1]
    return (order.index(prefix) if prefix in order else len(order), int(number) if number.isdigit() else 0, name)
