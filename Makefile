# postgres-ras — `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Python used only to create the project virtualenv; everything else runs in it.
# Inside an active virtualenv that one is used instead of .venv.
PYTHON ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
PGRAS := $(PY) -m postgres_ras
PYTEST := $(PY) -m pytest -p no:cacheprovider
# Written when the locked packages are installed; newer inputs reinstall, nothing else does.
PY_STAMP := $(VENV)/.pgras-deps
NODES ?=
# Root's home is private, and postgres runs as the unprivileged 'postgres' user.
WORK_DIR ?= $(shell if [ "$$(id -u)" = 0 ]; then echo /var/tmp/pgras; else echo "$${XDG_STATE_HOME:-$$HOME/.local/state}/pgras"; fi)
export PGRAS_WORK_DIR := $(WORK_DIR)

.PHONY: help deps system-deps python-deps up down destroy list endpoints test test-unit \
	test-integration test-access test-chaos chaos test-first-hour lint typecheck bench lock deps-latest

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

deps: system-deps python-deps ## install what is missing: PostgreSQL 15, Consul, HAProxy, pgpool-II (apt) and the Python packages (.venv)

system-deps: ## install the missing Debian packages only (sudo when not root; nothing reinstalled or stopped)
	@bash scripts/install-deps.sh

python-deps: $(PY_STAMP) ## create .venv and install the locked Python packages (skipped when nothing changed)

$(PY_STAMP): pyproject.toml requirements/constraints.txt scripts/python-deps.sh
	@PYTHON=$(PYTHON) bash scripts/python-deps.sh $(VENV)
	@touch $@

up: system-deps $(PY_STAMP) ## start the local cluster (3 nodes or as before; NODES=N to change; HAProxy, pgpool, demo apps) and wait until healthy
	@$(PGRAS) up $(if $(NODES),--nodes $(NODES))
	@$(PGRAS) endpoints

down: $(PY_STAMP) ## stop the local cluster (data is kept)
	@$(PGRAS) down

destroy: $(PY_STAMP) ## stop the local cluster and delete its data
	@$(PGRAS) down --destroy

list: $(PY_STAMP) ## show the members
	@$(PGRAS) list

endpoints: $(PY_STAMP) ## where to connect
	@$(PGRAS) endpoints

test: deps lint ## install what the tests need; lint, then unit, chart, integration, access and short chaos tests
	$(PYTEST) tests/unit tests/chart tests/integration tests/access tests/chaos

test-unit: $(PY_STAMP) ## unit tests only (seconds, no services)
	$(PYTEST) tests/unit -q

test-integration: deps ## real PostgreSQL + Consul + agents + controllers
	$(PYTEST) tests/integration

test-access: deps ## HAProxy, pgpool, demo app, the tutorial scenario
	$(PYTEST) tests/access

test-chaos: deps ## a short `pgras verify` on a real local cluster (~80 s)
	$(PYTEST) tests/chaos

CHAOS_FAULTS ?= kill-primary,kill-controller,kill-agent,stop-primary,kill-replica,restart-consul,double,restart-pgpool,partition-primary,repeat
CHAOS_RUNS ?= 5
chaos: deps ## every fault CHAOS_RUNS (5) times against a fresh local cluster (~20 min); writes chaos.json and chaos.png
	@dir=$$(mktemp -d /tmp/pgras-chaos.XXXXXX); chmod 755 $$dir; rc=0; \
	$(PGRAS) --work-dir $$dir --base-port 23000 up >/dev/null && \
	$(PGRAS) --work-dir $$dir verify --runs $(CHAOS_RUNS) --faults $(CHAOS_FAULTS) \
		$(if $(SYNC),--synchronous) --json --plot chaos.png > chaos.json || rc=$$?; \
	$(PGRAS) --work-dir $$dir down --destroy >/dev/null; \
	$(PY) -c 'import json; print(json.dumps(json.load(open("chaos.json")).get("total"), indent=2))' || true; \
	exit $$rc

test-first-hour: system-deps ## the README's quick start as a throwaway normal user in a fresh clone (root only)
	bash scripts/first-hour.sh

lint: $(PY_STAMP) ## ruff lint and format check, mypy on the core
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy src/postgres_ras

bench: deps ## failover/switchover/rejoin benchmark (prints figures; not a test)
	$(PY) benchmarks/failover.py --runs 5

lock: ## re-resolve requirements/constraints.txt after a dependency change
	PYTHON=$(PYTHON) bash scripts/lock.sh

deps-latest: system-deps ## install the newest releases in .venv-latest and run the unit and demo-app tests: shows what a newer version breaks
	@rm -f .venv-latest/.pgras-deps
	@PYTHON=$(PYTHON) bash scripts/python-deps.sh .venv-latest latest
	@.venv-latest/bin/pip freeze --exclude-editable | grep -vxFf requirements/constraints.txt \
		| sed 's/^/deps-latest: newer than the lock: /' || true
	.venv-latest/bin/python -m pytest -p no:cacheprovider -q tests/unit tests/access/test_demo_app.py

IMAGES_PYTHON := $(PY)
IMAGES_TEST_DEPS := deps
include mk/images.mk
include mk/chart.mk
