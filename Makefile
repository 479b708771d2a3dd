# failover-harness: the two commands users run are `make conformance` and `make check`.
# Both install what is missing first (Debian packages, then the .venv).

VENV    := .venv
PY      := $(VENV)/bin/python
PYTEST  := $(VENV)/bin/pytest
REPORTS := reports
ARGS    ?=

.PHONY: all setup setup-host venv conformance check lint bench soak sweep clean

all: check

setup: setup-host venv

setup-host:
	@bash scripts/setup-host.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# The conformance suite on the default (flat) topology; exit status = verdict.
# (failover-harness run: pytest testcases with --progress and the reports below.)
conformance: setup
	$(VENV)/bin/failover-harness run --reports $(REPORTS) -- $(ARGS)

# The harness's own tests: pure units, plugin tests and end-to-end runs with real QEMU.
check: setup lint
	$(PYTEST) tests $(ARGS)

lint: venv
	$(VENV)/bin/ruff check harness testcases tests bench soak conftest.py

bench: setup
	$(PY) bench/first_case.py $(ARGS)

# One guest migrated back and forth MIGRATIONS times under probes; prints each metric's distribution.
MIGRATIONS ?= 100
soak: setup
	$(VENV)/bin/failover-harness soak --migrations $(MIGRATIONS) -- $(ARGS)

# Remove what a killed run left behind (namespaces, their QEMUs, run dirs).
sweep: venv
	$(VENV)/bin/failover-harness sweep

clean:
	rm -rf $(VENV) $(REPORTS)/* build *.egg-info
