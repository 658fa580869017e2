"""deploy/compose.yaml as compose itself reads it: `docker-compose config` (Debian's 1.29, which validates offline)
or `docker compose config` accepts it with every profile and refuses it without the admin token; the Compose
Specification's schema accepts it when check-jsonschema is installed (otherwise that test is skipped)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compose_files import (
    COMPOSE_FILE,
    REPO_ROOT,
    clean_environment,
    compose_command,
    installed_tool,
    output_of,
    run_command,
)


def test_docker_compose_config_accepts_the_file_with_every_profile() -> None:
    command = compose_command()
    with tempfile.TemporaryDirectory() as directory:
        env_file = Path(directory) / "check.env"
        env_file.write_text("DAM_DAM__ADMIN_TOKEN=check-compose-token\n", encoding="utf-8")
        problems = []
        for profile in ([], ["--profile", "logs"], ["--profile", "admin"]):
            arguments = [*command, *profile, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"]
            result = run_command(arguments, env=clean_environment(), cwd=REPO_ROOT)
            if result.returncode != 0:
                problems.append(f"`{' '.join(arguments[len(command):])}` failed: {result.stderr.strip()}")
        assert not problems, "; ".join(problems)


def test_docker_compose_config_refuses_the_file_without_the_admin_token() -> None:
    command = compose_command()
    with tempfile.TemporaryDirectory() as directory:
        env_file = Path(directory) / "empty.env"
        env_file.write_text("", encoding="utf-8")
        arguments = [*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"]
        result = run_command(arguments, env=clean_environment(), cwd=REPO_ROOT)
    assert result.returncode != 0 and "DAM_DAM__ADMIN_TOKEN" in result.stderr, (
        "without DAM_DAM__ADMIN_TOKEN, `config` must fail and name the variable; it "
        f"exited {result.returncode}: {result.stderr.strip()[:300]}")


def test_the_compose_specification_schema_accepts_the_file() -> None:
    validator = installed_tool("check-jsonschema", "pip install check-jsonschema")
    result = run_command([validator, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, f"the Compose Specification schema refuses it: {output_of(result)}"


def test_the_file_has_no_version_key(compose) -> None:
    assert "version" not in compose, "the Compose Specification has no `version:` key"
