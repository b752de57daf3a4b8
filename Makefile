# Skybook: `make run` starts the platform, `make test` proves it. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
DATA_DIR ?= var
PORT ?= 8000

export SKYBOOK_DATA_DIR ?= $(DATA_DIR)

# Byte-code caches for the Python tools, in one directory inside the virtualenv instead of next to
# the sources. With PYTHONDONTWRITEBYTECODE set (as in some CI images) and a virtualenv installed
# without byte code, every Python process of the suite - pytest and the ~40 relay, worker and
# server processes the tests start - would compile fastapi, pydantic, sqlalchemy and the rest
# from source again (about 9 s of CPU for pytest's start, 2.5 s for each subprocess).
PYCACHE_ENV := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache

.PHONY: help install nginx run test check lint typecheck imports scan lock bench bench-booking bench-search cluster cluster-stop cluster-status audit scorecard clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)  ## Create the virtualenv and install the locked dependencies

run: install  ## Migrate, seed the demo network and start Skybook on http://127.0.0.1:$(PORT)
	$(BIN)/skybook db upgrade
	$(BIN)/skybook seed demo
	@echo ""
	@echo "  Skybook is starting on the embedded default (SQLite in $(SKYBOOK_DATA_DIR)/, in-process events, sandbox payments)."
	@echo "  API docs:    http://127.0.0.1:$(PORT)/docs"
	@echo "  OpenAPI:     http://127.0.0.1:$(PORT)/openapi.json"
	@echo "  Health:      http://127.0.0.1:$(PORT)/health"
	@echo "  E-mails:     $(SKYBOOK_DATA_DIR)/mail/*.eml"
	@echo ""
	$(BIN)/skybook serve --port $(PORT)

lint: install  ## ruff lint and format check
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: install  ## mypy (strict)
	$(BIN)/mypy

imports: install  ## Architecture contracts (import-linter)
	$(PYCACHE_ENV) $(BIN)/lint-imports

scan: install  ## detect-secrets over every git-tracked file, against the audited baseline
	$(PYCACHE_ENV) $(BIN)/pytest -q -p no:cacheprovider tests/security/test_secrets.py

check: lint typecheck imports scan  ## All static checks

nginx:  ## The gateway of `make cluster` (Debian's nginx-light, when missing and apt-get can install it)
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq nginx-light >/dev/null; \
	    else echo "nginx is missing: install it (apt-get install nginx-light) for make cluster"; fi; }

test: check nginx  ## Static checks and the whole test suite (PostgreSQL tests fail instead of skipping when CI=true)
	$(PYCACHE_ENV) $(BIN)/pytest

lock:  ## Recompile requirements.lock from pyproject.toml (names, versions, hashes only)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 --no-header --quiet -o requirements.lock

bench-booking: install  ## Booking benchmark on PostgreSQL (see docs/benchmarks.md)
	$(BIN)/python bench/booking.py

bench-search: install  ## Search-cache benchmark on PostgreSQL + Redis (see docs/benchmarks.md)
	$(BIN)/python bench/search.py

bench: bench-booking bench-search  ## All benchmarks

cluster: install nginx  ## Scaled-out Skybook on loopback: nginx :8080 -> 2 APIs, relay, 2 workers (deploy/cluster)
	PYTHON=$(BIN)/python deploy/cluster/cluster.sh start

cluster-stop:  ## Stop exactly the processes `make cluster` started (PIDs in var/cluster/*.pid)
	deploy/cluster/cluster.sh stop

cluster-status:  ## Which cluster processes run
	deploy/cluster/cluster.sh status

audit: install  ## Consistency audit of the database the settings name (JSON; exit 1 on a failed check)
	$(BIN)/skybook audit

FAULTS ?= 0
SCORECARD_DURATION ?= $(if $(filter 1,$(FAULTS)),180s,60s)
SCORECARD_USERS ?= 40
scorecard: install  ## Load test, drain, audit -> docs/scorecard.md (starts and stops a cluster if none runs; FAULTS=1: under faults)
	$(BIN)/python bench/scorecard/run.py --duration $(SCORECARD_DURATION) --users $(SCORECARD_USERS) $(if $(filter 1,$(FAULTS)),--faults)

clean:  ## Remove the virtualenv and local data
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .ruff_cache .pytest_cache
