# failover-harness: the two commands users run are `make conformance` and `make check`.
# Both install what is missing first (Debian packages, then the .venv).

VENV    := .venv
PY      := $(VENV)/bin/python
PYTEST  := $(VENV)/bin/pytest
REPORTS := reports
ARGS    ?=

.PHONY: all setup setup-host venv conformance merge durations check check-full lint bench soak sweep clean

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
# SHARD=K/N: the K-th of N CI shards (balanced by testcases/durations.json); `make merge` joins them.
conformance: setup
	$(VENV)/bin/failover-harness run --reports $(REPORTS) $(if $(SHARD),--shard $(SHARD)) -- $(ARGS)

# One report (JUnit, results.json, HTML) in $(REPORTS) from CI shards' report directories.
SHARD_REPORTS ?=
merge: venv
	$(VENV)/bin/failover-harness report --merge $(SHARD_REPORTS) --reports $(REPORTS)

# Refresh testcases/durations.json, which `failover-harness run --shard K/N` balances CI shards by:
# the whole suite, each case's duration stored (docs/user-guide.md, "Sharding across CI runners"). Commit the file when it changed.
durations: setup
	$(VENV)/bin/failover-harness run --store-durations --reports $(REPORTS)/durations -- $(ARGS)

# The harness's own tests: pure units, plugin tests and end-to-end runs with real QEMU, in two
# passes (scripts/check.sh): what can share the host on two workers, then what needs it whole.
check: setup lint
	@bash scripts/check.sh $(PYTEST) $(ARGS)

# make check, then slow runs that add confidence but prove nothing make check does not
# (docs/development.md, "make check-full"): whole suites on the nested topology and on the two-L1 lab,
# the whole-host tests repeated REPEATS times with their failure rate, a short soak.
REPEATS ?= 3
check-full: check
	$(VENV)/bin/failover-harness run --profile profiles/nested-tcg.toml --reports $(REPORTS)/check-full/nested
	$(PY) -m tests.e2e.lab --reports $(REPORTS)/check-full/lab
	$(PYTEST) tests -m check_full $(ARGS)
	$(PY) bench/failure_rate.py --runs $(REPEATS) --junit-dir $(REPORTS)/check-full/repeats -- -m whole_host $(ARGS)
	$(VENV)/bin/failover-harness soak --migrations 20 -- $(ARGS)

lint: venv
	$(VENV)/bin/ruff check harness testcases tests bench soak conftest.py
	$(VENV)/bin/mypy --strict harness

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
