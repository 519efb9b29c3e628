# changegate: `make run` starts the whole demo, `make test` runs the whole suite.
# Both install what they need first (Debian packages as root, .venv, pip).

PYTHON ?= python3.11
VENV ?= .venv
PYTEST_ARGS ?=
BENCH_ARGS ?=
RUN_ARGS ?=
FUZZ_EXAMPLES ?= 200

export PYTHON VENV

.PHONY: help install run test fuzz bench bench-quick services clean-demo

help:
	@echo "make run                          start the demo (named, redis, celery, web on 127.0.0.1:8000)"
	@echo "make test [PYTEST_ARGS='-k x']    run the test suite"
	@echo "make fuzz [FUZZ_EXAMPLES=200]     schemathesis against the API, many examples per operation"
	@echo "make bench [BENCH_ARGS=...]       run the benchmarks (full sizes, 3 interleaved runs each; long)"
	@echo "make bench-quick                  every issue-14 target, 3 runs each, one table, under 3 minutes"
	@echo "make install                      only install (apt as root, .venv, pip install -e '.[test]')"
	@echo "make services                     ensure redis and PostgreSQL answer locally (as CI does)"
	@echo "make clean-demo                   forget the demo state in var/ (database, zone, keys)"

install:
	@scripts/install.sh

run: install
	$(VENV)/bin/python scripts/devrun.py $(RUN_ARGS)

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Every production module imports on its own, in a fresh interpreter (no hidden circle).
check-imports: install
	$(VENV)/bin/python scripts/check_imports.py

# The long schemathesis run; `make test` runs the same tests with 10 examples per operation.
fuzz: install
	CHANGEGATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/changes/test_schemathesis.py $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/python -m bench.dns_bench $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.apply_bench $(APPLY_BENCH_ARGS)
	$(VENV)/bin/python -m bench.audit_bench $(AUDIT_BENCH_ARGS)
	$(VENV)/bin/python -m bench.soak_bench $(SOAK_BENCH_ARGS)
	$(VENV)/bin/python -m bench.dns_readback_bench $(READBACK_BENCH_ARGS)
	$(VENV)/bin/python -m bench.queue_bench $(QUEUE_BENCH_ARGS)
	$(VENV)/bin/python -m bench.baseline_bench $(BASELINE_BENCH_ARGS)
	$(VENV)/bin/python -m bench.propose_bench $(PROPOSE_BENCH_ARGS)
	$(VENV)/bin/python -m bench.detect_restore_bench $(DETECT_BENCH_ARGS)

# Every issue-14 target with reduced sizes (each bench prints what it reduced), 3 runs, one table.
bench-quick: install
	$(VENV)/bin/python -m bench.quick $(QUICK_ARGS)

services:
	@scripts/ensure_services.sh redis postgres

clean-demo:
	@if [ -f var/devrun.pid ] && kill -0 "$$(cat var/devrun.pid)" 2>/dev/null; then \
		echo "make run is still running (pid $$(cat var/devrun.pid)); stop it first" >&2; exit 1; fi
	rm -rf var/named var/keys var/changegate.sqlite3 var/changegate.sqlite3-wal var/changegate.sqlite3-shm var/demo.env var/celerybeat-schedule* var/log var/devrun.pid \
		var/audit-signing.pem var/audit-signing.pub var/audit-checkpoints.jsonl
