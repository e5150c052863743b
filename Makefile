# Herald: `make run` starts the gateway on the embedded engine; `make test` runs everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp

.PHONY: install install-run run test lint typecheck unit redis-server chromium node autobahn-venv loadtest bench bench-quick k8s-check clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e clients/python
	touch $(STAMP)

# `make run` installs only what serving needs; `make install` adds the dev tools.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

install: $(STAMP)

# Autobahn|Testsuite (tests/autobahn) runs on Python 2.7 only: pyenv's 2.7.18 gets a
# venv of its own, built once. virtualenv is bootstrapped into a scratch folder so
# the interpreter's own site-packages stay untouched.
PY27 ?= $(HOME)/.pyenv/versions/2.7.18/bin/python
AUTOBAHN_VENV := .autobahn-venv
AUTOBAHN_STAMP := $(AUTOBAHN_VENV)/.installed-stamp

$(AUTOBAHN_STAMP): tests/autobahn/requirements-py27.txt
	@test -x $(PY27) || { echo "Python 2.7 not found at $(PY27): pyenv install 2.7.18, or set PY27=" >&2; exit 1; }
	rm -rf $(AUTOBAHN_VENV) .autobahn-boot
	$(PY27) -m pip install --quiet --disable-pip-version-check --target .autobahn-boot virtualenv==20.15.1
	PYTHONPATH=.autobahn-boot $(PY27) -m virtualenv --quiet $(AUTOBAHN_VENV)
	rm -rf .autobahn-boot
	$(AUTOBAHN_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/autobahn/requirements-py27.txt
	touch $@

autobahn-venv: $(AUTOBAHN_STAMP)

install-run: $(RUN_STAMP)

run: install-run
	$(BIN)/herald serve

# Integration tests start their own redis-server processes; install it where missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) \
	  || { echo "could not install redis-server" >&2; exit 1; }; }

# The JS client's tests run in headless Chromium (Playwright with Debian's chromium via
# executable_path: `playwright install` cannot download browsers here) and in Node >= 20.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || { echo "could not install chromium" >&2; exit 1; }; }

node:
	@command -v node >/dev/null 2>&1 || { \
	  echo "installing nodejs (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs) \
	  || { echo "could not install nodejs" >&2; exit 1; }; }
	@node -e 'const m = +process.versions.node.split(".")[0]; if (m < 20) { console.error("Node >= 20 is required, found " + process.version); process.exit(1); }'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check shared fanout gateway tests loadtest clients/python

# Strict over the product (pyproject.toml), then lenient over tests/ and loadtest/.
typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy --config-file mypy-tests.ini

unit: install
	$(BIN)/pytest -q tests/unit

test: install redis-server chromium node autobahn-venv lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

loadtest: install
	$(BIN)/python -m loadtest.locust_run --time 30s --users 50

bench: install
	$(BIN)/python -m loadtest.bench

bench-quick: install
	$(BIN)/python -m loadtest.bench --quick

k8s-check:
	bash scripts/k8s-check.sh

clean:
	rm -rf $(VENV) $(AUTOBAHN_VENV) .pytest_cache .mypy_cache .ruff_cache data
