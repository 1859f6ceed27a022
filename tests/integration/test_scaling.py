"""Issue 2.6: scale out (clone + stream) and in (hand over first, clean up slots and keys)."""

from __future__ import annotations

from tests.integration.conftest import Harness


def test_scale_out_to_five_and_in_to_two(cluster: Harness) -> None:
    cluster.c.scale(5, wait=120)
    rows = cluster.c.members()
    assert sorted(r.name for r in rows) == [f"node{i}" for i in range(1, 6)]
    leader = cluster.leader().name
    slots = {
        r[0] for r in cluster.sql(leader, "SELECT slot_name FROM pg_replication_slots WHERE active")
    }
    assert slots == {f"node{i}" for i in range(1, 6)} - {leader}

    # Make a node that will be removed the primary, so scale-in must hand over first.
    if leader not in ("node3", "node4", "node5"):
        cluster.c.switchover("node5")
    cluster.c.scale(2, wait=120)
    rows = cluster.c.members()
    assert sorted(r.name for r in rows) == ["node1", "node2"]
    leader = cluster.leader().name
    assert leader in ("node1", "node2")
    other = "node2" if leader == "node1" else "node1"
    cluster.wait_for(
        "slots of removed members to be dropped",
        lambda: (
            {r[0] for r in cluster.sql(leader, "SELECT slot_name FROM pg_replication_slots")}
            == {other}
        ),
        timeout=20,
    )
    assert not cluster.c.layout.node_dir("node5").exists()
    assert cluster.writable_nodes() == [leader]
