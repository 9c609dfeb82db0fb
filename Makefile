# Two commands on a fresh machine: `make run` (the app) and `make test` (the suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 7071
DEMO_MARKETS ?= 5000
PYTEST_ARGS ?=

.PHONY: run test demo lint typecheck venv clean

venv: $(STAMP)

# Re-install whenever a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

## The app on 127.0.0.1:$(PORT), against real Polymarket, on an embedded PostgreSQL
## unless POSTGRES_HOST is set.
run: venv
	$(BIN)/python -m devtools.funchost --port $(PORT)

## The whole test suite (real PostgreSQL, Polymarket stand-in over loopback).
test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The app against the simulated Polymarket stand-in, for offline use.
demo: venv
	$(BIN)/python -m devtools.demo --port $(PORT) --markets $(DEMO_MARKETS)

## The CI gate: ruff (rules in pyproject.toml), then the type checker.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

## mypy over the app code (function_app.py, shared/; settings in pyproject.toml).
typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
