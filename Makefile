# voicefleet: `make demo` runs the main job on the local stack, `make test` runs the tests.
# Both do all set-up on a fresh machine and reuse caches when present.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3.11
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
RUN := $(UV) run --frozen --no-sync
PYTEST_ARGS ?=
# make demo DEMO_ARGS="--callers 5 --turns 2"
DEMO_ARGS ?=
# make up UP_ARGS="--livekit-nodes 2" (testbed up --help lists the flags)
UP_ARGS ?=
# make bench BENCH_ARGS="autoscale" (names from bench/__main__.py; none: all)
BENCH_ARGS ?=

.PHONY: help setup binaries web images up down status demo test lint typecheck unit bench dashboards clean

help:
	@echo "make demo      start the local stack, apply examples/voiceagent.yaml and call it (does all set-up)"
	@echo "make test      lint, typecheck and run every test against the real stack"
	@echo "make up/down   start/stop the local stack in the background (.testbed/env), with a real node"
	@echo "make status    what the local stack runs, and what is unhealthy"
	@echo "make images    build the operator and worker images with buildah (no registry, no Docker)"
	@echo "make web       build the call page (web/, npm + esbuild) the operator image serves"
	@echo "make bench     run the benchmarks (bench/results/*.json); BENCH_ARGS=\"autoscale call\" runs some"
	@echo "               autoscale: builtin vs the real HPA and real KEDA in one run (~25 min; flags:"
	@echo "               python -m bench.autoscale --help; env BENCH_AUTOSCALE_SIZES/_STEPS/_SYSTEMS)"

# Python: uv from PyPI, then the locked workspace into .venv.
setup: .venv/.synced
.venv/.synced: uv.lock pyproject.toml */pyproject.toml
	@command -v uv >/dev/null 2>&1 || [ -x "$(UV)" ] || { echo "==> installing uv $(UV_VERSION) from PyPI"; python3 -m pip install --quiet --user "uv==$(UV_VERSION)"; }
	@echo "==> uv sync (Python deps into .venv)"
	@$(UV) sync --frozen --all-packages
	@touch $@

# etcd, kube-apiserver, kube-controller-manager, kubectl, livekit-server, helm, and the real
# node's kubelet, kube-scheduler, kube-proxy, containerd, CoreDNS, crictl and pause image (built
# from the Go module proxy into ~/.cache/voicefleet/bin/<name>-<version>); Debian's prometheus,
# redis-server, runc, CNI plugins, conntrack and busybox-static.
binaries:
	@bash testbed/build/binaries.sh all

# The call page (web/: LiveKit's JS client and React components from npm, bundled by
# esbuild into web/dist, which the operator image carries). Cached by a hash of its inputs.
web:
	@bash testbed/build/web.sh

# The operator and worker images from their Dockerfiles, with buildah and local stand-ins for
# the base images, as OCI archives in ~/.cache/voicefleet/images (images.json lists them).
# Cached by a hash of what each build reads. make images IMAGES_ARGS=--rebuild forces it.
IMAGES_ARGS ?=
images: setup web
	@$(RUN) python -m voicefleet_testbed.imagebuild build $(IMAGES_ARGS)

up: setup binaries images
	@$(RUN) testbed up $(UP_ARGS)

down:
	@if [ -x .venv/bin/testbed ]; then $(RUN) testbed down; else echo "nothing to stop (no .venv)"; fi

status: setup
	@$(RUN) testbed status

demo: setup binaries images
	@$(RUN) testbed demo $(DEMO_ARGS)

lint: setup
	@echo "==> ruff"
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .

typecheck: setup web
	@echo "==> mypy"
	@$(RUN) mypy
	@echo "==> tsc (web/)"
	@cd web && npm run --silent typecheck

unit: setup
	@$(RUN) pytest -m "not cluster and not livekit and not images" $(PYTEST_ARGS)

test: setup binaries images lint typecheck
	@echo "==> pytest (starts its own stack on free loopback ports)"
	@$(RUN) pytest $(PYTEST_ARGS)

# Grafana dashboards and docs/metrics.md from dashboards/generate.py (a test checks they match).
dashboards: setup
	@$(RUN) python -m dashboards.generate

# The autoscale benchmark runs real KEDA: built on demand (~18 min cold, then cached).
bench: setup binaries
	@bash testbed/build/binaries.sh keda
	@$(RUN) python -m bench $(BENCH_ARGS)

clean: down
	rm -rf .testbed .venv
