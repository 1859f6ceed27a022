"""Issue 2.1: identical nodes; one runs initdb, the others clone and stream via their slots."""

from __future__ import annotations

from tests.integration.conftest import Harness


def test_one_initdb_others_clone_and_stream_through_own_slots(cluster: Harness) -> None:
    logs = cluster.c.layout.logs
    bootstrapped = [
        n
        for n in cluster.c.node_names()
        if "bootstrap finished" in (logs / f"{n}-agent.log").read_text()
    ]
    cloned = [
        n
        for n in cluster.c.node_names()
        if "clone finished" in (logs / f"{n}-agent.log").read_text()
    ]
    assert len(bootstrapped) == 1, bootstrapped
    leader = cluster.leader().name
    assert bootstrapped == [leader]
    assert sorted(cloned) == sorted(set(cluster.c.node_names()) - {leader})

    slots = cluster.sql(leader, "SELECT slot_name, active FROM pg_replication_slots ORDER BY 1")
    assert slots == [(name, True) for name in sorted(cloned)]
    senders = cluster.sql(
        leader, "SELECT application_name, state FROM pg_stat_replication ORDER BY 1"
    )
    assert senders == [(name, "streaming") for name in sorted(cloned)]
    assert cluster.writable_nodes() == [leader]
    sysids = {
        cluster.sql(n, "SELECT system_identifier FROM pg_control_system()")[0][0]
        for n in cluster.c.node_names()
    }
    assert len(sysids) == 1
