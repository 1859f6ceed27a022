# Container images and the images test tier (issue 4).
# Included from the top-level Makefile; paths are relative to the repository root.

IMAGES_PYTHON ?= python3
IMAGES_PYTEST_ARGS ?=

.PHONY: images test-images

images: ## build the four images postgres-ras/{postgres,pg-controller,pgpool,demo-app}:dev (starts Docker if needed)
	bash scripts/docker-engine.sh
	bash scripts/build-images.sh

test-images: images ## build images and run the container tests (three pods, kill, restart, partition, stop)
	$(IMAGES_PYTHON) -m pytest -m images tests/images -v -s $(IMAGES_PYTEST_ARGS)
