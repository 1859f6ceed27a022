"""Where everything of a local cluster lives: ports, directories, file names.

All ports derive from one base port so two clusters (a developer's and a
test run's) never collide; the defaults stay away from 5432/8500/9999.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_PORT = 25000
MAX_NODES = 50
# Odd counts only: an even one tolerates no more failures than the odd one below it.
CONSUL_SERVER_COUNTS = (1, 3, 5)
# Servers after the first take three ports each from here on (base+40..base+51 for five):
# the first keeps base+0..2 so a one-server cluster's ports never change.
CONSUL_EXTRA_OFFSET = 40


def check_consul_servers(count: int) -> int:
    """``count`` when it is an allowed number of Consul servers; ValueError naming the option."""
    if count not in CONSUL_SERVER_COUNTS:
        allowed = ", ".join(map(str, CONSUL_SERVER_COUNTS))
        raise ValueError(
            f"--consul-servers must be one of {allowed} (an odd number, so a majority "
            f"survives a lost server), not {count}"
        )
    return count


@dataclass(frozen=True)
class NodePorts:
    name: str
    index: int
    postgres: int
    agent: int
    api: int
    # Where HAProxy reaches the node when it is not the layout's host (pods in Docker).
    host: str | None = None


@dataclass(frozen=True)
class ConsulPorts:
    """One local Consul server: its process name (the ProcessTable's and the data dir's)."""

    name: str
    index: int
    http: int
    server: int
    serf: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http}"

    @property
    def raft_address(self) -> str:
        """How ``/v1/status/leader`` and ``/v1/status/peers`` name this server (every local
        server binds loopback, whatever host the HTTP URL names)."""
        return f"127.0.0.1:{self.server}"


@dataclass(frozen=True)
class Layout:
    work_dir: Path
    base_port: int = DEFAULT_BASE_PORT
    cluster: str = "pgras"
    host: str = "127.0.0.1"

    # Consul: server 0 (the only one by default) and the extra ones of --consul-servers.
    def consul(self, index: int) -> ConsulPorts:
        """Server ``index`` (0-based); ``consul(0)`` is consul_http/consul_server/consul_serf."""
        if not 0 <= index < max(CONSUL_SERVER_COUNTS):
            raise ValueError(
                f"Consul server index {index} out of range 0..{max(CONSUL_SERVER_COUNTS) - 1}"
            )
        first = self.base_port
        if index > 0:
            first += CONSUL_EXTRA_OFFSET + 3 * (index - 1)
        return ConsulPorts(
            name="consul" if index == 0 else f"consul{index + 1}",
            index=index,
            http=first,
            server=first + 1,
            serf=first + 2,
            host=self.host,
        )

    def consul_servers(self, count: int) -> list[ConsulPorts]:
        return [self.consul(i) for i in range(check_consul_servers(count))]

    def node_consul(self, node_index: int, count: int) -> ConsulPorts:
        """The server node ``node_index`` (1-based) talks to, as a pod talks to its local
        agent: spread round-robin so losing one server cuts off as few nodes as possible."""
        return self.consul((node_index - 1) % check_consul_servers(count))

    def node_consul_fallbacks(self, node_index: int, count: int) -> list[ConsulPorts]:
        """The other servers, in the order node ``node_index`` tries them when its own stops
        answering: the next ones round-robin, so the survivors share its load."""
        first = (node_index - 1) % check_consul_servers(count)
        return [self.consul((first + step) % count) for step in range(1, count)]

    @property
    def consul_http(self) -> int:
        return self.base_port

    @property
    def consul_server(self) -> int:
        return self.base_port + 1

    @property
    def consul_serf(self) -> int:
        return self.base_port + 2

    @property
    def consul_url(self) -> str:
        return f"http://{self.host}:{self.consul_http}"

    # Access layer.
    @property
    def haproxy_write(self) -> int:
        return self.base_port + 10

    @property
    def haproxy_read(self) -> int:
        return self.base_port + 11

    @property
    def haproxy_stats(self) -> int:
        return self.base_port + 12

    @property
    def pgpool(self) -> int:
        return self.base_port + 20

    @property
    def pgpool_pcp(self) -> int:
        return self.base_port + 21

    @property
    def app_pgpool(self) -> int:
        return self.base_port + 30

    @property
    def app_write(self) -> int:
        return self.base_port + 31

    @property
    def app_read(self) -> int:
        return self.base_port + 32

    def node(self, index: int) -> NodePorts:
        if not 1 <= index <= MAX_NODES:
            raise ValueError(f"node index {index} out of range 1..{MAX_NODES}")
        return NodePorts(
            name=f"node{index}",
            index=index,
            postgres=self.base_port + 100 + index,
            agent=self.base_port + 200 + index,
            api=self.base_port + 300 + index,
        )

    # Directories.
    @property
    def logs(self) -> Path:
        return self.work_dir / "logs"

    @property
    def run(self) -> Path:
        return self.work_dir / "run"

    def node_dir(self, name: str) -> Path:
        return self.work_dir / "nodes" / name

    def component_dir(self, name: str) -> Path:
        return self.work_dir / name

    @property
    def state_file(self) -> Path:
        """Records the node count and base port so later commands find the cluster."""
        return self.work_dir / "cluster.json"
