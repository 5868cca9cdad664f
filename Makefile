# Two commands on a fresh machine with Python 3.11+:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo up test bench reliability lint console-assets browser clean

# deploy/docker/constraints.txt pins every runtime dependency, direct or not: the tests run on
# exactly what the images install.
$(STAMP): pyproject.toml deploy/docker/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]" --constraint deploy/docker/constraints.txt
	@touch $(STAMP)

setup: $(STAMP)

demo: setup          ## three cases through a fresh embedded system, with their chronologies
	$(BIN)/rethink demo

up: setup            ## run the system until Ctrl-C
	$(BIN)/rethink up

test: setup          ## the whole suite against a real nats-server it starts itself
	$(BIN)/python -m pytest

bench: setup         ## the performance benchmark, each figure beside its raw JetStream baseline
	$(BIN)/python -m tests.benchmarks.run

reliability: setup   ## every fault under load: lost, duplicated, applied, time to recover
	$(BIN)/python -m tests.reliability.run

lint: setup
	$(BIN)/python -m ruff check services shared tests

browser:             ## Debian's chromium for the console's browser tests (the tests also do this when run as root)
	@test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

console-assets:      ## refresh the vendored GOV.UK Frontend files from the version pinned in package-lock.json
	cd services/console/frontend && npm ci --ignore-scripts --no-audit --no-fund
	$(PYTHON) services/console/frontend/vendor.py

clean:
	rm -rf $(VENV) .rethink .pytest_cache
