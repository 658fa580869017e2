"""Observability: every metric the Grafana dashboards and the alert rules use is exported by some running service.
It runs after the chat flows (this file sorts after test_end_to_end.py), whose chats fill the chat series."""

from __future__ import annotations

from check_metric_coverage import check_metric_coverage  # beside this file
from local_stack import Stack  # conftest.py put deploy/ on the path


def test_every_metric_the_dashboards_and_alert_rules_use_is_exported(stack: Stack) -> None:
    # Refusals at the gate and at the edge are sent first, so the flood dashboards' series exist.
    check_metric_coverage(stack)
