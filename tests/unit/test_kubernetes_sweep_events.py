"""Pure parts of the Kubernetes side: which lost members' pods to delete, which events a cycle
is worth, which replica a shutting-down leader hands over to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from postgres_ras.controller.handover import Handover, choose_target
from postgres_ras.controller.publisher import cycle_events
from postgres_ras.controller.state import Action, Decision, NodeView, Observation, Role
from postgres_ras.controller.sweep import LeaderView, Sweeper
from postgres_ras.dcs.base import Cluster, Leader, Member, Switchover
from postgres_ras.errors import DCSError


@dataclass
class Meta:
    name: str
    deletionTimestamp: Any = None  # the Kubernetes field name


@dataclass
class Pod:
    metadata: Meta


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pods(*names: str, deleting: tuple[str, ...] = ()) -> list[Pod]:
    return [Pod(Meta(n, "2026-01-01T00:00:00Z" if n in deleting else None)) for n in names]


LEADING = LeaderView(leading=True, members=frozenset({"pg-0", "pg-1"}))


def test_a_pod_is_deleted_only_after_being_absent_long_enough() -> None:
    clock = Clock()
    s = Sweeper("pg-0", 30, clock)
    assert s.due(LEADING, pods("pg-0", "pg-1", "pg-2")) == []
    clock.now += 29.9
    assert s.due(LEADING, pods("pg-0", "pg-1", "pg-2")) == []
    clock.now += 0.1
    assert s.due(LEADING, pods("pg-0", "pg-1", "pg-2")) == ["pg-2"]
    s.deleted("pg-2")
    assert s.due(LEADING, pods("pg-0", "pg-1", "pg-2")) == []  # the replacement starts afresh


@pytest.mark.parametrize(
    "view",
    [
        None,
        LeaderView(leading=False, members=frozenset({"pg-0"})),
        LeaderView(leading=True, members=None),
    ],
)
def test_nothing_is_deleted_unless_we_lead_and_know_the_members(view: LeaderView | None) -> None:
    clock = Clock()
    s = Sweeper("pg-0", 1, clock)
    for _ in range(5):
        assert s.due(view, pods("pg-0", "pg-1", "pg-2")) == []
        clock.now += 10


def test_uncertainty_restarts_the_clock() -> None:
    clock = Clock()
    s = Sweeper("pg-0", 10, clock)
    s.due(LEADING, pods("pg-2"))
    clock.now += 8
    s.due(LeaderView(leading=True, members=None), pods("pg-2"))  # Consul blip
    clock.now += 8
    assert s.due(LEADING, pods("pg-2")) == []
    clock.now += 10
    assert s.due(LEADING, pods("pg-2")) == ["pg-2"]


def test_never_ourselves_never_a_terminating_pod_and_a_rejoined_member_is_forgiven() -> None:
    clock = Clock()
    s = Sweeper("pg-9", 1, clock)
    view = LeaderView(leading=True, members=frozenset())
    s.due(view, pods("pg-9", "pg-3", "pg-4", deleting=("pg-4",)))
    clock.now += 5
    assert s.due(view, pods("pg-9", "pg-3", "pg-4", deleting=("pg-4",))) == ["pg-3"]
    s2 = Sweeper("pg-9", 1, clock)
    s2.due(view, pods("pg-3"))
    clock.now += 0.5
    s2.due(LeaderView(True, frozenset({"pg-3"})), pods("pg-3"))  # came back
    clock.now += 0.9
    assert s2.due(view, pods("pg-3")) == []


def test_disabled_when_after_is_zero() -> None:
    clock = Clock()
    s = Sweeper("pg-0", 0, clock)
    s.due(LEADING, pods("pg-5"))
    clock.now += 1e6
    assert s.due(LEADING, pods("pg-5")) == []


# --- events ------------------------------------------------------------------------------
def obs(fenced: str | None = None) -> Observation:
    node = NodeView(running=not fenced, role=Role.REPLICA, has_data=True, fenced=fenced)
    return Observation(me="pg-0", node=node, cluster=None, session="s")


@pytest.mark.parametrize(
    ("action", "reason", "sentence", "expected"),
    [
        (
            Action.ACQUIRE_AND_PROMOTE,
            "no leader: racing",
            "won the leader race and promoted postgres",
            ["Promoted"],
        ),
        (Action.ACQUIRE_AND_PROMOTE, "no leader: racing", "lost the leader race", []),
        (Action.PROMOTE, "promoting: I hold the lock", "promoting: I hold the lock", ["Promoted"]),
        (Action.PROMOTE, "promoting", "promoting failed: agent unreachable", []),
        (
            Action.DEMOTE,
            "demoting: pg-1 holds the lock",
            "demoting: pg-1 holds the lock (postgres stopped)",
            ["Demoted"],
        ),
        (Action.DEMOTE, "demoting", "demoting failed: agent unreachable", []),
        (
            Action.SWITCHOVER,
            "switching over to pg-1",
            "handed the leader lock to pg-1 after ...",
            ["SwitchedOver"],
        ),
        (Action.SWITCHOVER, "switching over to pg-1", "switchover aborted: ...", []),
        (Action.REWIND, "rewinding: no stream", "rewinding: no stream", ["Rewinding"]),
        (Action.CLONE, "cloning from pg-1", "cloning from pg-1", ["Cloning"]),
        (Action.HOLD, "no action", "no action", []),
    ],
)
def test_cycle_events(action: Action, reason: str, sentence: str, expected: list[str]) -> None:
    events = cycle_events(Decision(action, reason), obs(), sentence)
    assert [e[0] for e in events] == expected


def test_a_fence_is_an_event_every_cycle_it_shows_the_publisher_deduplicates() -> None:
    events = cycle_events(Decision(Action.WAIT, "x"), obs("lease expired"), "x")
    assert events == [("Fenced", "the agent stopped postgres: lease expired", True)]


# --- handover target -----------------------------------------------------------------------
def member(
    name: str, role: str, lsn: int | None, state: str = "running", nofailover: bool = False
) -> Member:
    return Member(name, "http://x", "127.0.0.1", 5432, role, state, 1, lsn, nofailover, "s")


def test_handover_target_is_the_most_advanced_eligible_replica_that_stays() -> None:
    c = Cluster(
        leader=Leader("pg-0", "s0", 1),
        members=(
            member("pg-0", "primary", 900),
            member("pg-1", "replica", 500),
            member("pg-2", "replica", 800),
            member("pg-3", "replica", 999, nofailover=True),
            member("pg-4", "replica", 999, state="starting"),
        ),
    )
    assert choose_target(c, "pg-0") == "pg-2"
    assert choose_target(c, "pg-0", lambda names: [n for n in names if n != "pg-2"]) == "pg-1"
    assert choose_target(c, "pg-0", lambda names: []) is None


class FakeConsul:
    def __init__(self, leaders: list[str | None]) -> None:
        self.leaders = leaders
        self.written: list[tuple[str, str]] = []

    def get_cluster(self) -> Cluster:
        name = self.leaders.pop(0) if len(self.leaders) > 1 else self.leaders[0]
        if name == "down":
            raise DCSError("Consul unreachable")
        leader = Leader(name, "s", 1) if name else None
        return Cluster(
            leader=leader, members=(member("pg-0", "primary", 9), member("pg-1", "replica", 9))
        )

    def put(self, key: str, value: str) -> None:
        self.written.append((key, value))


def run(consul: FakeConsul, timeout: float = 1.0, released: list[int] | None = None) -> str:
    clock = Clock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    handover = Handover("pg-0", consul.get_cluster, consul.put, None, clock, sleep)
    on_released = (lambda: released.append(len(consul.leaders))) if released is not None else None
    return handover.run(timeout, on_released)


def test_handover_writes_one_request_and_waits_for_another_leader() -> None:
    consul = FakeConsul(["pg-0", "pg-0", None, "down", "pg-1"])
    released: list[int] = []
    assert run(consul, released=released).startswith("handed leadership to pg-1")
    assert released == [2]  # once, as soon as the lock was free (before the new leader)
    [(key, value)] = consul.written
    sw = Switchover.from_json(value)
    assert key == "switchover" and sw is not None and (sw.source, sw.target) == ("pg-0", "pg-1")


def test_handover_is_bounded_and_skipped_when_not_leading() -> None:
    assert "did not finish within 1s" in run(FakeConsul(["pg-0"]), timeout=1.0)
    consul = FakeConsul(["pg-1"])
    assert run(consul) == "no handover: not the leader" and consul.written == []
    assert run(FakeConsul(["down"])).startswith("no handover: Consul unreachable")
