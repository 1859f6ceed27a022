"""Fixtures that run a real local cluster: real PostgreSQL, real Consul, agents, controllers.

Each test gets a fresh cluster in its own work directory under /tmp (0755,
so the unprivileged postgres user can reach it when the tests run as
root), on ports 26000-26350. The fixture stops every process it started, by
PID, and on failure prints the tail of every log.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from postgres_ras.local.cluster import LocalCluster, MemberRow
from postgres_ras.local.layout import Layout
from postgres_ras.local.workload import multi_host_dsn
from tests.helpers import dump_logs, poll, poll_value

BASE_PORT = int(os.environ.get("PGRAS_TEST_BASE_PORT", "26000"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


class Harness:
    """A LocalCluster plus the small SQL helpers the tests share."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.c = cluster

    @property
    def user(self) -> str:
        return self.c.superuser[0]

    @property
    def password(self) -> str:
        return self.c.superuser[1]

    def node_dsn(self, name: str) -> str:
        port = self.c.layout.node(int(name.removeprefix("node"))).postgres
        return (
            f"host=127.0.0.1 port={port} user={self.user} password={self.password} "
            "dbname=postgres connect_timeout=1"
        )

    def writer_dsn(self) -> str:
        hosts = [("127.0.0.1", p.postgres) for p in self.c.node_ports()]
        return multi_host_dsn(hosts, self.user, self.password)

    def sql(self, name: str, query: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.node_dsn(name), autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description is not None else []

    def is_writable(self, name: str) -> bool:
        try:
            with psycopg.connect(self.node_dsn(name), autocommit=True) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                return row is not None and row[0] is False
        except psycopg.Error:
            return False

    def leader(self) -> MemberRow:
        row = self.c.leader()
        assert row is not None, "no leader"
        return row

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        """Poll ``check`` until true (an exception counts as not yet: a node may be
        mid-restart); returns the seconds it took; fails after ``timeout``."""
        return poll(what, check, timeout)

    def wait_log(self, process: str, text: str, timeout: float = 5.0) -> str:
        """Wait until ``text`` is in ``process``'s log (e.g. ``node1-controller``); return the log.

        A controller logs a decision after carrying it out, so its line may land a moment
        after the effect a test saw."""
        path = self.c.table.log_file(process)
        self.wait_for(
            f"{text!r} in {path}", lambda: text in path.read_text(errors="replace"), timeout
        )
        return path.read_text(errors="replace")

    def log_mark(self, process: str) -> int:
        """Where ``process``'s log ends now (bytes; 0 if none yet), for ``log_since``."""
        path = self.c.table.log_file(process)
        return path.stat().st_size if path.exists() else 0

    def log_since(self, process: str, mark: int) -> str:
        """What ``process`` logged after ``mark`` (a ``log_mark``)."""
        with self.c.table.log_file(process).open("rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def wait_new_leader(self, old: str, timeout: float = 30.0) -> str:
        def new_leader() -> str | None:
            row = self.c.leader()
            if (
                row is not None
                and row.name != old
                and row.role == "primary"
                and row.state == "running"
            ):
                return row.name
            return None

        return poll_value(f"a leader other than {old}", new_leader, timeout)

    def wait_streaming_replica(self, name: str, timeout: float = 30.0) -> float:
        """Wait until ``name`` is listed as a replica streaming from the leader."""
        return self.wait_for(
            f"{name} to stream as a replica",
            lambda: any(
                r.name == name and r.role == "replica" and r.streaming for r in self.c.members()
            ),
            timeout,
        )

    def cut_stream(self, name: str) -> None:
        """Stop replica ``name`` streaming (postgresql.auto.conf overrides the agent's
        pgras.conf, so its walreceiver stops); ``restore_stream`` undoes it."""
        self.sql(name, "ALTER SYSTEM SET primary_conninfo TO ''")
        self.sql(name, "SELECT pg_reload_conf()")
        self.wait_for(
            f"{name} to stop streaming",
            lambda: self.sql(name, "SELECT count(*) FROM pg_stat_wal_receiver")[0][0] == 0,
            timeout=10,
        )

    def restore_stream(self, name: str) -> None:
        self.sql(name, "ALTER SYSTEM RESET primary_conninfo")
        self.sql(name, "SELECT pg_reload_conf()")

    def writable_nodes(self) -> list[str]:
        return [n for n in self.c.node_names() if self.is_writable(n)]


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest) -> Iterator[Callable[..., Harness]]:
    made: list[LocalCluster] = []

    def make(nodes: int = 3, access: bool = False, consul_servers: int = 1) -> Harness:
        work = Path(tempfile.mkdtemp(prefix="pgras-it-", dir="/tmp"))
        work.chmod(0o755)
        cluster = LocalCluster(Layout(work, BASE_PORT))
        made.append(cluster)
        cluster.up(nodes=nodes, access=access, wait=90, consul_servers=consul_servers)
        return Harness(cluster)

    yield make
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    for cluster in made:
        try:
            cluster.down()
        finally:
            if failed:
                dump_logs(cluster.layout.work_dir)
            shutil.rmtree(cluster.layout.work_dir, ignore_errors=True)


@pytest.fixture
def cluster(make_cluster: Callable[..., Harness]) -> Harness:
    return make_cluster(3)
