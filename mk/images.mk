# Container images (one multi-stage images/Dockerfile, a target per image) and the
# images test tier (issues 4, 8, 10): database pods made from the Helm chart's
# rendered StatefulSet (helm from scripts/helm.sh).
# Included from the top-level Makefile; paths are relative to the repository root.
# `make test-images` also needs the host's consul binary and the test Python
# packages: it depends on the top-level `deps` target (override with
# IMAGES_TEST_DEPS= when using this fragment on its own).

IMAGES_PYTHON ?= $(or $(PYTHON),python3)
IMAGES_TEST_DEPS ?= deps
IMAGES_PYTEST_ARGS ?=

.PHONY: images test-images

images: ## build the four images postgres-ras/{postgres,pg-controller,pgpool,demo-app}:dev from images/Dockerfile (starts Docker if needed)
	bash scripts/docker-engine.sh
	bash scripts/build-images.sh

test-images: $(IMAGES_TEST_DEPS) images ## build images and run the container tests (chart-made pods: probes, kill, restart, partition, SIGSTOP, pod deletion, basebackup, stop)
	@start=$$(date +%s); \
	$(IMAGES_PYTHON) -m pytest -m images tests/images -v -s -p no:cacheprovider $(IMAGES_PYTEST_ARGS); \
	rc=$$?; echo "test-images: container tests took $$(( $$(date +%s) - start ))s"; exit $$rc
