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

.PHONY: setup demo test lint typecheck unit bench bench-quota bench-recovery bench-tick clean

setup: $(STAMP) node_modules/.bin/azurite $(CHROMIUM)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver

node_modules/.bin/azurite: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch node_modules/.bin/azurite

lint: setup
	$(BIN)/ruff check src tests bench function_app.py
	$(BIN)/ruff format --check src tests bench function_app.py

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
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

# Long runs (real time, Graph's real quota): about 12 and 8 minutes. Run them in the background.
bench-quota: setup
	$(BIN)/python bench/quota_bench.py --users 10000 --tick 60 --name quota

bench-recovery: setup
	$(BIN)/python bench/quota_bench.py --users 6000 --tick 60 --storm 200:30 --name recovery

bench-tick: setup
	$(BIN)/python bench/tick_bench.py

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
