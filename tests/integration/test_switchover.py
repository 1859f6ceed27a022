"""Issue 2.5 and 2.8: planned switchover loses no acknowledged write; old sessions are cut."""

from __future__ import annotations

import time

import psycopg
import pytest

from postgres_ras.local.workload import Writer, lost_writes
from tests.integration.conftest import Harness


def test_switchover_loses_no_acknowledged_write(cluster: Harness) -> None:
    old = cluster.leader().name
    target = sorted(set(cluster.c.node_names()) - {old})[0]
    with Writer(cluster.writer_dsn()) as writer:
        time.sleep(1.0)
        started = time.monotonic()
        before, after = cluster.c.switchover(target)
        time.sleep(1.5)
    assert (before, after) == (old, target)
    outage = writer.result.outage_after(started)
    missing = lost_writes(cluster.node_dsn(target), writer.result.acked)
    print(
        f"switchover {old} -> {target}: outage {outage:.2f}s, "
        f"{len(writer.result.acked)} acknowledged, {len(missing)} lost"
    )
    assert missing == []
    assert outage < 5
    cluster.wait_streaming_replica(old, timeout=20)
    assert cluster.writable_nodes() == [target]


def test_demotion_terminates_client_connections(cluster: Harness) -> None:
    old = cluster.leader().name
    conn = psycopg.connect(cluster.node_dsn(old), autocommit=True)
    conn.execute("CREATE TABLE pinned (x int)")
    cluster.c.switchover(None)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("INSERT INTO pinned VALUES (1)")
    conn.close()


def test_switchover_to_unknown_member_is_refused(cluster: Harness) -> None:
    from postgres_ras.errors import FatalError

    with pytest.raises(FatalError, match="not a member"):
        cluster.c.switchover("node9")
