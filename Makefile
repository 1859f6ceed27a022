# postgres-ras — `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
PGRAS := $(PYTHON) -m postgres_ras
NODES ?=
# Root's home is private, and postgres runs as the unprivileged 'postgres' user.
WORK_DIR ?= $(shell if [ "$$(id -u)" = 0 ]; then echo /var/tmp/pgras; else echo .pgras; fi)
export PGRAS_WORK_DIR := $(WORK_DIR)

.PHONY: help deps up down destroy list endpoints test test-unit test-integration test-access lint typecheck bench e2e

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

deps: ## install PostgreSQL 15, Consul, HAProxy, pgpool-II and the Python package (idempotent)
	bash scripts/install-deps.sh

up: deps ## start the local cluster (3 nodes or as before; NODES=N to change; HAProxy, pgpool, demo apps) and wait until healthy
	$(PGRAS) up $(if $(NODES),--nodes $(NODES))
	@$(PGRAS) endpoints

down: ## stop the local cluster (data is kept)
	$(PGRAS) down

destroy: ## stop the local cluster and delete its data
	$(PGRAS) down --destroy

list: ## show the members
	$(PGRAS) list

endpoints: ## where to connect
	$(PGRAS) endpoints

test: deps lint ## install what the tests need and run unit, integration and access tests
	$(PYTHON) -m pytest tests/unit tests/integration tests/access -p no:cacheprovider

test-unit: ## unit tests only (seconds, no services)
	$(PYTHON) -m pytest tests/unit -q -p no:cacheprovider

test-integration: deps ## real PostgreSQL + Consul + agents + controllers
	$(PYTHON) -m pytest tests/integration -p no:cacheprovider

test-access: deps ## HAProxy, pgpool, demo app, the tutorial scenario
	$(PYTHON) -m pytest tests/access -p no:cacheprovider

lint: ## ruff lint and format check, mypy on the core
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks
	$(PYTHON) -m mypy src/postgres_ras

bench: deps ## failover/switchover/rejoin benchmark (prints figures; not a test)
	$(PYTHON) benchmarks/failover.py --runs 5

e2e: ## kind cluster + helm chart (needs a registry-connected machine)
	@echo "e2e: the Helm chart is not part of this release yet (see README, 'Status'); skipping." >&2

include mk/images.mk
