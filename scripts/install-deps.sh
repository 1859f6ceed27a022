#!/usr/bin/env bash
# Install what postgres-ras needs on Debian 12 (bookworm): PostgreSQL 15, Consul,
# HAProxy, pgpool-II, and the Python package with its test extras.
# Idempotent: installs only what is missing. Needs root (or sudo) for apt.
#
# Consul is not in bookworm; Debian bullseye carries it (1.8.7). We add bullseye
# with an apt pin of priority 100 so nothing else is taken from it.
set -euo pipefail

need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v pgpool >/dev/null 2>&1 || need+=(pgpool2)
need_consul=""
command -v consul >/dev/null 2>&1 || need_consul=1

SUDO=""
if { [ "${#need[@]}" -gt 0 ] || [ -n "$need_consul" ]; } && [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-deps: missing ${need[*]} ${need_consul:+consul}; not root and no sudo:" \
            "install them as root (apt; consul from Debian bullseye) and run again" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if [ "${#need[@]}" -gt 0 ] || [ -n "$need_consul" ]; then
    if [ -n "$need_consul" ] && [ ! -f /etc/apt/sources.list.d/bullseye.list ]; then
        echo "deb http://deb.debian.org/debian bullseye main" | $SUDO tee /etc/apt/sources.list.d/bullseye.list >/dev/null
        printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' | $SUDO tee /etc/apt/preferences.d/bullseye-pin >/dev/null
    fi
    $SUDO apt-get update -q
    if [ "${#need[@]}" -gt 0 ]; then
        $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
    fi
    if [ -n "$need_consul" ]; then
        $SUDO apt-get install -y -q --no-install-recommends -t bullseye consul
    fi
    # Debian starts a default cluster and a pgpool service; we run our own.
    for svc in postgresql pgpool2 haproxy; do
        $SUDO service "$svc" stop >/dev/null 2>&1 || true
    done
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 \
    | grep -v "Running pip as the 'root' user" || true
"$PYTHON" -c 'import postgres_ras, pytest, hypothesis, schemathesis' || {
    echo "install-deps: the Python packages did not install; see the pip output above" >&2
    exit 1
}
echo "install-deps: $(/usr/lib/postgresql/15/bin/postgres --version), $(consul version | head -1)," \
    "$(haproxy -v | head -1 | awk '{print $1, $3}'), $(pgpool --version 2>&1)"
