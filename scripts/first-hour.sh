#!/usr/bin/env bash
# A normal user's first hour, checked: a throwaway non-root account clones this
# repository and follows the README's quick start literally (`make up`, `pgras list`,
# `pgras endpoints` from another directory, `make down`, `make destroy`). Fails on
# any step that needs more than the README says. Prints the time from `git clone`
# to a healthy cluster.
#
# Run as root (it creates and deletes the account). The Debian packages must already
# be installed (`make system-deps`): the account has no sudo, as most users do not.
# Everything the account starts is stopped by `make destroy`, and by PID on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
USER_NAME="${FIRST_HOUR_USER:-pgras-firsthour}"
BASE_PORT="${FIRST_HOUR_BASE_PORT:-24000}"

log() { echo "first-hour: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "run as root: it creates the throwaway account $USER_NAME"
    exit 1
fi
if ! git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1; then
    log "$ROOT is not a git checkout: nothing to clone"
    exit 1
fi

cleanup() {
    local home
    home="$(getent passwd "$USER_NAME" | cut -d: -f6 || true)"
    if [ -n "$home" ] && [ -d "$home/clone" ]; then
        runuser -u "$USER_NAME" -- bash -lc "cd ~/clone && make destroy" >/dev/null 2>&1 || true
    fi
    # Anything the account still runs (a failed `make up` half-way) is stopped by PID.
    pkill -KILL -u "$USER_NAME" >/dev/null 2>&1 || true
    userdel -r "$USER_NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
useradd -m -s /bin/bash "$USER_NAME"

as_user() {
    # A login shell: the PATH and environment of a normal account, no root leftovers.
    runuser -u "$USER_NAME" -- env -i HOME="$(getent passwd "$USER_NAME" | cut -d: -f6)" \
        USER="$USER_NAME" LANG=C.UTF-8 PGRAS_BASE_PORT="$BASE_PORT" bash -lc "$1"
}

start=$(date +%s.%N)
# The clone reads the committed tree; make it readable by the account.
bundle="$(mktemp -d)/repo.bundle"
git -C "$ROOT" bundle create "$bundle" HEAD >/dev/null 2>&1
chmod 0755 "$(dirname "$bundle")"
chmod 0644 "$bundle"
as_user "git clone -q $bundle ~/clone"
rm -rf "$(dirname "$bundle")"

log "make up as $USER_NAME (no sudo, fresh clone, no virtualenv)"
if ! as_user "cd ~/clone && make up"; then
    log "make up failed for a normal user; its logs:"
    as_user 'tail -n 30 ~/.local/state/pgras/logs/*.log 2>/dev/null' || true
    exit 1
fi
healthy=$(date +%s.%N)

log "pgras list and endpoints from another directory"
out="$(as_user 'cd /tmp && ~/clone/.venv/bin/pgras list')"
echo "$out"
leaders=$(grep -c '| Leader ' <<<"$out" || true)
streaming=$(grep -c '| streaming ' <<<"$out" || true)
if [ "$leaders" -ne 1 ] || [ "$streaming" -ne 2 ]; then
    log "expected 1 leader and 2 streaming replicas, got $leaders and $streaming"
    exit 1
fi
endpoints="$(as_user 'cd / && ~/clone/.venv/bin/pgras endpoints')"
echo "$endpoints"
if grep -q 'password= ' <<<"$endpoints" || grep -q 'password=$' <<<"$endpoints"; then
    log "pgras endpoints printed an empty password outside the clone"
    exit 1
fi

log "make down, make up again (data kept), make destroy"
as_user "cd ~/clone && make down && make up >/dev/null && make destroy"
if [ -e "$(getent passwd "$USER_NAME" | cut -d: -f6)/.gunicorn" ]; then
    log "gunicorn left ~/.gunicorn behind"
    exit 1
fi
awk -v a="$start" -v b="$healthy" 'BEGIN { printf "first-hour: git clone to a healthy cluster (venv, locked packages, 3 nodes, access layer): %.1f s\n", b - a }'
