"""The CI workflow (.github/workflows/ci.yml): it runs on pushes and pull requests, lints, tests through .ci/run,
builds every Dockerfile target and caches cargo. actionlint and the GitHub workflow schema (check-jsonschema),
when installed, accept it; without them those tests are skipped."""

from __future__ import annotations

import re

from compose_files import (
    ALL_TARGETS,
    CI_SCRIPT,
    REPO_ROOT,
    WORKFLOW_FILE,
    installed_tool,
    load_yaml,
    output_of,
    run_command,
)


def test_the_ci_workflow_runs_lint_test_and_every_docker_target() -> None:
    workflow = load_yaml(WORKFLOW_FILE)
    problems = []
    # YAML 1.1 reads a bare `on` key as the boolean true.
    triggers = workflow.get("on", workflow.get(True)) or {}
    triggers = [triggers] if isinstance(triggers, str) else list(triggers)
    for event in ("push", "pull_request"):
        if event not in triggers:
            problems.append(f"ci.yml does not run on {event}")
    jobs = workflow.get("jobs") or {}

    def commands_of(job_name: str) -> str:
        steps = (jobs.get(job_name) or {}).get("steps") or []
        return "\n".join(str(step.get("run", "")) + " " + str(step.get("with", "")) for step in steps)

    if "make lint" not in commands_of("lint"):
        problems.append("job lint does not run `make lint`")
    test_commands = commands_of("test")
    if ".ci/run" not in test_commands and "make test" not in test_commands:
        problems.append("job test runs neither .ci/run nor `make test`")
    docker_commands = commands_of("docker")
    for target in ALL_TARGETS:
        if not re.search(rf"target\W+{re.escape(target)}\b", docker_commands):
            problems.append(f"job docker does not build target {target}")
    cached = any("rust-cache" in str(step.get("uses", "")) or "actions/cache" in str(step.get("uses", ""))
                 for job in jobs.values() for step in (job or {}).get("steps") or [])
    if not cached:
        problems.append("no job caches cargo")
    if not CI_SCRIPT.exists():
        problems.append(".ci/run is missing")
    assert not problems, "; ".join(problems)


def test_actionlint_accepts_the_ci_workflow() -> None:
    actionlint = installed_tool("actionlint")
    result = run_command([actionlint, "-shellcheck=", "-pyflakes=", str(WORKFLOW_FILE)], cwd=REPO_ROOT)
    assert result.returncode == 0, f"actionlint: {output_of(result)}"


def test_the_github_workflow_schema_accepts_the_ci_workflow() -> None:
    validator = installed_tool("check-jsonschema", "pip install check-jsonschema")
    result = run_command([validator, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW_FILE)])
    assert result.returncode == 0, f"the GitHub workflow schema refuses ci.yml: {output_of(result)}"
