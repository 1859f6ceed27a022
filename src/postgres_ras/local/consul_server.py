"""The local Consul servers of the one-machine cluster: one by default, 3 or 5 on request.

Real servers with data directories (not ``-dev``) so that a restart keeps
the KV store and the raft membership, as in production; ``raft_multiplier =
1`` so a server elects itself in about a second after a restart, and three
servers elect a new leader within a few seconds of losing theirs.

Every server binds loopback on its own ports (``Layout.consul``); the extra
servers find the others with ``-retry-join`` on their serf ports, so any
server that comes back (SIGKILLed, restarted by ``start``) rejoins by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any

import requests

from postgres_ras.errors import FatalError
from postgres_ras.local.layout import ConsulPorts, Layout, check_consul_servers
from postgres_ras.local.procs import ProcessTable

NAME = "consul"  # server 0, the only one of a default cluster
BIND = "127.0.0.1"
POLL = 0.2


def consul_binary() -> str:
    found = shutil.which("consul")
    if found is None:
        raise FatalError("consul is not installed: run `make deps` (or scripts/install-deps.sh)")
    return found


def node_name(layout: Layout, server: ConsulPorts) -> str:
    # Server 0 keeps the name a one-server cluster always had: raft knows it by it.
    return (
        f"pgras-{layout.cluster}"
        if server.index == 0
        else f"pgras-{layout.cluster}-{server.index + 1}"
    )


def names(layout: Layout, servers: int) -> list[str]:
    """The ProcessTable names of the ``servers`` Consul servers."""
    return [s.name for s in layout.consul_servers(servers)]


def argv(layout: Layout, index: int = 0, servers: int = 1, binary: str | None = None) -> list[str]:
    """The command line of server ``index`` of a ``servers``-server cluster."""
    all_servers = layout.consul_servers(servers)
    if not 0 <= index < servers:
        raise ValueError(f"Consul server index {index} out of range 0..{servers - 1}")
    me = all_servers[index]
    out = [
        binary or consul_binary(),
        "agent",
        "-server",
        f"-bootstrap-expect={servers}",
        f"-data-dir={layout.component_dir(me.name)}",
        f"-bind={BIND}",
        f"-client={BIND}",
        f"-http-port={me.http}",
        f"-server-port={me.server}",
        f"-serf-lan-port={me.serf}",
        "-serf-wan-port=-1",
        "-dns-port=-1",
        f"-node={node_name(layout, me)}",
        "-log-level=warn",
        "-disable-host-node-id",
    ]
    out += [f"-retry-join={BIND}:{other.serf}" for other in all_servers if other is not me]
    if servers > 1:
        # The default 30 s between join attempts would keep a restarted server out that long.
        out.append("-retry-interval=1s")
    out += [
        "-hcl",
        "performance { raft_multiplier = 1 }",
        "-hcl",
        "disable_update_check = true",
    ]
    return out


def _status(server: ConsulPorts, what: str, timeout: float) -> Any:
    """``/v1/status/<what>`` of one server, or None when it does not answer."""
    try:
        resp = requests.get(f"{server.url}/v1/status/{what}", timeout=timeout)
        return resp.json() if resp.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def server_healthy(server: ConsulPorts, servers: int, expected: set[str], timeout: float) -> bool:
    """This server knows a raft leader and (for several servers) lists every peer."""
    if _status(server, "leader", timeout) in ("", None):
        return False
    if servers == 1:
        return True
    peers = _status(server, "peers", timeout)
    return isinstance(peers, list) and expected <= set(peers)


def healthy(layout: Layout, timeout: float = 1.0, servers: int = 1) -> bool:
    """Every one of the ``servers`` servers is ready (see ``server_healthy``)."""
    all_servers = layout.consul_servers(servers)
    expected = {s.raft_address for s in all_servers}
    return all(server_healthy(s, servers, expected, timeout) for s in all_servers)


def start(layout: Layout, table: ProcessTable, wait: float = 30.0, servers: int = 1) -> None:
    """Start whichever of the ``servers`` servers is not running; wait until all are ready."""
    check_consul_servers(servers)
    for server in layout.consul_servers(servers):
        if table.get(server.name) is None:
            layout.component_dir(server.name).mkdir(parents=True, exist_ok=True)
            table.start(server.name, argv(layout, server.index, servers))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if healthy(layout, servers=servers):
            return
        dead = [n for n in names(layout, servers) if table.get(n) is None]
        if dead:
            raise FatalError(f"Consul server {dead[0]} exited; see {table.log_file(dead[0])}")
        time.sleep(POLL)
    what = f"{servers} Consul servers" if servers > 1 else "Consul"
    logs = ", ".join(str(table.log_file(n)) for n in names(layout, servers))
    raise FatalError(
        f"{what} did not become ready (a raft leader"
        + (" and every server listed as a peer" if servers > 1 else "")
        + f") within {wait:.0f}s on {layout.consul_url}; see {logs}"
    )


def leader(layout: Layout, servers: int, timeout: float = 1.0) -> ConsulPorts | None:
    """The raft leader as the first answering server names it (None: none known).

    ``/v1/status/leader`` names the leader by its raft address, 127.0.0.1:<server port>,
    which maps back to one of this layout's servers."""
    all_servers = layout.consul_servers(servers)
    by_address = {s.raft_address: s for s in all_servers}
    for server in all_servers:
        answer = _status(server, "leader", timeout)
        if isinstance(answer, str) and answer in by_address:
            return by_address[answer]
    return None


def wait_new_leader(
    layout: Layout, servers: int, old: ConsulPorts, timeout: float
) -> ConsulPorts | None:
    """A leader other than ``old`` that the surviving servers agree on, or None after
    ``timeout``; only the survivors are asked, so ``old`` coming back cannot answer."""
    survivors = [s for s in layout.consul_servers(servers) if s.index != old.index]
    by_address = {s.raft_address: s for s in survivors}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers = {_status(s, "leader", 0.5) for s in survivors}
        if len(answers) == 1:
            answer = answers.pop()
            if isinstance(answer, str) and answer in by_address:
                return by_address[answer]
        time.sleep(0.05)
    return None


def kill_leader(layout: Layout, table: ProcessTable, servers: int) -> ConsulPorts:
    """SIGKILL the raft leader's process (by the PID of its ProcessTable entry); the
    caller restarts it (``start``, or ``LocalCluster.up``). FatalError when there is a
    single server (its loss is an outage, not an election), no leader or no process."""
    if servers < 3:
        raise FatalError("kill-consul-leader needs a cluster started with --consul-servers 3")
    found = leader(layout, servers)
    if found is None:
        raise FatalError("no Consul raft leader right now: nothing to kill")
    proc = table.get(found.name)
    if proc is None:
        raise FatalError(f"the Consul leader {found.name} is not in the process table")
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        raise FatalError(f"the Consul leader {found.name} exited before it was killed") from None
    return found
