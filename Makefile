# simlab: every target installs what it needs first (from uv.lock) and sets DAGSTER_HOME.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export DAGSTER_HOME := $(CURDIR)/dagster_home
export UV_PYTHON_DOWNLOADS := never
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

sweep: install ## the main job: run the restaurant experiment locally and print its answer
	.venv/bin/python -m engine.demo

test: install ## run the whole test suite
	.venv/bin/pytest -n 2

lint: install ## ruff
	.venv/bin/ruff check .

.PHONY: help install sweep test lint
