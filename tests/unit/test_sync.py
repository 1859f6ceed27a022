"""Synchronous mode: the order in which the leader changes postgres and the ``sync`` key.

The promise: a member named in ``sync`` holds every acknowledged commit. So a standby
is added to postgres first and named only once confirmed (a later cycle, caught up),
and removed from the key before postgres stops waiting for it. With no standby the
key names the primary alone (never nobody: then no member could ever lead again).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from postgres_ras.config import NodeConfig
from postgres_ras.controller.ha import HA
from postgres_ras.controller.state import Action, Decision, NodeView, Observation, Role, Settings
from postgres_ras.controller.sync import SyncKeeper, choose, render_names
from postgres_ras.dcs.base import Cluster, Leader, Member, parse_sync
from postgres_ras.lsn import format_lsn

LSN = 0x5000000
SYNC = Settings(synchronous_mode=True)
STRICT = Settings(synchronous_mode=True, synchronous_mode_strict=True)


def member(name: str, nofailover: bool = False) -> Member:
    return Member(
        name, "http://x", "127.0.0.1", 5432, "replica", "running", 1, LSN, nofailover, "s"
    )


@dataclass
class World:
    """Consul's ``sync`` key and the primary's postgres, with one event log for both."""

    sync: str | None = None
    sync_index: int = 0
    configured: str = ""
    active: str = ""
    lsn: int = LSN
    standbys: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)
    lose_cas: bool = False
    in_recovery: bool = False

    # --- DCS ---
    def cas(self, key: str, value: str, index: int) -> bool:
        if key != "sync":
            return True
        if self.lose_cas or index != self.sync_index:
            return False
        self.events.append(("key", value))
        self.sync, self.sync_index = value or None, self.sync_index + 1
        return True

    def delete(self, key: str) -> None:
        self.events.append(("delete", key))
        self.sync = None

    # --- agent ---
    def replication(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "active": self.active,
            "in_recovery": self.in_recovery,
            "lsn": format_lsn(self.lsn),
            "standbys": [
                {"name": n, "state": st, "sync_state": ss, "flush_lsn": format_lsn(f)}
                for n, (st, ss, f) in self.standbys.items()
            ],
        }

    def set_sync(self, names: str) -> None:
        self.events.append(("pg", names))
        self.configured = self.active = names
        for n, (st, _, f) in self.standbys.items():
            self.standbys[n] = (
                st,
                "sync" if st == "streaming" and f'"{n}"' in names else "async",
                f,
            )

    def promote(self, slots: list[str] | None = None) -> None:
        self.events.append(("promote", ""))

    def cluster(self, *names: str) -> Cluster:
        members = tuple(member(n) for n in ("n1", *names))
        return Cluster(
            leader=Leader("n1", "s1", 1),
            members=members,
            sync=self.sync,
            sync_index=self.sync_index,
        )


def obs(
    world: World, settings: Settings = SYNC, members: tuple[str, ...] = ("n2", "n3")
) -> Observation:
    node = NodeView(running=True, role=Role.PRIMARY, has_data=True, lsn=world.lsn)
    return Observation(
        me="n1", node=node, cluster=world.cluster(*members), session="s1", settings=settings
    )


def keeper(world: World) -> SyncKeeper:
    return SyncKeeper("n1", world, world)  # type: ignore[arg-type]


def cycles(world: World, n: int, settings: Settings = SYNC) -> list[str | None]:
    k = keeper(world)
    return [k.reconcile(obs(world, settings)) for _ in range(n)]


def test_add_sets_postgres_first_and_names_the_standby_only_once_caught_up() -> None:
    w = World(standbys={"n2": ("streaming", "async", LSN)})
    k = keeper(w)
    assert k.reconcile(obs(w)) == "sync key names the primary until a standby is confirmed"
    assert k.reconcile(obs(w)) == "synchronous_standby_names = 'FIRST 1 (\"n2\")'"
    assert w.sync == "n1"  # not n2 yet: postgres waits for it only from now on
    assert k.reconcile(obs(w)) is None  # seen sync: its catch-up point is recorded
    w.lsn = LSN + 100  # writes meanwhile; n2 has not flushed the recorded point...
    w.standbys["n2"] = ("streaming", "sync", LSN - 1)
    assert k.reconcile(obs(w)) is None
    w.standbys["n2"] = ("streaming", "sync", LSN)  # ...now it has
    assert "n2 confirmed" in (k.reconcile(obs(w)) or "")
    assert w.events == [("key", "n1"), ("pg", 'FIRST 1 ("n2")'), ("key", "n2")]


def test_replace_writes_the_key_first_then_postgres() -> None:
    w = World(sync="n2", sync_index=1, configured='FIRST 1 ("n2")', active='FIRST 1 ("n2")')
    w.standbys = {"n2": ("startup", "async", LSN), "n3": ("streaming", "async", LSN)}
    out = cycles(w, 4)
    assert w.events[:2] == [("key", "n1"), ("pg", 'FIRST 1 ("n3")')], out
    assert w.events[2:] == [("key", "n3")]
    assert "n2 removed from the sync key" in (out[0] or "")


def test_no_standby_left_names_the_primary_alone_then_goes_asynchronous() -> None:
    w = World(sync="n2", sync_index=1, configured='FIRST 1 ("n2")', active='FIRST 1 ("n2")')
    out = cycles(w, 3)
    assert w.events == [("key", "n1"), ("pg", "")]
    assert "dropping to asynchronous replication" in (out[0] or "")


def test_strict_with_no_standby_blocks_writes() -> None:
    w = World(sync="n2", sync_index=1, configured='FIRST 1 ("n2")', active='FIRST 1 ("n2")')
    out = cycles(w, 3, STRICT)
    assert w.events == [("key", "n1"), ("pg", "*")]
    assert "writes block" in (out[0] or "")


def test_strict_any_standby_that_connects_is_made_synchronous_and_named() -> None:
    w = World(configured="*", active="*", standbys={"n3": ("streaming", "sync", LSN)})
    cycles(w, 5, STRICT)
    assert w.events == [("key", "n1"), ("pg", 'FIRST 1 ("n3")'), ("key", "n3")]


def test_switching_off_removes_the_key_first_then_clears_postgres() -> None:
    w = World(sync="n2", sync_index=1, configured='FIRST 1 ("n2")', active='FIRST 1 ("n2")')
    w.standbys = {"n2": ("streaming", "sync", LSN)}
    cycles(w, 3, Settings())
    assert w.events == [("delete", "sync"), ("pg", "")]


def test_two_synchronous_standbys_are_both_required() -> None:
    w = World(standbys={"n2": ("streaming", "async", LSN), "n3": ("streaming", "async", LSN)})
    cycles(w, 4, replace(SYNC, synchronous_node_count=2))
    assert w.events == [("key", "n1"), ("pg", 'FIRST 2 ("n2", "n3")'), ("key", "n2,n3")]
    assert parse_sync(w.sync) == ("n2", "n3")


def test_lost_check_and_set_changes_nothing_in_postgres() -> None:
    w = World(sync="n2", sync_index=1, configured='FIRST 1 ("n2")', active='FIRST 1 ("n2")')
    w.lose_cas = True
    out = cycles(w, 3)
    assert w.events == [] and "changed meanwhile" in (out[0] or "")


def test_a_replica_does_nothing() -> None:
    w = World(in_recovery=True, standbys={"n2": ("streaming", "async", LSN)})
    assert cycles(w, 2) == [None, None] and w.events == []


@pytest.mark.parametrize(
    ("names", "strict", "expected"),
    [
        ((), False, ""),
        ((), True, "*"),
        (("pg-1",), False, 'FIRST 1 ("pg-1")'),
        (('we"ird', "b"), False, 'FIRST 2 ("we""ird", "b")'),
    ],
)
def test_render_names(names: tuple[str, ...], strict: bool, expected: str) -> None:
    assert render_names(names, strict) == expected


def test_choose_keeps_the_named_standby_and_skips_nofailover_and_lagging_states() -> None:
    from postgres_ras.controller.sync import Standby

    c = Cluster(
        members=(member("n1"), member("n2"), member("n3"), member("n4", nofailover=True)),
        sync="n2",
    )
    sbs = (
        Standby("n2", True, True, LSN - 10),
        Standby("n3", True, False, LSN),
        Standby("n4", True, False, LSN + 5),
        Standby("n5", True, False, LSN + 9),  # not a member
    )
    assert choose(SYNC, "n1", c, sbs) == ("n2",)
    assert choose(replace(SYNC, synchronous_node_count=3), "n1", c, sbs) == ("n2", "n3")
    assert choose(SYNC, "n1", c, (replace(sbs[0], streaming=False), sbs[1])) == ("n3",)


# --- promotion: the key names only the new primary before it accepts a write ----------


class Recorder(World):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **kw: {} if name in ("ensure_slots", "stop") else True

    session = "s9"
    stale_sessions: set[str] = set()


@pytest.mark.parametrize("strict", [False, True])
def test_promotion_names_only_me_in_the_sync_key_before_postgres_is_promoted(
    strict: bool,
) -> None:
    w = Recorder(sync="n1,n3", sync_index=4)
    config = NodeConfig.model_validate({"name": "n1", "data_dir": "/nonexistent"})
    ha = HA(config, dcs=w, agent=w, publisher=w)  # type: ignore[arg-type]
    node = NodeView(running=True, role=Role.REPLICA, has_data=True, lsn=LSN)
    o = Observation(
        me="n1",
        node=node,
        cluster=Cluster(members=(member("n1"), member("n3")), sync="n1,n3", sync_index=4),
        session="s9",
        settings=replace(SYNC, synchronous_mode_strict=strict),
    )
    ha.apply(Decision(Action.ACQUIRE_AND_PROMOTE, "race"), o)
    expected = [("pg", "*")] if strict else []
    assert w.events == [*expected, ("key", "n1"), ("promote", "")]


def test_promotion_waits_when_the_sync_key_changed_meanwhile() -> None:
    w = Recorder(sync="n1", sync_index=7)
    config = NodeConfig.model_validate({"name": "n1", "data_dir": "/nonexistent"})
    ha = HA(config, dcs=w, agent=w, publisher=w)  # type: ignore[arg-type]
    node = NodeView(running=True, role=Role.REPLICA, has_data=True, lsn=LSN)
    o = Observation(
        me="n1",
        node=node,
        cluster=Cluster(members=(member("n1"),), sync="n1", sync_index=6),  # stale read
        session="s9",
        settings=SYNC,
    )
    sentence = ha.apply(Decision(Action.PROMOTE, "promoting"), o)
    assert "sync key changed" in sentence and ("promote", "") not in w.events


def test_a_lock_holder_the_sync_key_does_not_name_never_promotes() -> None:
    w = Recorder(sync="n3", sync_index=7)
    config = NodeConfig.model_validate({"name": "n1", "data_dir": "/nonexistent"})
    ha = HA(config, dcs=w, agent=w, publisher=w)  # type: ignore[arg-type]
    node = NodeView(running=True, role=Role.REPLICA, has_data=True, lsn=LSN)
    o = Observation(
        me="n1",
        node=node,
        cluster=Cluster(members=(member("n1"), member("n3")), sync="n3", sync_index=7),
        session="s9",
        settings=SYNC,
    )
    sentence = ha.apply(Decision(Action.PROMOTE, "promoting"), o)
    assert "does not name me" in sentence and w.events == []


@pytest.mark.parametrize(("me", "races"), [("n1", True), ("n2", False)])
def test_after_the_primary_alone_dies_only_it_may_lead_again(me: str, races: bool) -> None:
    """The key names the old primary alone (no standby was confirmed): every acknowledged
    commit is on it only. Restarted read-only, it races; nobody else may."""
    from postgres_ras.controller.decide import decide

    node = NodeView(running=True, role=Role.REPLICA, has_data=True, timeline=2, lsn=LSN)
    o = Observation(
        me=me,
        node=node,
        cluster=Cluster(members=(member("n1"), member("n2")), sync="n1", sync_index=3),
        session=f"s-{me}",
        settings=SYNC,
    )
    d = decide(o)
    assert (d.action is Action.ACQUIRE_AND_PROMOTE) is races, d.reason
