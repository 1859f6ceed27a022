#!/usr/bin/env bash
# Make sure the base image (default debian:bookworm-slim) exists locally.
# Order: already present -> `docker pull` (real users) -> build it from
# Debian's archive with debootstrap and `docker import` (no registry here).
# The debootstrap tarball is cached under build/ so reruns take seconds.
set -euo pipefail

IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_DIR="$ROOT/build/base-image"
TARBALL="$CACHE_DIR/${SUITE}-minbase.tar"

log() { echo "base-image: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE present"
    exit 0
fi

if timeout 60 docker pull "$IMAGE" >/dev/null 2>&1; then
    log "pulled $IMAGE"
    exit 0
fi

log "cannot pull $IMAGE; building it with debootstrap from $MIRROR"
if [ ! -s "$TARBALL" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    mkdir -p "$CACHE_DIR"
    work="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant=minbase "$SUITE" "$work" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 || {
        log "debootstrap failed; see $CACHE_DIR/debootstrap.log"
        tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
        exit 1
    }
    # Slim it the way the official -slim image is: no apt lists, no docs.
    rm -rf "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/*.bin "$work"/var/cache/apt/archives/*.deb \
        "$work"/usr/share/doc/* "$work"/usr/share/man/* "$work"/usr/share/info/*
    tar -C "$work" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi
docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$TARBALL" "$IMAGE" >/dev/null
log "imported $IMAGE from $TARBALL"
