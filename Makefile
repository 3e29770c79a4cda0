# The README's commands. Both set up what they need and are fast the second time.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
APT_PACKAGES := fonts-noto-cjk poppler-utils libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fontconfig
DEMO_DIR := data/sources
DEMO_CUSTOMERS ?= 2000

.PHONY: demo test setup lint airflow airflow-test clean bench

setup: $(STAMPS)/apt $(STAMPS)/venv

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: requirements.lock pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@# Bytecode up front: with PYTHONDONTWRITEBYTECODE set, every process (each Airflow task,
	@# each bench stage) would otherwise recompile ~700 modules, about 5 s per process.
	$(BIN)/python -m compileall -q -j 0 pipeline dags >/dev/null
	@touch $@

demo: setup
	$(BIN)/crm-pipeline demo-data --out $(DEMO_DIR) --customers $(DEMO_CUSTOMERS)
	$(BIN)/crm-pipeline run

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Stage timings and memory at 1k, 10k and 100k customers (PostgreSQL warehouse on 127.0.0.1),
# the alternatives beside them, 4 vs 8 quarters of history; refreshes docs/benchmarks.md.
BENCH_SIZES ?= 1000,10000,100000
bench: setup
	$(BIN)/crm-pipeline -v bench --sizes $(BENCH_SIZES)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# A local Airflow (api-server, scheduler, DAG processor) with the project's DAGs on the demo sources:
# open http://localhost:8080 (the admin password is printed at start and saved in airflow_home/).
airflow: setup
	test -f $(DEMO_DIR)/sales.db || $(BIN)/crm-pipeline demo-data --out $(DEMO_DIR) --customers $(DEMO_CUSTOMERS)
	AIRFLOW_HOME=$(CURDIR)/airflow_home AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	CRM_WAREHOUSE_URL=sqlite:///$(CURDIR)/data/warehouse.db CRM_OUT_DIR=$(CURDIR)/out \
	CRM_SOURCES__SALES_URL=sqlite:///$(CURDIR)/$(DEMO_DIR)/sales.db \
	CRM_SOURCES__SERVICE_URL=sqlite:///$(CURDIR)/$(DEMO_DIR)/service.db \
	CRM_SOURCES__FINANCE_DIR=$(CURDIR)/$(DEMO_DIR)/finance \
	$(BIN)/airflow standalone

# Only the Airflow integration tests: a real Airflow 3 (LocalExecutor, then CeleryExecutor with the
# local Redis) on the local PostgreSQL runs both DAGs, a rerun, a failing source and a backfill.
airflow-test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m airflow

clean:
	rm -rf $(VENV) $(STAMPS) out data
