# avops: two commands for users (make demo, make test) and a few for developers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export AVOPS_HOME ?= $(CURDIR)/.avops
export DAGSTER_HOME ?= $(AVOPS_HOME)/dagster
export PYBAMM_DISABLE_TELEMETRY := true

.PHONY: demo ui test bench install clean help

help:
	@echo "make demo   - install, simulate the demo fleet, materialize every asset for every cohort"
	@echo "make ui     - Dagster UI (webserver + daemon) on http://127.0.0.1:3000"
	@echo "make test   - install test dependencies and run the test suite"
	@echo "make bench  - run the benchmarks in benchmarks/"

# torch comes from pip first (its CPU build is on disk here; uv would fetch a CUDA build),
# then uv installs the exact pins of requirements.lock in seconds.
$(BIN)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/avops demo

ui: install
	$(BIN)/python -c "from avops_assets.instance import ensure_dagster_home; ensure_dagster_home()"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

test: install
	$(BIN)/python -m pytest -q

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(AVOPS_HOME)
