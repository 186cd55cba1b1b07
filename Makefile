# eventcrm — `make help` lists the targets. Every target sets up .venv itself first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required ($(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

NATIVE := projections/.native-stamp
$(NATIVE): $(STAMP) $(filter-out projections/__init__.py projections/ports.py,$(wildcard projections/*.py))
	$(PY) -m infra.native
	@touch $(NATIVE)

install: $(STAMP) $(NATIVE) ## create .venv, install eventcrm with its dev tools, compile the core (ADR 31)

native: $(NATIVE) ## compile the projections core with mypyc (again, after editing it)

demo: $(STAMP) $(NATIVE) ## the main job: run eventcrm's demo on the embedded default
	$(BIN)/eventcrm demo

format: $(STAMP) ## rewrite code with ruff's formatter and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: $(STAMP) ## ruff (never rewrites) and the import-linter layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP) ## mypy, strict on domain, projections, adapters and infra
	$(BIN)/mypy

test-unit: $(STAMP) $(NATIVE) ## fast tests of pure code
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: browser $(STAMP) $(NATIVE) ## tests against a real PostgreSQL (embedded one if none on 127.0.0.1:5432)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

browser: ## Debian's chromium and chromedriver for the console's browser test (apt-get only if missing)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

test: lint typecheck browser $(STAMP) $(NATIVE) ## everything CI runs: lint, types, all tests
	$(BIN)/pytest tests $(PYTEST_ARGS)

quality: $(STAMP) ## churn quality on every population: calibrated score vs days-since and RFM (~5 min)
	$(PY) -m bench.quality

default-policy: $(STAMP) ## refit the packaged default policy's churn model on the synthetic blend
	$(PY) -m adapters.calibration.prior

fault-long: $(STAMP) $(NATIVE) ## every fault kind many times over 100,000 interactions; prints a summary table (docs/faults.md)
	$(PY) -m tests.faultlong $(FAULT_LONG_ARGS)

bench: $(STAMP) $(NATIVE) ## benchmarks, printed as ratios to ceilings measured in the same run
	$(PY) -m bench.store
	$(PY) -m bench.projections
	$(PY) -m bench.pipeline
	$(PY) -m bench.webhooks
	$(PY) -m bench.audit
	$(PY) -m bench.http

.PHONY: help install native demo format lint typecheck test-unit test-integration test quality default-policy fault-long bench browser
