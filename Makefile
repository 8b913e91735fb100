# simlab: every target installs what it needs first (from uv.lock) and sets DAGSTER_HOME.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export DAGSTER_HOME := $(CURDIR)/dagster_home
export UV_PYTHON_DOWNLOADS := never
# Precompiled bytecode: every simlab process imports Dagster, ~6 s when compiled from source.
export UV_COMPILE_BYTECODE := 1
# ...and the project's own: with PYTHONDONTWRITEBYTECODE set (some shells do), every process of
# the suite and every pool worker compiled simlab's modules again (~0.4 CPU-s each).
unexport PYTHONDONTWRITEBYTECODE
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: .venv/.synced ## create .venv from uv.lock (done by every other target)

EXPERIMENT ?= experiments/restaurant_staffing.yaml

sweep: install ## the main job: run the restaurant experiment locally and print its answer
	.venv/bin/simlab sweep $(EXPERIMENT)

dev: install ## the Dagster UI and daemon on the local instance (http://127.0.0.1:3000)
	.venv/bin/dagster dev -m simlab_pipelines.definitions

demo: install ## a quick engine-only demo (no Dagster)
	.venv/bin/python -m engine.demo

test: install ## run the whole test suite
	@# System packages some tests use (podman for the image, chromium for the UI); never fails.
	scripts/install-test-deps
	.venv/bin/pytest -n 2

lint: install ## ruff
	.venv/bin/ruff check .

.PHONY: help install sweep dev demo test lint
