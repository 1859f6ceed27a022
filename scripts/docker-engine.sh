#!/usr/bin/env bash
# Make a working Docker engine available: install docker.io from Debian when
# the client or daemon is missing, and start dockerd in the background when
# `docker info` fails (no systemd on the CI machines).
# Exit status 0 = `docker info` works; non-zero = it could not be made to work.
set -euo pipefail

WAIT_SECONDS="${DOCKERD_WAIT_SECONDS:-60}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

log() { echo "docker-engine: $*" >&2; }

if docker info >/dev/null 2>&1; then
    log "engine already running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        log "docker is missing and we are not root: cannot install docker.io"
        exit 1
    fi
    log "installing docker.io from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
fi

if [ "$(id -u)" -ne 0 ]; then
    log "dockerd is not running and we are not root: cannot start it"
    exit 1
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    nohup dockerd >>"$LOG" 2>&1 </dev/null &
    disown || true
fi

for _ in $(seq 1 "$WAIT_SECONDS"); do
    if docker info >/dev/null 2>&1; then
        log "engine is up"
        exit 0
    fi
    sleep 1
done
log "dockerd did not answer within ${WAIT_SECONDS}s; last log lines:"
tail -n 20 "$LOG" >&2 || true
exit 1
