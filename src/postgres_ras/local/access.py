"""The local access layer: HAProxy endpoints, pgpool and the three demo apps.

``start_access`` starts, in order, HAProxy (write and read endpoints checked
against each controller's REST API), pgpool (backend 0 = write endpoint, backend
1 = read endpoint) and the puppies app three times, as in the tutorial: through
pgpool, through the write endpoint and through the read endpoint. It starts only
what is not running already and waits (bounded) until each listens.

Guarantees: every process is tracked by PID in the ProcessTable and stopped by
that PID; configs are rewritten on every start. Does not guarantee that the
database behind the endpoints is up: the apps wait for it by themselves.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from postgres_ras.errors import PgrasError
from postgres_ras.local.haproxy import render_haproxy_cfg
from postgres_ras.local.layout import Layout, NodePorts
from postgres_ras.local.procs import ProcessTable
from postgres_ras.pgpool.conf import PgpoolSettings, pgpool_argv, write_config

HAPROXY = "haproxy"
PGPOOL = "pgpool"
APPS = ("app-pgpool", "app-write", "app-read")
START_TIMEOUT = 20.0
# Kept small: one app's pool (2 workers x 4 connections) fits many times over,
# and each pgpool child holds two backend connections (write and read endpoint).
PGPOOL_CHILDREN = 16


class AccessError(PgrasError):
    """A component of the access layer failed to start or reload."""


def conninfo(
    layout: Layout, port: int, superuser: tuple[str, str], dbname: str = "postgres"
) -> str:
    user, password = superuser
    return f"host={layout.host} port={port} user={user} password={password} dbname={dbname}"


def endpoints(layout: Layout, superuser: tuple[str, str]) -> dict[str, str]:
    """Where to connect: libpq conninfo strings and the demo app URLs."""
    base = f"http://{layout.host}"
    return {
        "write": conninfo(layout, layout.haproxy_write, superuser),
        "read": conninfo(layout, layout.haproxy_read, superuser),
        "pgpool": conninfo(layout, layout.pgpool, superuser),
        "app_pgpool": f"{base}:{layout.app_pgpool}/api/puppies",
        "app_write": f"{base}:{layout.app_write}/api/puppies",
        "app_read": f"{base}:{layout.app_read}/api/puppies",
        "haproxy_stats": f"{base}:{layout.haproxy_stats}/",
    }


def haproxy_config_path(layout: Layout) -> Path:
    return layout.component_dir("haproxy") / "haproxy.cfg"


def pgpool_settings(layout: Layout, superuser: tuple[str, str]) -> PgpoolSettings:
    return PgpoolSettings(
        write_host=layout.host,
        write_port=layout.haproxy_write,
        read_host=layout.host,
        read_port=layout.haproxy_read,
        user=superuser[0],
        password=superuser[1],
        work_dir=layout.component_dir("pgpool").resolve(),
        port=layout.pgpool,
        pcp_port=layout.pgpool_pcp,
        listen_addresses=layout.host,
        num_init_children=PGPOOL_CHILDREN,
    )


def _write_haproxy_config(layout: Layout, nodes: Sequence[NodePorts]) -> Path:
    path = haproxy_config_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_haproxy_cfg(layout, nodes))
    check = subprocess.run(
        [_binary("haproxy"), "-c", "-q", "-f", str(tmp)], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0:
        raise AccessError(f"invalid HAProxy configuration {tmp}: {check.stderr.strip()}")
    tmp.replace(path)
    return path


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise AccessError(f"{name} not found on PATH: install it (apt-get install {name})")
    return found


def _wait_listening(table: ProcessTable, name: str, host: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if table.get(name) is None:
            raise AccessError(f"{name} exited at start:\n{_log_tail(table, name)}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise AccessError(
        f"{name} not listening on {host}:{port} after {START_TIMEOUT}s:\n{_log_tail(table, name)}"
    )


def _log_tail(table: ProcessTable, name: str, chars: int = 3000) -> str:
    try:
        return table.log_file(name).read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _start_haproxy(layout: Layout, table: ProcessTable, nodes: Sequence[NodePorts]) -> None:
    if table.get(HAPROXY) is not None:
        return
    cfg = _write_haproxy_config(layout, nodes)
    # -W master-worker in the foreground (-db): SIGUSR2 to the tracked PID reloads.
    table.start(HAPROXY, [_binary("haproxy"), "-W", "-db", "-f", str(cfg)])
    _wait_listening(table, HAPROXY, layout.host, layout.haproxy_write)


def _start_pgpool(layout: Layout, table: ProcessTable, superuser: tuple[str, str]) -> None:
    if table.get(PGPOOL) is not None:
        return
    settings = pgpool_settings(layout, superuser)
    write_config(settings)
    # Not running (per the table): whatever pid or socket file is left is stale.
    for stale in [settings.run_dir / "pgpool.pid", *settings.run_dir.glob(".s.PGSQL.*")]:
        stale.unlink(missing_ok=True)
    table.start(PGPOOL, pgpool_argv(settings, _binary("pgpool")), cwd=settings.work_dir)
    _wait_listening(table, PGPOOL, layout.host, layout.pgpool)


def _start_app(layout: Layout, table: ProcessTable, name: str, port: int, dsn: str) -> None:
    if table.get(name) is not None:
        return
    app_dir = layout.component_dir("apps")
    app_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{layout.host}:{port}",
        "--workers", "2", "--threads", "4", "--worker-class", "gthread",
        "--timeout", "30", "--graceful-timeout", "5",
        "--access-logfile", "-", "--error-logfile", "-",
        # Its control socket would live in ~/.gunicorn: nothing here uses it.
        "--no-control-socket",
        "postgres_ras.demo_app.wsgi:app",
    ]  # fmt: skip
    table.start(name, argv, env={"PUPPIES_DSN": dsn}, cwd=app_dir)
    _wait_listening(table, name, layout.host, port)


def start_access(
    layout: Layout, table: ProcessTable, nodes: list[NodePorts], superuser: tuple[str, str]
) -> None:
    """Start HAProxy, pgpool and the three apps; skip what already runs.

    Raises AccessError (with the component's log tail) if one does not come up.
    """
    _start_haproxy(layout, table, nodes)
    _start_pgpool(layout, table, superuser)
    apps = {
        "app-pgpool": (layout.app_pgpool, layout.pgpool),
        "app-write": (layout.app_write, layout.haproxy_write),
        "app-read": (layout.app_read, layout.haproxy_read),
    }
    for name, (app_port, db_port) in apps.items():
        _start_app(layout, table, name, app_port, conninfo(layout, db_port, superuser))


def reload_haproxy(layout: Layout, table: ProcessTable, nodes: list[NodePorts]) -> None:
    """Rewrite haproxy.cfg for ``nodes`` and reload it (start it if not running).

    The reload is seamless for new connections; connections held by the old
    worker end within ``hard-stop-after``.
    """
    _write_haproxy_config(layout, nodes)
    if not table.send_signal(HAPROXY, signal.SIGUSR2):
        _start_haproxy(layout, table, nodes)


def stop_access(layout: Layout, table: ProcessTable) -> None:
    """Stop the apps, pgpool and HAProxy (by PID, bounded waits)."""
    for name in APPS:
        table.stop(name, timeout=10.0)
    # SIGINT is pgpool's fast shutdown; SIGTERM (smart) would wait for every client.
    table.stop(PGPOOL, timeout=10.0, sig=signal.SIGINT)
    table.stop(HAPROXY, timeout=10.0)
