"""What one fault scenario reports (`ScenarioResult`), and how a scenario file runs alone. The runner,
run_chaos.py, prints the same figures and failures for every scenario."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field


@dataclass
class ScenarioResult:
    """What one scenario reports: its figures (printed by the runner) and its broken promises (empty: passed)."""

    name: str
    figures: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, condition: bool, message: str) -> bool:
        """Records `message` as a failure when `condition` is false; returns the condition."""
        if not condition:
            self.failures.append(message)
        return condition


def run_scenario_alone(run) -> int:
    """A scenario file's own `__main__`: runs `run` (the long version with `--long` on the command line), prints its
    figures and broken promises, and returns the exit status. The binaries are used as they are (the runner,
    `run_chaos.py`, builds them first)."""
    result = run("--long" in sys.argv[1:])
    print(f"figures: {json.dumps(result.figures, default=str)}")
    for failure in result.failures:
        print(f"FAILED: {failure}")
    print("passed" if not result.failures else f"{len(result.failures)} broken expectations")
    return 1 if result.failures else 0
