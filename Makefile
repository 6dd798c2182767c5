# civicflow — the two commands of the quick start are `make demo` and `make test`.
# Each bootstraps what it needs: a .venv with uv from PyPI (the version uv.lock pins), then
# `uv sync --frozen` from the committed lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/version = "\(.*\)"/\1/p}' uv.lock)
export CIVICFLOW_HOME ?= $(CURDIR)/.civicflow
# Bytecode caches are what make a command start at once (a sandbox may switch them off).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install lint demo test test-fast ui bench clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: $(BIN)/uv pyproject.toml uv.lock
	$(BIN)/uv sync --frozen
	@touch $@

install: $(VENV)/.synced  ## create .venv and install the locked dependencies

demo: install  ## simulate a small city and run the nightly job through Dagster
	$(BIN)/civicflow demo

lint: install  ## ruff (configured in pyproject.toml)
	$(BIN)/ruff check .

test: install lint  ## lint, then the whole test suite, slow end-to-end tests included (what CI runs)
	$(BIN)/pytest

test-fast: install  ## the suite without the slow end-to-end tests
	$(BIN)/pytest -m "not slow"

ui: install  ## Dagster UI + daemon on the demo's home (http://127.0.0.1:3000)
	$(BIN)/civicflow ui

bench: install  ## the benchmarks under bench/ (print ratios against in-run references)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:  ## remove the demo home (keeps .venv)
	rm -rf .civicflow
