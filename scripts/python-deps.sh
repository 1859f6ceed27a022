#!/usr/bin/env bash
# Create the project virtualenv (if missing) and install the package with its test
# tools at the locked versions (requirements/constraints.txt). Usage:
#   scripts/python-deps.sh VENV_DIR [latest]
# With "latest", the constraints are ignored: the newest releases are installed
# (make deps-latest uses it to show what newer versions break).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${1:?usage: python-deps.sh VENV_DIR [latest]}"
MODE="${2:-locked}"
PYTHON="${PYTHON:-python3}"

log() { echo "python-deps: $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        log "$PYTHON is not a Python >= 3.11 with venv support; on Debian 12: apt-get install python3-venv"
        exit 1
    fi
    log "creating the virtualenv $VENV ($("$PYTHON" -V))"
    "$PYTHON" -m venv "$VENV"
fi
constraints=(-c requirements/constraints.txt)
[ "$MODE" = latest ] && constraints=(--upgrade --upgrade-strategy eager)
log "installing postgres-ras[test] into $VENV ($MODE versions)"
# pip's notes about the machine's extra find-links directories are noise here.
if ! "$VENV/bin/pip" install -q --disable-pip-version-check "${constraints[@]}" -e ".[test]" \
    >"$VENV/pip.log" 2>&1; then
    grep -v "is ignored: it is neither" "$VENV/pip.log" >&2 || true
    log "pip failed (full output in $VENV/pip.log)"
    exit 1
fi
"$VENV/bin/python" -c 'import postgres_ras, pytest, hypothesis, schemathesis' || {
    log "the Python packages did not install; see $VENV/pip.log"
    exit 1
}
