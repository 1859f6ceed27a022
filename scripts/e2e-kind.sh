#!/usr/bin/env bash
# make e2e: the Helm chart on a kind cluster (1 control plane + 3 workers).
#
#  1. checks what it needs (kind, a running Docker engine, kubectl, helm, image
#     pulls from Docker Hub, the e2e Python packages) and, when something is
#     missing, says what and exits 0 AT ONCE (machines without a registry, such as
#     the project's CI, cannot run kind: see ../shared ENVIRONMENT notes);
#  2. creates the kind cluster, builds the four images (scripts/build-images.sh)
#     and loads them into the nodes with Consul's image;
#  3. helm upgrade --install --wait with charts/postgres-ras/ci/kind-values.yaml;
#  4. runs pytest tests/e2e (tutorial scenario through the Services and pgpool,
#     primary pod deleted, scale 3 -> 5 -> 3 with the primary on the highest
#     ordinal, rolling image upgrade, helm test, uninstall) and prints the figures;
#  5. deletes the cluster (E2E_KEEP=1 keeps it).
#
# Environment: KIND_CLUSTER (pgras-e2e), E2E_NAMESPACE (pgras-e2e), E2E_RELEASE (pg),
# KIND_NODE_IMAGE (kind's default), CONSUL_IMAGE (the chart's consul.image),
# E2E_KEEP=1, PYTHON (python3), E2E_PYTEST_ARGS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-pgras-e2e}"
NAMESPACE="${E2E_NAMESPACE:-pgras-e2e}"
RELEASE="${E2E_RELEASE:-pg}"
PYTHON="${PYTHON:-python3}"
CHART="$ROOT/charts/postgres-ras"
VALUES="$CHART/ci/kind-values.yaml"
TAG=dev
IMAGES=(postgres pg-controller pgpool demo-app)

say() { echo "e2e: $*" >&2; }
skip() {
    say "SKIPPED, nothing was run: $*"
    say "make e2e needs a machine with Docker, kind, kubectl and access to Docker Hub;"
    say "the chart is proven offline by 'make test-chart' and in Docker by 'make test-images'."
    exit 0
}

# ---- 1. what is needed; stop at once, exit 0, when something is missing ----------
missing=()
command -v kind >/dev/null 2>&1 \
    || missing+=("kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
command -v kubectl >/dev/null 2>&1 || missing+=("kubectl (apt-get install kubectl)")
if ! command -v docker >/dev/null 2>&1; then
    missing+=("docker (apt-get install docker.io)")
elif ! timeout 15 docker info >/dev/null 2>&1; then
    missing+=("a running Docker engine (scripts/docker-engine.sh starts one)")
fi
[ ${#missing[@]} -eq 0 ] || skip "missing: $(IFS=';'; echo "${missing[*]}")"

HELM="$(bash "$ROOT/scripts/helm.sh")" || skip "missing: helm (scripts/helm.sh could not provide one)"
CONSUL_IMAGE="${CONSUL_IMAGE:-$("$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["consul"]["image"])' "$CHART/values.yaml")}"
if ! docker image inspect "$CONSUL_IMAGE" >/dev/null 2>&1 \
    && ! timeout 120 docker pull -q "$CONSUL_IMAGE" >/dev/null 2>&1; then
    skip "missing: image pulls (docker pull $CONSUL_IMAGE failed: no registry access here; kind's node image comes from the same registry)"
fi
if ! "$PYTHON" -c 'import pytest_helm_charts, pykube' >/dev/null 2>&1; then
    say "installing the e2e Python packages: pytest-helm-charts (needs pytest>=9), pykube-ng"
    "$PYTHON" -m pip install --quiet "pytest>=9" "pytest-helm-charts>=1.3" "pykube-ng>=23.6" \
        || skip "missing: the Python packages pytest-helm-charts and pykube-ng (pip install failed)"
fi

case "$("$HELM" version --short 2>/dev/null)" in
    v3.*) HELM_WAIT=(--wait) ;;
    *) HELM_WAIT=(--wait=watcher) ;;  # helm 4: --wait takes a strategy
esac

KUBECONFIG_FILE="$(mktemp -t pgras-e2e-kubeconfig.XXXXXX)"
export KUBECONFIG="$KUBECONFIG_FILE"
t0=$SECONDS

dump_and_clean() {
    rc=$?
    if [ $rc -ne 0 ] && kubectl get ns "$NAMESPACE" >/dev/null 2>&1; then
        say "failed (rc=$rc): the state of $NAMESPACE"
        kubectl -n "$NAMESPACE" get pods -o wide -L role || true
        for pod in $(kubectl -n "$NAMESPACE" get pods -l "app.kubernetes.io/component=database" -o name 2>/dev/null); do
            echo "===== $pod (controller, last lines)"; kubectl -n "$NAMESPACE" logs "$pod" -c controller --tail=40 || true
            echo "===== $pod (postgres, last lines)"; kubectl -n "$NAMESPACE" logs "$pod" -c postgres --tail=20 || true
        done
    fi
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        say "kept kind cluster $CLUSTER (KUBECONFIG=$KUBECONFIG_FILE); delete with: kind delete cluster --name $CLUSTER"
    else
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
        rm -f "$KUBECONFIG_FILE"
    fi
    say "total $((SECONDS - t0)) s"
    exit $rc
}
trap dump_and_clean EXIT

# ---- 2. cluster and images ---------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    say "reusing kind cluster $CLUSTER"
else
    say "creating kind cluster $CLUSTER (1 control plane + 3 workers)"
    kind create cluster --name "$CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} \
        --wait 180s --config - <<'KIND'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
  - role: worker
KIND
fi
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
say "cluster ready after $((SECONDS - t0)) s"

bash scripts/docker-engine.sh >/dev/null
TAG=$TAG bash scripts/build-images.sh
to_load=("$CONSUL_IMAGE")
for name in "${IMAGES[@]}"; do
    # dev2: the same images under a new tag, for the rolling image upgrade test.
    docker tag "postgres-ras/$name:$TAG" "postgres-ras/$name:${TAG}2"
    to_load+=("postgres-ras/$name:$TAG" "postgres-ras/$name:${TAG}2")
done
kind load docker-image --name "$CLUSTER" "${to_load[@]}"
say "images built and loaded after $((SECONDS - t0)) s"

# ---- 3. install ---------------------------------------------------------------------
start=$SECONDS
"$HELM" upgrade --install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --create-namespace \
    -f "$VALUES" "${HELM_WAIT[@]}" --timeout 10m
say "helm upgrade --install --wait took $((SECONDS - start)) s"

# ---- 4. the tests -------------------------------------------------------------------
# E2E_PYTEST_ARGS is split into words on purpose.
# shellcheck disable=SC2086
PGRAS_E2E=1 E2E_NAMESPACE="$NAMESPACE" E2E_RELEASE="$RELEASE" E2E_VALUES="$VALUES" \
    HELM="$HELM" E2E_HELM_WAIT="${HELM_WAIT[*]}" \
    "$PYTHON" -m pytest tests/e2e -v -s -p no:cacheprovider ${E2E_PYTEST_ARGS:-}
