"""One local Consul server for the one-machine cluster.

A real server with a data directory (not ``-dev``) so that a restart keeps
the KV store, as in production; ``raft_multiplier = 1`` so it elects itself
in about a second after a restart.
"""

from __future__ import annotations

import shutil
import time

import requests

from postgres_ras.errors import FatalError
from postgres_ras.local.layout import Layout
from postgres_ras.local.procs import ProcessTable

NAME = "consul"


def consul_binary() -> str:
    found = shutil.which("consul")
    if found is None:
        raise FatalError("consul is not installed: run `make deps` (or scripts/install-deps.sh)")
    return found


def argv(layout: Layout) -> list[str]:
    data = layout.component_dir("consul")
    return [
        consul_binary(),
        "agent",
        "-server",
        "-bootstrap-expect=1",
        f"-data-dir={data}",
        "-bind=127.0.0.1",
        "-client=127.0.0.1",
        f"-http-port={layout.consul_http}",
        f"-server-port={layout.consul_server}",
        f"-serf-lan-port={layout.consul_serf}",
        "-serf-wan-port=-1",
        "-dns-port=-1",
        f"-node=pgras-{layout.cluster}",
        "-log-level=warn",
        "-disable-host-node-id",
        "-hcl",
        "performance { raft_multiplier = 1 }",
        "-hcl",
        "disable_update_check = true",
    ]


def healthy(layout: Layout, timeout: float = 1.0) -> bool:
    try:
        resp = requests.get(f"{layout.consul_url}/v1/status/leader", timeout=timeout)
        return resp.status_code == 200 and resp.json() not in ("", None)
    except (requests.RequestException, ValueError):
        return False


def start(layout: Layout, table: ProcessTable, wait: float = 30.0) -> None:
    if table.get(NAME) is None:
        layout.component_dir("consul").mkdir(parents=True, exist_ok=True)
        table.start(NAME, argv(layout))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if healthy(layout):
            return
        if table.get(NAME) is None:
            break
        time.sleep(0.2)
    raise FatalError(
        f"Consul did not become ready on {layout.consul_url}; see {table.log_file(NAME)}"
    )
