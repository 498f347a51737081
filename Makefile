# Pixelshop backend. `make help` lists the verbs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help run test lint format proto lock bench bench-db db docs clean

help: ## List the verbs
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: $(INSTALLED) ## Start Postgres, migrate, and run every service and the gateway (Ctrl-C stops)
	$(PY) -m tools.run

test: $(INSTALLED) $(CHROMIUM) lint ## Lint, type-check and run the whole test suite (starts a throwaway Postgres)
	$(PY) -m pytest

lint: $(INSTALLED) ## ruff and mypy (generated code excluded)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(INSTALLED) ## Fix what ruff can fix
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

proto: $(INSTALLED) ## Regenerate Python code, stubs, the descriptor set and Envoy's config from protos/
	$(PY) -m tools.genproto
	$(PY) -m tools.envoy_config

docs: $(INSTALLED) ## Regenerate docs/database.md from the migrated schemas
	$(PY) -m tools.dbdoc

bench: $(INSTALLED) ## Run the benchmarks and print the ratios SPEC section 7 asks for
	$(PY) -m tools.bench

bench-db: $(INSTALLED) ## Seed millions of rows in a throwaway Postgres and check every hot statement's plan and p99
	$(PY) -m tools.bench_db

db: $(INSTALLED) ## Start (or reuse) the embedded Postgres and migrate, then exit
	$(PY) -m tools.provision

lock: ## Re-resolve pyproject.toml's dependencies into requirements.lock
	$(PYTHON) -m tools.lock

clean: ## Remove the venv and caches (keeps .pixelshop/ data)
	rm -rf $(VENV) .mypy_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

# tests/browser drives Debian's Chromium through Playwright; installed once when missing.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# The venv is rebuilt when the lock file changes; a .pth file puts the repository
# and the generated code on sys.path, so `python -m services.identity` works anywhere.
$(INSTALLED): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "pixelshop.pth").write_text("$(CURDIR)\n$(CURDIR)/gen\n")'
	touch $@
