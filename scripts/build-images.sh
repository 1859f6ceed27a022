#!/usr/bin/env bash
# Build the four postgres-ras images, tagged postgres-ras/<name>:${TAG:-dev}.
#  1. wheels of the project and its dependencies are built on the host into
#     build/wheels (pip inside a build cannot verify PyPI's TLS proxy here);
#  2. the base image is made available (scripts/base-image.sh);
#  3. each image is one target of images/Dockerfile, built from the repository
#     root with the classic builder (the shared stages are cached after the first).
# Usage: scripts/build-images.sh [name ...]   (default: all four)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

TAG="${TAG:-dev}"
BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
PYTHON="${PYTHON:-python3}"
VERSION="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
ALL=(pg-controller demo-app pgpool postgres)   # the order of the targets in images/Dockerfile
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=("${ALL[@]}")

log() { echo "build-images: $*" >&2; }

for name in "${IMAGES[@]}"; do
    case " ${ALL[*]} " in
        *" $name "*) ;;
        *) log "unknown image '$name': choose among ${ALL[*]}"; exit 2 ;;
    esac
done

# The images run Debian bookworm's python3 (3.11): binary wheels must match it.
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    log "$PYTHON is not Python 3.11: the wheels would not install on bookworm's python3"
    exit 1
fi

log "building wheels into build/wheels"
mkdir -p build/wheels
rm -f build/wheels/postgres_ras-*.whl
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check -w build/wheels . 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
ls build/wheels/postgres_ras-*.whl >/dev/null

BASE_IMAGE="$BASE_IMAGE" "$ROOT/scripts/base-image.sh"

for name in "${IMAGES[@]}"; do
    start=$SECONDS
    log "building postgres-ras/$name:$TAG"
    DOCKER_BUILDKIT=0 docker build -q \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "VERSION=$VERSION" \
        -f images/Dockerfile --target "$name" \
        -t "postgres-ras/$name:$TAG" . 2>&1 >/dev/null \
        | { grep -v -e "legacy builder is deprecated" -e "BuildKit is currently disabled" \
            -e "environment-variable\.$" -e "^$" || true; } >&2
    size="$(docker image inspect -f '{{.Size}}' "postgres-ras/$name:$TAG")"
    log "built postgres-ras/$name:$TAG ($((size / 1000000)) MB) in $((SECONDS - start)) s"
done
