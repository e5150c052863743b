# Herald: `make run` starts the gateway on the embedded engine; `make test` runs everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp

.PHONY: install install-run run test lint typecheck unit redis-server chromium loadtest bench bench-quick k8s-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make run` installs only what serving needs; `make install` adds the dev tools.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

install: $(STAMP)

install-run: $(RUN_STAMP)

run: install-run
	$(BIN)/herald serve

# Integration tests start their own redis-server processes; install it where missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) \
	  || { echo "could not install redis-server" >&2; exit 1; }; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check shared fanout gateway

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q tests/unit

# Browser tests (CORS, WebSocket Origin) drive Debian's chromium through Playwright.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || { echo "could not install chromium" >&2; exit 1; }; }

test: install redis-server chromium lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

loadtest: install
	$(BIN)/python -m loadtest.locust_run --time 30s --users 50

bench: install
	$(BIN)/herald bench

bench-quick: install
	$(BIN)/herald bench --quick

k8s-check:
	bash scripts/k8s-check.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data
