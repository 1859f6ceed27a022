#!/usr/bin/env bash
# Install the Debian packages postgres-ras needs on Debian 12 (bookworm): PostgreSQL 15,
# Consul, HAProxy, pgpool-II and Python's venv module. The Python packages go into the
# project virtualenv (scripts/python-deps.sh), never into the system.
#
# Idempotent and polite: only what is missing is installed (with sudo when not root);
# what is there is never reinstalled, and only services this run installed are
# stopped (Debian starts a default postgres/pgpool/haproxy; the local cluster runs its
# own). Binaries are looked up in /usr/sbin and /sbin too: a normal user's PATH lacks them.
#
# Consul is not in bookworm; Debian bullseye carries it (1.8.7). We add bullseye
# with an apt pin of priority 100 so nothing else is taken from it.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
have haproxy || need+=(haproxy)
have pgpool || need+=(pgpool2)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The container tier shapes a pod's link with tc.
have tc || need+=(iproute2)
need_consul=""
have consul || need_consul=1

if [ "${#need[@]}" -eq 0 ] && [ -z "$need_consul" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
        echo "install-deps: installing ${need[*]} ${need_consul:+consul} with sudo" >&2
    else
        echo "install-deps: missing ${need[*]} ${need_consul:+consul}; not root and no sudo:" \
            "ask an administrator to run 'bash scripts/install-deps.sh' as root, then run again" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
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
# Debian starts a default cluster and the services of what it just installed; we run our own.
for pkg in "${need[@]}"; do
    case "$pkg" in
        postgresql-15) $SUDO service postgresql stop >/dev/null 2>&1 || true ;;
        pgpool2) $SUDO service pgpool2 stop >/dev/null 2>&1 || true ;;
        haproxy) $SUDO service haproxy stop >/dev/null 2>&1 || true ;;
    esac
done
echo "install-deps: $(/usr/lib/postgresql/15/bin/postgres --version), $(consul version | head -1)" >&2
