# The project's commands. `make demo` sets everything up and runs the pipeline end to end on the embedded
# default; `make test` runs the tests. Both need only Python 3.11 and make: uv is bootstrapped when missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen

export DAGSTER_HOME ?= $(CURDIR)/var/dagster
export DAGSTER_DISABLE_TELEMETRY := true
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true

# demo scale of the simulated company (make demo DEMO_PERSONS=50000 ...)
DEMO_PERSONS ?= 10000
DEMO_DAYS ?= 30
DEMO_SEED ?= 7

.PHONY: help install demo ingest replay erase test dev bench lint docs contracts clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## bootstrap uv if missing and install the locked environment
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(RUN) python -m lake.dbt_sources || echo "dbt sources left as they were: fix the contracts above (make contracts)"
	cd dbt_project && $(RUN) dbt parse --profiles-dir . --quiet  # the manifest the Dagster dbt assets load

MATERIALIZE := $(RUN) dagster asset materialize -m orchestration.definitions
SNAPSHOTS := key:"marts/person_features_daily"

demo: install  ## generate the demo company's data, materialize every asset (lake, dbt models, daily snapshots), print what was built
	$(MATERIALIZE) --select 'not $(SNAPSHOTS)+' \
		--config-json '{"ops": {"simulated_company": {"config": {"persons": $(DEMO_PERSONS), "days": $(DEMO_DAYS), "seed": $(DEMO_SEED)}}}}'
	$(MATERIALIZE) --select '$(SNAPSHOTS)' --partition-range "$$($(RUN) python -m orchestration.snapshot_dates)"
	$(MATERIALIZE) --select '$(SNAPSHOTS)+ and not $(SNAPSHOTS)'
	$(RUN) python -m lake.summary

ingest: install  ## ingest everything in the landing zone (LAKE_ROOT) into bronze and silver, and print what it did
	$(RUN) python -m lake.ingest

replay: install  ## move quarantined records the contracts accept now into bronze and silver (ARGS="--feed <topic> --reason-like '%decimal%'")
	$(RUN) python -m lake.replay $(ARGS)

erase: install  ## erase a person from the lake and the warehouse: make erase ERASE='--contact-id 42' (--customer-id, --app-user-id, --email)
	$(RUN) python -m lake.erasure $(ERASE)

test: install  ## run the test suite
	$(RUN) pytest

dev: install  ## serve the Dagster UI on http://127.0.0.1:3000
	$(RUN) dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install  ## print throughput and memory figures (benchmarks/)
	$(RUN) python benchmarks/simulator_throughput.py
	$(RUN) python benchmarks/lake_throughput.py
	$(RUN) python benchmarks/identity_components.py
	$(RUN) python benchmarks/dbt_nightly.py

lint: install  ## ruff lint and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

docs: install  ## generate the dbt docs and serve them on http://127.0.0.1:8080
	cd dbt_project && $(RUN) dbt docs generate --profiles-dir . && $(RUN) dbt docs serve --profiles-dir . --host 127.0.0.1 --port 8080 --no-browser

contracts: install  ## lint the data contracts and fail on a breaking change without a major version bump
	$(RUN) python -m data_contracts check

clean:  ## delete everything the project wrote at run time (the lake, warehouse, MLflow store, Dagster home)
	rm -rf var dbt_project/target dbt_project/logs
