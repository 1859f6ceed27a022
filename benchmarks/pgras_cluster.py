"""postgres-ras as a cluster under test: the local cluster (LocalCluster) in a temporary dir.

Implements clusters.ClusterUnderTest with the project's own local cluster and
default HA settings; no access layer (HAProxy, pgpool, apps): the writer
reaches the primary by a libpq multi-host DSN, as it does for Patroni. In
synchronous mode (``pgras up --synchronous``) healthy also means a standby is
confirmed in the ``sync`` key, as PatroniCluster waits for Patroni's /sync key.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from clusters import BenchmarkError, wait

from postgres_ras.config import HASettings
from postgres_ras.errors import DCSError, FatalError
from postgres_ras.local.cluster import LocalCluster
from postgres_ras.local.layout import Layout
from postgres_ras.local.workload import multi_host_dsn


class PgrasCluster:
    name = "postgres-ras"
    slug = "postgres-ras"

    def __init__(self, base_port: int, keep: bool = False) -> None:
        self.base_port = base_port
        self.keep = keep
        self._local: LocalCluster | None = None
        self.synchronous = False

    @property
    def local(self) -> LocalCluster:
        if self._local is None:
            raise BenchmarkError("postgres-ras cluster not started")
        return self._local

    def settings(self) -> dict[str, Any]:
        ha = HASettings()
        return {
            "ttl": ha.ttl,
            "loop_wait": ha.loop_wait,
            "retry_timeout": ha.retry_timeout,
            "maximum_lag_on_failover": ha.maximum_lag_on_failover,
        }

    def start(self, nodes: int, synchronous: bool = False) -> None:
        self.synchronous = synchronous
        work = Path(tempfile.mkdtemp(prefix="pgras-bench-", dir="/tmp"))
        work.chmod(0o755)  # postgres runs as OS user 'postgres' when we are root
        self._local = LocalCluster(Layout(work, self.base_port))
        try:
            self._local.up(nodes=nodes, access=False, wait=120, synchronous=synchronous)
        except (FatalError, DCSError) as exc:
            raise BenchmarkError(f"postgres-ras did not start: {exc}") from None
        if synchronous:
            self.wait_healthy(120)

    def stop(self) -> None:
        if self._local is None:
            return
        work = self._local.layout.work_dir
        self._local.down()
        self._local = None
        if self.keep:
            print(f"kept {work} (logs in {work / 'logs'})", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    def members(self) -> list[str]:
        return self.local.node_names()

    def leader(self) -> str | None:
        """The Consul leader key's holder, if its controller answers 200 on /primary."""
        try:
            row = self.local.leader()
        except DCSError:
            return None
        if row is None or not row.api_url:
            return None
        try:
            ok = requests.get(f"{row.api_url}/primary", timeout=2).status_code == 200
        except requests.RequestException:
            return None
        return row.name if ok else None

    def kill(self, name: str) -> None:
        self.local.kill(name, signal.SIGKILL)

    def restart(self, name: str) -> None:
        self.local.start_node(next(p for p in self.local.node_ports() if p.name == name))

    def switchover(self) -> str:
        old = self.leader()
        if old is None:
            raise BenchmarkError("postgres-ras: no leader to switch over from")
        try:
            self.local.switchover(None)
        except FatalError as exc:
            raise BenchmarkError(f"postgres-ras switchover failed: {exc}") from None
        wait("new postgres-ras leader", lambda: self.leader() not in (None, old), 30)
        new = self.leader()
        assert new is not None
        return new

    def wait_healthy(self, timeout: float) -> None:
        start = time.monotonic()
        try:
            self.local.wait_healthy(len(self.members()), timeout)
        except FatalError as exc:
            raise BenchmarkError(str(exc)) from None
        if self.synchronous:  # a failover is possible only once the sync key names a standby
            left = max(1.0, timeout - (time.monotonic() - start))
            wait("postgres-ras synchronous standby in the sync key", self._synced, left, 0.2)

    def _synced(self) -> bool:
        try:
            return any(r.sync_standby for r in self.local.members())
        except DCSError:
            return False

    def writer_dsn(self) -> str:
        hosts = [(self.local.layout.host, p.postgres) for p in self.local.node_ports()]
        return multi_host_dsn(hosts, *self.local.superuser)

    def data_dir(self, name: str) -> Path:
        return self.local.layout.node_dir(name) / "data"

    def node_dsn(self, name: str) -> str:
        user, password = self.local.superuser
        port = next(p.postgres for p in self.local.node_ports() if p.name == name)
        return (
            f"host={self.local.layout.host} port={port} user={user} password={password} "
            "dbname=postgres connect_timeout=1"
        )
