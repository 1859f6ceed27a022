"""Where everything of a local cluster lives: ports, directories, file names.

All ports derive from one base port so two clusters (a developer's and a
test run's) never collide; the defaults stay away from 5432/8500/9999.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_PORT = 25000
MAX_NODES = 50


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
class Layout:
    work_dir: Path
    base_port: int = DEFAULT_BASE_PORT
    cluster: str = "pgras"
    host: str = "127.0.0.1"

    # Consul (one local server agent).
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
