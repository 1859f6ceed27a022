"""Which replication slots the primary keeps (controller/slots.py, LeaderDuties).

WAL is retained by slots only (wal_keep_size 0): a member that went away keeps its
slot for member_slots_ttl, a member removed on purpose loses it at once, and the
new leader asks for the slots before it promotes.
"""

from __future__ import annotations

from typing import Any

from tests.unit.fakes import FakeAgent, FakeClock, FakeDCS

from postgres_ras.config import NodeConfig
from postgres_ras.controller.leader import LeaderDuties
from postgres_ras.controller.slots import REMOVED_MARKER_LIFETIME, MemberSlots
from postgres_ras.controller.state import NodeView, Observation, Role
from postgres_ras.dcs.base import Cluster, Leader, Member

TTL = 1800.0


def member(name: str) -> Member:
    return Member(
        name=name,
        api_url="http://127.0.0.1:1",
        conn_host="127.0.0.1",
        conn_port=5432,
        role="replica",
        state="running",
        timeline=1,
        lsn=0,
        nofailover=False,
        session=f"{name}-s1",
    )


def cluster(
    *names: str, leader: str | None = None, removed: dict[str, float] | None = None
) -> Cluster:
    return Cluster(
        members=tuple(member(n) for n in names),
        leader=Leader(leader, f"{leader}-s1", 7) if leader else None,
        removed=removed or {},
    )


def test_present_members_have_slots_but_me() -> None:
    slots = MemberSlots("node1", TTL, FakeClock())
    c = cluster("node1", "node2", "Node-3")
    slots.observe(c)
    assert slots.wanted(c) == ["node2", "node_3"]


def test_a_stray_key_with_an_impossible_name_gets_no_slot() -> None:
    slots = MemberSlots("node1", TTL, FakeClock())
    c = cluster("node1", "node2", "x" * 64)
    slots.observe(c)
    assert slots.wanted(c) == ["node2"]


def test_a_member_that_went_away_keeps_its_slot_until_the_ttl() -> None:
    clock = FakeClock()
    slots = MemberSlots("node2", TTL, clock)
    slots.observe(cluster("node1", "node2", "node3", leader="node1"))
    # node1 (the primary) crashed: its key and its lock are gone.
    clock.now += TTL - 1
    slots.observe(cluster("node2", "node3"))
    assert slots.wanted(cluster("node2", "node3")) == ["node1", "node3"]
    clock.now += 2
    slots.observe(cluster("node2", "node3"))
    assert slots.wanted(cluster("node2", "node3")) == ["node3"]


def test_the_lock_holder_counts_as_seen_without_a_member_key() -> None:
    slots = MemberSlots("node2", TTL, FakeClock())
    slots.observe(cluster("node2", leader="node1"))
    assert slots.wanted(cluster("node2")) == ["node1"]


def test_ttl_zero_keeps_only_present_members() -> None:
    clock = FakeClock(step=0.001)
    slots = MemberSlots("node1", 0, clock)
    slots.observe(cluster("node1", "node2", "node3"))
    assert slots.wanted(cluster("node1", "node2")) == ["node2"]


def test_a_removed_member_loses_its_slot_at_once() -> None:
    slots = MemberSlots("node1", TTL, FakeClock())
    slots.observe(cluster("node1", "node2", "node3"))
    gone = cluster("node1", "node2", removed={"node3": 1.0})
    assert slots.wanted(gone) == ["node2"]  # even before this controller observed it
    slots.observe(gone)
    assert slots.wanted(cluster("node1", "node2")) == ["node2"]  # marker deleted: forgotten


def test_a_member_added_again_under_a_removed_name_is_kept() -> None:
    slots = MemberSlots("node1", TTL, FakeClock())
    back = cluster("node1", "node3", removed={"node3": 1.0})
    slots.observe(back)
    assert slots.wanted(back) == ["node3"]


def test_markers_are_done_once_every_controller_could_see_them() -> None:
    slots = MemberSlots("node1", TTL, FakeClock())
    c = cluster("node1", removed={"old": 1000.0, "new": 1000.0 + REMOVED_MARKER_LIFETIME})
    assert slots.markers_done(c, 1001.0 + REMOVED_MARKER_LIFETIME) == ["old"]


def leading(dcs: FakeDCS) -> Observation:
    return Observation(
        me="node1",
        node=NodeView(running=True, role=Role.PRIMARY, has_data=True, timeline=1),
        cluster=dcs.get_cluster(),
        session=dcs.session,
    )


def duties_over(names: list[str]) -> tuple[LeaderDuties, FakeDCS, list[tuple[str, Any]]]:
    journal: list[tuple[str, Any]] = []
    dcs = FakeDCS(journal, "node1", leader="node1")
    dcs.keys["config"] = "{}"
    for n in names:
        dcs.members[n] = member(n)
    config = NodeConfig.model_validate({"name": "node1", "data_dir": "/nonexistent"})
    duties = LeaderDuties(config, dcs, FakeAgent.running(journal, "primary"), FakeClock())  # type: ignore[arg-type]
    return duties, dcs, journal


def slot_calls(journal: list[tuple[str, Any]]) -> list[Any]:
    return [arg for name, arg in journal if name == "agent.ensure_slots"]


def test_the_leader_keeps_the_slot_of_a_crashed_replica() -> None:
    duties, dcs, journal = duties_over(["node1", "node2", "node3"])
    o = leading(dcs)
    duties.member_slots.observe(o.cluster)  # type: ignore[arg-type]
    duties.housekeeping(o)
    del dcs.members["node3"]  # its session lapsed
    o = leading(dcs)
    duties.member_slots.observe(o.cluster)  # type: ignore[arg-type]
    duties.housekeeping(o)
    assert slot_calls(journal) == [["node2", "node3"]]  # asked once; nothing to drop


def test_the_leader_drops_a_removed_member_then_its_marker() -> None:
    duties, dcs, journal = duties_over(["node1", "node2", "node3"])
    duties.member_slots.observe(leading(dcs).cluster)  # type: ignore[arg-type]
    duties.housekeeping(leading(dcs))
    del dcs.members["node3"]
    dcs.keys["removed/node3"] = "1.0"  # long ago: every controller has seen it
    o = leading(dcs)
    duties.member_slots.observe(o.cluster)  # type: ignore[arg-type]
    duties.housekeeping(o)
    assert slot_calls(journal) == [["node2", "node3"], ["node2"]]
    assert "removed/node3" not in dcs.keys


def test_a_marker_stays_while_the_slot_could_not_be_dropped() -> None:
    duties, dcs, _ = duties_over(["node1", "node2"])
    dcs.keys["removed/node3"] = "1.0"
    duties.agent.fail.add("ensure_slots")  # type: ignore[attr-defined]
    duties.housekeeping(leading(dcs))
    assert "removed/node3" in dcs.keys
