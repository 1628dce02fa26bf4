# Two commands a newcomer needs on a fresh machine (Python 3.11, Node 20, package registries):
#   make demo   set everything up and run licshift's main job on a simulated tenant
#   make test   set everything up, then ruff, mypy and pytest (Azurite is started by the tests)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian's chromium and chromium-driver: the HTML report is tested in a real headless browser.
# Installed only when missing (CI is root on a fresh Debian machine; elsewhere through sudo).
# Defined before the rules that name it: make expands prerequisites as it reads them.
CHROMIUM := /usr/bin/chromedriver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# checkov pins packages the dev tools need newer (pycep-parser), so it lives in a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
LOCK_FLAGS := --quiet --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links --no-emit-trusted-host

.PHONY: setup demo test lint typecheck checkov lock unit bench bench-quota bench-recovery bench-wave-100k bench-tick clean

setup: $(STAMP) node_modules/.bin/azurite $(CHROMIUM)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver fonts-liberation

node_modules/.bin/azurite: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch node_modules/.bin/azurite

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	$(CHECKOV_VENV)/bin/python -m pip check
	touch $(CHECKOV_STAMP)

# Offline IaC scan of infra/ (skips, each with its reason, in infra/checkov.yaml); an unparseable file fails.
checkov: $(CHECKOV_STAMP)
	CKV_PARSE_ERROR_FAIL=true $(CHECKOV_VENV)/bin/checkov --config-file infra/checkov.yaml

# Regenerate the locks from their inputs (needs PyPI); `make test` checks they still agree offline.
lock: setup
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(LOCK_FLAGS) --output-file requirements.txt requirements.in
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(LOCK_FLAGS) --output-file requirements-checkov.txt requirements-checkov.in

lint: setup
	$(BIN)/ruff check src tests bench function_app.py
	$(BIN)/ruff format --check src tests bench function_app.py

typecheck: setup
	$(BIN)/mypy

test: lint typecheck checkov
	$(BIN)/pytest

demo: setup
	$(BIN)/licshift demo

bench: setup
	$(BIN)/python bench/decide_bench.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/sim_bench.py
	$(BIN)/python bench/scan_bench.py
	$(BIN)/python bench/pipeline_bench.py
	$(BIN)/python bench/report_bench.py
	$(BIN)/python bench/tick_bench.py
	$(BIN)/python bench/table_trips_bench.py
	$(BIN)/python bench/ledger_partition_bench.py

# Long runs against Graph's real quota, the whole pipeline: 12 minutes and more. Run them in the
# background. SCALE=2 runs Graph's clock (and licshift's model of it) at half speed, for a host too
# busy to hold 19.4 removals/s; SCALE=0.5 twice as fast (bench/README.md).
SCALE ?= 1
bench-quota: setup
	$(BIN)/python bench/quota_bench.py --users 10000 --tick 60 --time-scale $(SCALE) --name quota

bench-recovery: setup
	$(BIN)/python bench/quota_bench.py --users 7000 --tick 60 --storm 160:30 --time-scale $(SCALE) --name recovery

bench-wave-100k: setup
	$(BIN)/python bench/quota_bench.py --users 100000 --tick 60 --time-scale $(SCALE) --budget 900 --name wave-100k

bench-tick: setup
	$(BIN)/python bench/tick_bench.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
