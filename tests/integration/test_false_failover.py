"""Issue 2.7: short Consul outages and Consul restarts do not move the primary."""

from __future__ import annotations

import signal
import time

from postgres_ras.local import consul_server
from tests.integration.conftest import Harness


def _timeline(cluster: Harness, name: str) -> int:
    return int(
        cluster.sql(
            name,
            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
        )[0][0]
    )


def test_consul_frozen_shorter_than_retry_timeout_keeps_the_primary(cluster: Harness) -> None:
    old = cluster.leader().name
    tl = _timeline(cluster, old)
    cluster.c.table.send_signal("consul", signal.SIGSTOP)
    time.sleep(2.0)  # retry_timeout is 3 s
    cluster.c.table.send_signal("consul", signal.SIGCONT)
    time.sleep(5.0)
    assert cluster.leader().name == old
    assert cluster.writable_nodes() == [old]
    assert _timeline(cluster, old) == tl
    assert cluster.c.is_healthy(3)


def test_consul_restart_keeps_the_primary(cluster: Harness) -> None:
    old = cluster.leader().name
    tl = _timeline(cluster, old)
    cluster.c.table.stop("consul", timeout=10)
    consul_server.start(cluster.c.layout, cluster.c.table)
    time.sleep(5.0)
    assert cluster.leader().name == old
    assert cluster.writable_nodes() == [old]
    assert _timeline(cluster, old) == tl
    cluster.wait_for("a healthy cluster", lambda: cluster.c.is_healthy(3), 20)
