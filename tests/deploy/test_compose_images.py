"""The images compose builds: every mounted repository path and build target exists, and each Dockerfile target
follows the deployment's contract (non-root user dam, its binary, a /healthz HEALTHCHECK, its port); hadolint,
when installed, accepts the Dockerfile."""

from __future__ import annotations


from compose_files import (
    ALLOWED_HOST_MOUNTS,
    ALL_TARGETS,
    DEPLOY_DIRECTORY,
    DOCKERFILE,
    EDGE_TARGET_PORT,
    REPO_ROOT,
    RUST_TARGETS,
    dockerfile_stages,
    installed_tool,
    instructions_of_target,
    output_of,
    run_command,
)


def test_mounted_paths_and_build_targets_exist(compose, services) -> None:
    problems = []
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.get("source", "") if isinstance(volume, dict) else str(volume).split(":")[0]
            if source.startswith("."):
                if not (DEPLOY_DIRECTORY / source).exists():
                    problems.append(f"{name} mounts {source}, which does not exist")
            elif source.startswith("/"):
                if source not in ALLOWED_HOST_MOUNTS:
                    problems.append(f"{name} mounts the host path {source}")
                elif not str(volume).endswith(":ro"):
                    problems.append(f"{name} mounts {source} writable; mount it :ro")
            elif source not in named_volumes:
                problems.append(f"{name} mounts volume {source}, which is not declared")
        build = service.get("build")
        if build:
            context = DEPLOY_DIRECTORY / (build if isinstance(build, str) else build.get("context", "."))
            if not (context / "Dockerfile").exists():
                problems.append(f"{name} builds in {context}, which has no Dockerfile")
            target = None if isinstance(build, str) else build.get("target")
            if target and target.lower() not in dockerfile_stages():
                problems.append(f"{name} builds target {target}, which the Dockerfile does not have")
    assert not problems, "; ".join(problems)


def test_every_image_follows_the_contract() -> None:
    stages = dockerfile_stages()
    problems = []
    for target in ALL_TARGETS:
        if target not in stages:
            problems.append(f"the Dockerfile has no target {target}")
    for target, port in RUST_TARGETS.items():
        if target not in stages:
            continue
        instructions = instructions_of_target(stages, target)
        users = [arguments for keyword, arguments in instructions if keyword == "USER"]
        if not users or users[-1].split(":")[0] not in ("10001", "dam"):
            problems.append(f"{target} does not run as the user dam (uid 10001)")
        if not any(keyword == "COPY" and arguments.endswith(f"/usr/local/bin/{target}") for keyword, arguments in instructions):
            problems.append(f"{target} does not install /usr/local/bin/{target}")
        checks = [arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK"]
        if not checks or f"127.0.0.1:{port}/healthz" not in checks[-1]:
            problems.append(f"{target}'s HEALTHCHECK does not GET 127.0.0.1:{port}/healthz")
        if not any(keyword == "EXPOSE" and str(port) in arguments.split() for keyword, arguments in instructions):
            problems.append(f"{target} does not EXPOSE {port}")
    if "edge" in stages:
        base, instructions = stages["edge"]
        if not base.startswith("nginx:1.27"):
            problems.append(f"edge is built FROM {base}, not nginx:1.27")
        text = "\n".join(f"{keyword} {arguments}" for keyword, arguments in instructions)
        for wanted in ("deploy/nginx/ /opt/dam/nginx/", "crates/gateway/static/ /opt/dam/static/",
                       "/opt/dam/nginx/edge-entrypoint.sh", f"127.0.0.1:{EDGE_TARGET_PORT}/healthz"):
            if wanted not in text:
                problems.append(f"edge's stage lacks {wanted}")
    dockerignore = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for wanted in ("target/", ".run/", "loadtest/results/", ".git/"):
        if wanted not in dockerignore:
            problems.append(f".dockerignore does not keep out {wanted}")
    assert not problems, "; ".join(problems)


def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = installed_tool("hadolint")
    result = run_command([hadolint, "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, f"hadolint: {output_of(result)}"
