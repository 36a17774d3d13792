# Metricis: `make run` for a local stack, `make test` for the suite, `make lint` for the checks.
# Needs GNU make and Python 3.11; everything else goes into .venv.

PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
STAMP := $(VENV)/.installed
# honcho gives web this port ($PORT), the other processes the next hundreds.
PORT ?= 8000
# make run's embedded PostgreSQL and Redis keep their data here.
EMBEDDED_DIR ?= var/embedded

TEST_DATABASE_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379

# Every recipe runs with the venv first on PATH: `python`, `celery`, `honcho` are the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TEST_DATABASE_URL TEST_REDIS_URL

.PHONY: install run test lint lock

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The dev lock: the runtime lock's pins plus the tools (tests, checks, honcho, the embedded
# servers). A deployment installs requirements.txt alone. Reinstalls when either lock changes.
$(STAMP): requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -r requirements-dev.txt
	touch $@

# Both locks from pyproject.toml, hash-checked; pins already in a lock are kept while they
# fit (LOCK_ARGS="--upgrade-package NAME" moves one). The dev lock is constrained to the
# runtime lock, so the two never disagree on a version.
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links
lock: $(STAMP)
	CUSTOM_COMPILE_COMMAND="make lock" pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) \
		-o requirements.txt pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) \
		--extra dev -c requirements.txt -o requirements-dev.txt pyproject.toml

# API + worker + beat + relay. Without DATABASE_URL / REDIS_URL, devservers starts an
# embedded PostgreSQL and Redis (pip packages, data in var/embedded) and stops them after.
# Each `exec` takes the shell's place, so a stop (or make's death) reaches the process directly.
run: $(STAMP)
	mkdir -p var
	exec python -m devservers run --var $(EMBEDDED_DIR) -- sh -c 'python -m server migrate && python -m server seed-demo --if-empty && exec honcho start --port $(PORT)'

test: $(STAMP)
	python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	ruff check .
	mypy server workers devservers
	lint-imports

# Benchmarks (not tests): print figures and a summary line; bench-ingest needs wrk
# (apt-get install wrk), bench-sync redis-server; both PostgreSQL (TEST_DATABASE_URL).
.PHONY: bench-ingest bench-sync bench-audit bench-schedules bench-report
bench-ingest: $(STAMP)
	@command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y wrk >/dev/null 2>&1 || sudo apt-get install -y wrk; }
	python -m tests.bench.ingest $(BENCH_ARGS)

bench-sync: $(STAMP)
	python -m tests.bench.sync $(BENCH_ARGS)

# The audit write's cost per request and the chain's entries a second (PostgreSQL only).
bench-audit: $(STAMP)
	python -m tests.bench.audit $(BENCH_ARGS)

# 100,000 participants' visit schedules materialised, and the "what is due now" query.
bench-schedules: $(STAMP)
	python -m tests.bench.schedules $(BENCH_ARGS)
# Trial-level CSV and Parquet exports of 1,000,000 trial rows against PostgreSQL's COPY to
# /dev/null, and the exporting process's peak RSS (PostgreSQL only).
.PHONY: bench-export
bench-export: $(STAMP)
	python -m tests.bench.export $(BENCH_ARGS)
# 100,000 participants, 10,000 reminders due in one tick, sent to a local SMTP server.
.PHONY: bench-reminders
bench-reminders: $(STAMP)
	python -m tests.bench.reminders $(BENCH_ARGS)
# 200 participant reports of 12 visits, built by 2 worker processes (PostgreSQL only).
bench-report: $(STAMP)
	python -m tests.bench.report $(BENCH_ARGS)
