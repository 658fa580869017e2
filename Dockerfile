# syntax=docker/dockerfile:1
# Traffic Dam's container images from one file, one build target per image: gateway, llm-worker, dam, mock-llm
# (the Rust services, release builds on debian:bookworm-slim) and edge (nginx with the repo's template and the
# chat page). Build one with `docker build --target gateway -t traffic-dam/gateway .`; deploy/compose.yaml builds
# them all. The dependencies compile in a layer of their own (cargo-chef), so a change to the project's code
# recompiles only the project's crates.

# Any stable Rust at or above the workspace's rust-version (1.89, edition 2024); `1` follows the newest stable.
ARG RUST_VERSION=1
ARG CARGO_CHEF_VERSION=0.1.77

# ---------------------------------------------------------------------------------------------------------------
# Build stages
FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /build

# Only what the workspace is made of: a change to docs/, deploy/ or dashboards/ leaves every Rust layer cached.
FROM chef AS planner
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY loadtest/dam-load loadtest/dam-load
RUN cargo chef prepare --recipe-path recipe.json

# The recipe names the dependencies only (manifests and lock file), so this layer changes only with them.
FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY loadtest/dam-load loadtest/dam-load
# The four binaries in one cargo run (they share most crates), copied out for the runtime stages.
RUN cargo build --release --locked -p gateway -p llm-worker -p dam -p mock-llm \
    && mkdir -p /out \
    && cp target/release/gateway target/release/llm-worker target/release/dam target/release/mock-llm /out/

# ---------------------------------------------------------------------------------------------------------------
# The services' common runtime: CA certificates for an HTTPS LLM provider, curl for the HEALTHCHECK, a non-root user
# with a fixed uid (10001) that Kubernetes' runAsNonRoot can verify.
FROM debian:bookworm-slim AS runtime
# Unpinned on purpose: bookworm's current packages carry its security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 dam \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dam
# Optional settings files (`*.toml`, read in name order, as config/ is for a local run); the environment wins.
ENV DAM_CONFIG_DIR=/etc/traffic-dam
WORKDIR /opt/dam
USER 10001:10001
# Every service drains on SIGTERM: the gateway tells its streams to reconnect elsewhere, a worker finishes or
# re-queues its jobs. The orchestrator's grace period must exceed the drain (compose: stop_grace_period).
STOPSIGNAL SIGTERM

FROM runtime AS gateway
COPY --from=builder /out/gateway /usr/local/bin/gateway
ENV DAM_GATEWAY__HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM runtime AS llm-worker
COPY --from=builder /out/llm-worker /usr/local/bin/llm-worker
ENV DAM_WORKER__HOST=0.0.0.0
EXPOSE 9200
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2", "http://127.0.0.1:9200/healthz"]
ENTRYPOINT ["/usr/local/bin/llm-worker"]

# `dam serve` runs the admin service; every other subcommand is its CLI (`docker compose exec dam dam status`).
# Listening beyond loopback, the dam refuses to start without DAM_DAM__ADMIN_TOKEN.
FROM runtime AS dam
COPY --from=builder /out/dam /usr/local/bin/dam
ENV DAM_DAM__HOST=0.0.0.0
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2", "http://127.0.0.1:9100/healthz"]
ENTRYPOINT ["/usr/local/bin/dam"]
CMD ["serve"]

FROM runtime AS mock-llm
COPY --from=builder /out/mock-llm /usr/local/bin/mock-llm
ENV DAM_MOCK_LLM__HOST=0.0.0.0
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/local/bin/mock-llm"]

# ---------------------------------------------------------------------------------------------------------------
# The edge: nginx in front of the gateways, from the same template `make run` renders (deploy/nginx/). Its
# entrypoint renders the template for containers and follows the gateways' DNS name (EDGE_GATEWAYS,
# EDGE_LISTEN_PORT, EDGE_RATE_PER_SECOND, EDGE_BURST, EDGE_CONNECTIONS_PER_ADDRESS; see the script). It runs
# unprivileged, as the services do, writing only under /tmp. The stop signal stays nginx's own (SIGQUIT: finish
# open requests, then exit), which the entrypoint passes on. Setting ENTRYPOINT clears the base image's CMD.
FROM nginx:1.27-bookworm AS edge
COPY deploy/nginx/ /opt/dam/nginx/
COPY crates/gateway/static/ /opt/dam/static/
# curl for the health check (the base image is not sure to carry it; unpinned, as above); getent, awk and sort,
# which the entrypoint uses, come with Debian's base.
# hadolint ignore=DL3008
RUN chmod 0755 /opt/dam/nginx/*.sh \
    && apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/opt/dam/nginx/edge-entrypoint.sh"]
